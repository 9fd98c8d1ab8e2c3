"""Zoo build, store, resume, corruption, splits, datasets and the batched fitting's exactness."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gmn_inr.fields import arch_spec_for, load_field
from gmn_inr.zoo import ZooCorruptError, ZooError, open_store
from gmn_inr.zoo.build import BuildInterrupted, build_zoo, preset_config
from gmn_inr.zoo.dataset import INRDataset, PairDataset, collate_graphs, graph_loader
from gmn_inr.zoo.fit import FitConfig, _Batch, fit_batch, octree_occupancy, prepare_samples
from gmn_inr.zoo.shapes import make_shape
from gmn_inr.zoo.writer import ZooWriter
from child import child_env

ARCHS = {"radiance": ("MLP", "TRI", "HASH", "OCT"), "sdf": ("OCT",)}
# a gate nothing fails, so the test zoo's contents are known; the gate itself is tested below
LENIENT = {"steps": 15, "points": 128, "pool": 2048, "surface": 256, "gate_res": 12, "gate_view": 8,
           "gate_view_samples": 16, "min_iou": -1.0, "max_sdf_err": 1e9, "min_psnr": -1e9, "min_view_psnr": -1e9}


def _cfg(**fit):
    return preset_config("tiny", archs=ARCHS, fit={**LENIENT, **fit})


N_OBJECTS = 9           # tiny: 3 classes x 3
N_INRS = N_OBJECTS * 5


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    summary = build_zoo(out, config=_cfg(), progress=False)
    return out, summary


def test_build_writes_everything(zoo):
    out, summary = zoo
    assert summary["objects"] == N_OBJECTS and summary["inrs_total"] == N_INRS and summary["dropped_total"] == 0
    store = open_store(out)
    assert len(store) == N_INRS
    counts = store.counts()
    assert counts["family"] == {"hashgrid": 9, "mlp": 9, "octree": 18, "triplane": 9}
    assert counts["function"] == {"radiance": 36, "sdf": 9}
    for fam, v in summary["per_family"].items():
        assert v["inrs_per_s"] > 0 and 0 <= v["pass_rate"] <= 1


def test_records_read_back_bit_identical_and_rebuild(zoo, tmp_path):
    out, _ = zoo
    store = open_store(out)
    for rec in store:
        sd = rec.state_dict()
        field = rec.field()
        assert field.spec == rec.spec and rec.spec.name == rec.arch
        for k, v in field.state_dict().items():
            assert torch.equal(v, sd[k]), (rec.key, k)
        assert rec.object_id in store.objects and store.objects[rec.object_id]["split"] == rec.split
        assert rec.label == store.classes.index(rec.class_name)
    # a write -> read of arbitrary tensors is bit-exact (incl. octree integer buffers)
    w = ZooWriter(tmp_path / "z")
    w.set_objects(["c"], {"o": {"class_name": "c", "label": 0, "split": "train"}})
    rec = store.records(families=("octree",))[0]
    sd = {k: v + torch.randn_like(v) * 1e-3 if v.is_floating_point() else v for k, v in rec.state_dict().items()}
    w.add(rec.spec, rec.function, "o", sd, {"passed": True})
    w.flush()
    back = open_store(tmp_path / "z")[0].state_dict()
    assert sd.keys() == back.keys() and all(torch.equal(sd[k], back[k]) for k in sd)


def test_batched_fit_equals_the_stored_module():
    """The vmapped stacked parameters compute exactly what load_field(state_dict) computes,
    for every family, octrees (padded, per-object sparsity) included."""
    cfg = FitConfig(**LENIENT)
    shapes = [make_shape("chair", 0), make_shape("mug", 1), make_shape("table", 2)]
    x = torch.rand(3, 200, 3) * 2 - 1
    for arch in ("MLP", "TRI", "HASH", "OCT", "OCT-2LOD", "HASH-11T"):
        spec = arch_spec_for(arch, 4, "tiny")
        occ = [octree_occupancy(s, spec) for s in shapes] if spec.family == "octree" else None
        b = _Batch(spec, occ, 3, seed=0)
        with torch.no_grad():
            for p in b.params.values():
                p.add_(torch.randn_like(p) * 0.01)       # not just the init
            raw = b.forward(x)
        for i, sd in enumerate(b.state_dicts()):
            f = load_field(spec, sd)
            with torch.no_grad():
                assert torch.allclose(f(x[i]), raw[i], atol=1e-5), arch
        if spec.family == "octree":
            last = f"vertices_{spec.grid.n_lods - 1}"          # the finest LOD's sparsity differs
            assert len({sd[last].shape[0] for sd in b.state_dicts()}) > 1


def test_fitting_reduces_error_and_gate_counts_failures():
    cfg = FitConfig(**{**LENIENT, "steps": 60, "points": 256})
    s = [prepare_samples(make_shape("mug", 0), cfg, 0)]
    spec = arch_spec_for("OCT", 1, "tiny")
    short = fit_batch(spec, "sdf", s, cfg, steps=1)[0].metrics
    long = fit_batch(spec, "sdf", s, cfg)[0].metrics
    assert long["sdf_err"] < short["sdf_err"] / 4 and long["iou"] > short["iou"] + 0.2
    strict = FitConfig(**{**LENIENT, "max_sdf_err": 0.0})
    assert not fit_batch(spec, "sdf", s, strict, steps=5)[0].passed


def test_resume_after_interruption(tmp_path):
    out = tmp_path / "zoo"
    with pytest.raises(BuildInterrupted):
        build_zoo(out, config=_cfg(), progress=False, stop_after=8)
    store = open_store(out)
    first = {r.key: (r.path.stat().st_mtime_ns, r.entry["sha256"]) for r in store}
    files = {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in (out / "inrs").rglob("*.safetensors")}
    assert len(files) == 8 and len(first) < 8         # the last files were written but not yet listed
    assert len((out / "journal.jsonl").read_text().splitlines()) == 8     # ... but journalled
    s = build_zoo(out, config=_cfg(), progress=False)
    assert s["adopted_orphans"] == 0 and s["refitted"] == []
    assert s["fitted_this_run"] == N_INRS - 8          # nothing finished is fitted again
    store = open_store(out)
    assert len(store) == N_INRS and store.verify() == []
    for r in store:                                    # files from before the crash are untouched
        rel = r.path.relative_to(out).as_posix()
        if rel in files:
            assert r.path.stat().st_mtime_ns == files[rel]
    # a finished build run again does nothing
    assert build_zoo(out, config=_cfg(), progress=False)["fitted_this_run"] == 0


def test_killed_subprocess_resumes(tmp_path):
    """A build process killed with SIGKILL mid-run leaves a zoo that the next build completes."""
    out = tmp_path / "zoo"
    code = ("import sys, os, signal\n"
            "from gmn_inr.zoo import build as B\n"
            "from gmn_inr.zoo.writer import ZooWriter\n"
            "orig = ZooWriter.add\n"
            "n = [0]\n"
            "def add(self, *a, **k):\n"
            "    r = orig(self, *a, **k); n[0] += 1\n"
            "    if n[0] == 5: os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return r\n"
            "ZooWriter.add = add\n"
            "B.build_zoo(%r, config=B.preset_config('tiny', archs=%r, fit=%r), progress=False)\n"
            % (str(out), ARCHS, LENIENT))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300,
                       env=child_env())
    assert p.returncode == -9, p.stderr.decode()[-2000:]
    s = build_zoo(out, config=_cfg(), progress=False)
    assert s["fitted_this_run"] <= N_INRS - 5
    assert len(open_store(out)) == N_INRS


def test_corrupt_file_is_detected_and_named(zoo, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(zoo[0], out)
    store = open_store(out)
    victim = store[3]
    data = bytearray(victim.path.read_bytes())
    data[-5] ^= 0xFF                                    # flip bits inside the tensor data
    victim.path.write_bytes(bytes(data))
    assert store.verify() == [victim.path]
    with pytest.raises(ZooCorruptError) as e:
        victim.field()
    assert str(victim.path) in str(e.value) and e.value.path == victim.path
    # the CLI names it too, with exit status 1
    r = subprocess.run([sys.executable, "-m", "gmn_inr.cli", "zoo", "info", str(out)], capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert r.returncode == 1 and str(victim.path) in r.stderr


def test_foreign_and_missing_are_clear_errors(tmp_path):
    with pytest.raises(ZooError, match="does not exist"):
        open_store(tmp_path / "nothing")
    with pytest.raises(ZooError, match="no manifest.json"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ZooError, match="not valid JSON"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ZooError, match="not a gmn_inr zoo manifest"):
        open_store(tmp_path)
    # a non-empty directory without a manifest is not built over
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "precious.txt").write_text("x")
    with pytest.raises(ZooError, match="refusing"):
        ZooWriter(tmp_path)
    # a file that is not ours
    from gmn_inr.zoo.store import read_inr_file

    from safetensors.torch import save_file
    save_file({"a": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ZooError, match="not a gmn_inr zoo INR"):
        read_inr_file(tmp_path / "foreign.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(ZooError, match="not a readable safetensors"):
        read_inr_file(tmp_path / "junk.safetensors")


def test_splits_never_share_objects(zoo):
    store = open_store(zoo[0])
    split_of = {}
    for r in store:
        assert split_of.setdefault(r.object_id, r.split) == r.split
    assert set(split_of.values()) == {"train", "val", "test"}
    per = {s: {o for o, sp in split_of.items() if sp == s} for s in ("train", "val", "test")}
    assert not (per["train"] & per["val"]) and not (per["train"] & per["test"]) and not (per["val"] & per["test"])


def test_pair_dataset_one_object_two_families(zoo):
    pairs = PairDataset(zoo[0], split=None, function="radiance")
    assert len(pairs) == N_OBJECTS * 6                  # 4 families -> 6 cross-family pairs each
    for a, b in pairs:
        assert a.object_id == b.object_id and a.function == b.function == "radiance"
        assert a.family != b.family and a.split == b.split
    import random

    a, b = pairs.sample_pair(0, random.Random(0))
    assert a.object_id == b.object_id and a.family != b.family
    ba, bb = next(iter(graph_loader(pairs, batch_size=4)))
    assert ba.num_graphs == bb.num_graphs == 4


def test_inr_dataset_graphs_are_cached(zoo):
    ds = INRDataset(zoo[0], split="train", functions=("sdf",), graphs=True)
    assert len(ds) > 0
    g1, g2 = ds[0], ds[0]
    assert g1 is g2
    batch = collate_graphs([ds[i] for i in range(len(ds))])
    assert batch.num_graphs == len(ds)


def test_cli_info_counts(zoo):
    r = subprocess.run([sys.executable, "-m", "gmn_inr.cli", "zoo", "info", str(zoo[0]), "--json"],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["corrupt"] == [] and sum(info["counts"]["arch"].values()) == N_INRS
