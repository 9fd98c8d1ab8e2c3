"""Adversarial inputs, one test per kind: each is refused by a named error (or
handled exactly), and every CLI failure is one line on stderr, exit status 2, no traceback."""
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from gmn_inr.checkpoint import CheckpointError, read_checkpoint
from gmn_inr.cli import main
from gmn_inr.embedder import Embedder, EmbeddingError
from gmn_inr.encoder import GMNEncoder
from gmn_inr.fields import ArchSpec, HashGridField, HashGridSpec, SpecError, arch_spec, arch_spec_for, build_field
from gmn_inr.fields.hashgrid import hash_levels
from gmn_inr.train import TrainConfig, train
from gmn_inr.zoo import ZooError, open_store
from gmn_inr.zoo.build import build_zoo, preset_config
from graphs import tcnn_to_graph, to_graph
from tiny_records import tiny_pairs

FIT = {"steps": 15, "points": 128, "pool": 2048, "surface": 256, "gate_res": 12, "gate_view": 8,
       "gate_view_samples": 16, "min_iou": -1.0, "max_sdf_err": 1e9, "min_psnr": -1e9, "min_view_psnr": -1e9}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "z"
    build_zoo(out, config=preset_config("tiny", archs={"radiance": ("MLP", "HASH")}, fit=FIT, per_class=1),
              progress=False)
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(loss="R", steps=2, ckpt_every=1, preset="tiny", batch_pairs=2, rays_per_inr=8,
                      samples_per_ray=4, points_per_inr=32, log_every=1)
    train(cfg, tiny_pairs(2, ("MLP", "HASH"), "radiance"), out, progress=False)
    return out


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


def _one_line_error(rc, err, *names):
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("gmn-inr "), err
    for n in names:
        assert str(n) in err, (n, err)


def test_flipped_bit_in_a_checkpoint_is_a_named_error(ckpt, tmp_path, capsys):
    data = bytearray((ckpt / "checkpoint.safetensors").read_bytes())
    n = 0
    for pos in (len(data) - 7, len(data) // 2, 8 + 40):          # tensor bytes, middle, header
        bad = tmp_path / f"flip{n}.safetensors"
        d = bytearray(data)
        d[pos] ^= 0x04
        bad.write_bytes(bytes(d))
        with pytest.raises(CheckpointError, match=str(bad.name)):
            Embedder.from_checkpoint(bad)
        rc, err = _cli(capsys, "embed", "--checkpoint", str(bad), "--out", str(tmp_path / "e.safetensors"),
                       str(tmp_path))
        _one_line_error(rc, err, bad)
        n += 1


def test_non_finite_embedding_is_refused_naming_the_inr(zoo):
    enc = GMNEncoder.from_preset("tiny")
    with torch.no_grad():
        next(enc.parameters()).fill_(float("nan"))
    rec = open_store(zoo)[0]
    with pytest.raises(EmbeddingError, match=rec.key):
        Embedder(enc).embed([rec])


def test_huge_finite_weight_is_refused_naming_the_parameter():
    m = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        m[2].weight[0, 3] = 1e38
    with pytest.raises(ValueError, match=r"'2.weight'.*1e\+38"):
        to_graph(m)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes_convert(dtype):
    m = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).to(dtype)
    g = to_graph(m)
    ref = to_graph(m.float())
    assert torch.equal(g.edge_attr, ref.edge_attr) and torch.equal(g.probe, ref.probe)
    assert to_graph(build_field(arch_spec_for("TRI", 4, "tiny")).to(dtype)).num_edges > 0


ENC = {"otype": "HashGrid", "n_levels": 2, "n_features_per_level": 2, "log2_hashmap_size": 8, "base_resolution": 4,
       "per_level_scale": 2.0}
NET = {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None", "n_neurons": 16,
       "n_hidden_layers": 2}
N_PARAMS = 16 * 16 * 3 + hash_levels(HashGridSpec.from_tcnn(ENC)).n_entries * 2


@pytest.mark.parametrize("config, match", [
    (None, "JSON object"), ("not json", "not valid JSON"), ({"encoding": ENC, "network": None}, "network config"),
    ({"encoding": {**ENC, "n_levels": "abc"}, "network": NET}, "'n_levels' must be an integer"),
    ({"encoding": {**ENC, "per_level_scale": 1e30}, "network": NET}, "per_level_scale"),
    ({"encoding": {**ENC, "otype": "Grid", "type": "Dense"}, "network": NET}, "Dense Grid encodings are not supported"),
    ({"encoding": {**ENC, "otype": "Grid", "type": "Tiled"}, "network": NET}, "Tiled Grid"),
    ({"encoding": {**ENC, "interpolation": "Smoothstep"}, "network": NET}, "interpolation"),
    ({"encoding": ENC, "network": {**NET, "output_activation": "Sigmoid"}}, "output_activation"),
    ({"encoding": ENC, "network": {**NET, "n_neurons": 1.5}}, "n_neurons"),
    ({"encoding": {**ENC, "n_levels": 16, "log2_hashmap_size": 26, "n_features_per_level": 8}, "network": NET},
     "over the limit"),
    ({"encoding": {**ENC, "mystery": 1}, "network": NET}, "mystery"),
])
def test_bad_tcnn_configs_are_refused_by_name(config, match):
    with pytest.raises(SpecError, match=match):
        tcnn_to_graph(torch.zeros(10), config, 4)


def test_tcnn_params_length_checked_before_the_table_is_allocated(monkeypatch):
    import gmn_inr.fields.hashgrid as H

    monkeypatch.setattr(H.HashGridEncoding, "__init__", lambda *a, **k: pytest.fail("allocated"))
    big = {"encoding": {**ENC, "n_levels": 16, "log2_hashmap_size": 22}, "network": NET}
    with pytest.raises(SpecError, match="tcnn params have 10 values"):
        HashGridField.from_tcnn(torch.zeros(10), big)
    monkeypatch.undo()
    assert tcnn_to_graph(torch.randn(N_PARAMS) * 0.01, {"encoding": ENC, "network": NET}).num_edges > 0


@pytest.mark.parametrize("path, value", [
    (("mlp", "hidden_dim"), 10 ** 6), (("mlp", "hidden_layers"), 10 ** 4), (("grid", "log2_hashmap_size"), 60),
    (("grid", "n_levels"), "abc"), (("grid", "per_level_scale"), float("inf")), (("out_dim",), 10 ** 9),
])
def test_crafted_arch_spec_sizes_are_refused_before_allocation(path, value):
    d = json.loads(arch_spec("HASH").to_json())
    t = d
    for k in path[:-1]:
        t = t[k]
    t[path[-1]] = value
    with pytest.raises(SpecError):
        ArchSpec.from_dict(d)


def test_crafted_encoder_config_in_a_checkpoint_is_refused(ckpt, tmp_path):
    meta, tensors = read_checkpoint(ckpt)
    enc = json.loads(meta["encoder"])
    enc["hidden"] = 10 ** 7
    meta = {k: v for k, v in meta.items() if k != "sha256"}      # as if written without a checksum
    meta["encoder"] = json.dumps(enc)
    bad = tmp_path / "big.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(CheckpointError, match="hidden=10000000"):
        Embedder.from_checkpoint(bad)


@pytest.mark.parametrize("manifest", [
    {"format": "gmn_inr.zoo/1", "inrs": []},
    {"format": "gmn_inr.zoo/1", "inrs": {"a/radiance/MLP": {"path": 3}}},
    {"format": "gmn_inr.zoo/1", "inrs": {"a/radiance/MLP": "x"}},
    {"format": "gmn_inr.zoo/1", "objects": {"a": 1}},
    [1, 2, 3],
])
def test_wrong_manifest_structure_is_one_line(manifest, tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ZooError):
        open_store(tmp_path)
    for argv in (["zoo", "info", str(tmp_path)], ["embed", str(tmp_path), "--checkpoint", str(tmp_path),
                                                  "--out", str(tmp_path / "e.st")]):
        rc, err = _cli(capsys, *argv)
        _one_line_error(rc, err, tmp_path)


def test_corrupt_checkpoint_json_does_not_matter(ckpt, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ckpt, run)
    (run / "checkpoint.json").write_text("{corrupt")
    cfg = TrainConfig(loss="R", steps=3, ckpt_every=1, preset="tiny", batch_pairs=2, rays_per_inr=8,
                      samples_per_ray=4, points_per_inr=32, log_every=1)
    res = train(cfg, tiny_pairs(2, ("MLP", "HASH"), "radiance"), run, progress=False)
    assert [h["step"] for h in res.history] == [1, 2, 3]      # history read from the checkpoint itself


def test_cli_failures_are_one_line_naming_the_file(zoo, ckpt, tmp_path, capsys):
    missing = tmp_path / "nothing"
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["zoo", "info", str(missing)], missing),
        (["embed", str(missing), "--checkpoint", str(ckpt), "--out", str(tmp_path / "e.st")], missing),
        (["embed", str(zoo), "--checkpoint", str(missing), "--out", str(tmp_path / "e.st")], missing),
        (["embed", str(zoo), "--checkpoint", str(ckpt), "--out", str(afile / "e.st")], afile),
        (["train", str(missing), "--out", str(tmp_path / "r")], missing),
        (["train", str(zoo), "--out", str(afile / "r"), "--preset", "tiny"], afile),
        (["zoo", "build", "--out", str(afile / "z")], afile),
        (["zoo", "build", "--out", str(zoo), "--per-class", "2"], zoo),          # another config
        (["zoo", "show", str(missing), "--out", str(tmp_path / "x.png")], missing),
        (["search", "build", "--index", str(afile / "i"), "--embeddings", str(missing)], afile),
        (["search", "query", str(missing), "k"], missing),
    ]
    for argv, name in cases:
        rc, err = _cli(capsys, *argv)
        _one_line_error(rc, err, name)


def test_stray_copy_is_not_adopted(zoo, tmp_path):
    out = tmp_path / "z"
    shutil.copytree(zoo, out)
    store = open_store(out)
    rec = next(r for r in store if r.arch == "HASH")
    other = next(r for r in store if r.arch == "HASH" and r.object_id != rec.object_id)
    stray = rec.path.with_name("HASH.bak.safetensors")
    shutil.copy(other.path, stray)
    cfg = preset_config("tiny", archs={"radiance": ("MLP", "HASH")}, fit=FIT, per_class=1)
    s = build_zoo(out, config=cfg, progress=False)
    assert s["adopted_orphans"] == 0 and s["fitted_this_run"] == 0
    assert open_store(out).manifest["inrs"][rec.key]["path"].endswith("/HASH.safetensors")
    assert stray.exists()                                     # left alone, not deleted either


def test_inr_files_and_checkpoints_have_deterministic_bytes(zoo, ckpt, tmp_path):
    import subprocess
    import sys

    from child import child_env

    code = ("import sys, hashlib, torch\n"
            "from gmn_inr.zoo.store import write_inr_file\n"
            "print(write_inr_file(sys.argv[1], {'b': torch.arange(6.), 'a': torch.ones(2, dtype=torch.long)},\n"
            "     {k: str(i) for i, k in enumerate('qwertyuiopasdfghjkl')})[0])\n")
    shas = {subprocess.run([sys.executable, "-c", code, str(tmp_path / f"f{i}.st")], capture_output=True,
                           text=True, check=True, env=child_env()).stdout for i in range(3)}
    assert len(shas) == 1
