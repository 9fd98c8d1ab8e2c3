"""Loaders, ``gmn-inr zoo import`` -> ``train`` -> ``embed`` -> ``search``, exact vs FAISS search."""
import json
import math

import pytest
import torch

from gmn_inr.cli import main
from gmn_inr.fields import ArchSpec, arch_spec_for, build_field
from gmn_inr.io.formats import FormatError, load_inr, load_nf2vec, save_field
from gmn_inr.search import SearchIndex, build_index, exact_search, faiss_available


def nf2vec_file(path, seed=0, n_freqs=24, hidden=3, width=64):
    """An nf2vec ``nerf_weights.pth`` written here in tcnn's layout: layers back to back, row-major
    [out, in], the input padded to a multiple of 16 (144 already is) and the 4 outputs padded to 16."""
    g = torch.Generator().manual_seed(seed)
    n_in = 3 * 2 * n_freqs
    pad_in = (n_in + 15) // 16 * 16
    mats = [torch.randn(width, pad_in, generator=g) / math.sqrt(n_in)]
    mats += [torch.randn(width, width, generator=g) / math.sqrt(width) for _ in range(hidden - 1)]
    mats += [torch.randn(16, width, generator=g) / math.sqrt(width)]
    mats[0][:, n_in:] = 0          # tcnn feeds 1 on the padding inputs: loadable only when their weights are 0
    torch.save({"mlp_base.params": torch.cat([m.reshape(-1) for m in mats]).half()}, path)
    return [m.half().float() for m in mats]


def tcnn_nerf(mats, xyz, n_freqs=24):
    """The formula, written out: u = (xyz + 1) / 2 in [0, 1]; per axis, per k: sin(2^k pi u), cos(2^k pi u);
    padding of ones (tcnn's) to the first matrix's width; ReLU between layers; the first 4 outputs."""
    u = (xyz + 1) / 2
    k = 2.0 ** torch.arange(n_freqs) * math.pi
    arg = u.unsqueeze(-1) * k                                             # [N, 3, F]
    enc = torch.stack([torch.sin(arg), torch.cos(arg)], -1).reshape(xyz.shape[0], -1)
    h = torch.cat([enc, torch.ones(xyz.shape[0], mats[0].shape[1] - enc.shape[1])], 1)   # tcnn pads with 1
    for m in mats[:-1]:
        h = torch.relu(h @ m.t())
    return (h @ mats[-1].t())[:, :4]


def test_nf2vec_loader_matches_the_formula(tmp_path):
    path = tmp_path / "nerf_weights.pth"
    nf2vec_file(path)
    field = load_inr(path)                                # recognised from its keys: nf2vec's 24 x 3 x 64
    assert field.spec.encoding.input_range == "unit" and field.spec.mlp.bias is False
    from graphs import to_graph
    g = to_graph(field)
    assert g.num_edges == 144 * 64 + 64 * 64 * 2 + 64 * 4            # padding dropped
    # values: 8 frequencies (input 48, padded to 48; at 2^23 pi float32 sines are rounding noise in
    # any implementation, so the formula is compared where float32 can evaluate it)
    mats = nf2vec_file(tmp_path / "f8.pth", seed=1, n_freqs=8)
    field = load_nf2vec(tmp_path / "f8.pth", n_freqs=8)
    xyz = torch.rand(200, 3) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(field(xyz), tcnn_nerf(mats, xyz, n_freqs=8), atol=1e-4, rtol=1e-4)
    mats = nf2vec_file(tmp_path / "f2.pth", seed=2, n_freqs=2, hidden=2, width=16)     # input 12 padded to 16
    field = load_nf2vec(tmp_path / "f2.pth", n_freqs=2, hidden_layers=2, hidden_dim=16)
    with torch.no_grad():
        assert torch.allclose(field(xyz), tcnn_nerf(mats, xyz, n_freqs=2), atol=1e-5, rtol=1e-4)
    # the convention round-trips through the spec JSON; specs without it serialise as before
    assert ArchSpec.from_json(field.spec.to_json()) == field.spec
    assert "input_range" not in arch_spec_for("MLP", 4, "tiny").to_json()
    # foreign files are refused by name
    torch.save({"net.0.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(FormatError, match=r"other\.pth.*net\.0\.weight"):
        load_inr(tmp_path / "other.pth")
    with pytest.raises(FormatError, match=r"other\.pth is not an nf2vec NeRF"):
        load_nf2vec(tmp_path / "other.pth")
    # weights on tcnn's constant-1 padding inputs would be a bias the bias-free MLP lacks: refused
    params = torch.load(tmp_path / "f2.pth", weights_only=True)["mlp_base.params"].clone()
    params[12] = 0.5                                    # row 0, padding column 12
    torch.save({"mlp_base.params": params}, tmp_path / "padbias.pth")
    with pytest.raises(FormatError, match=r"padbias\.pth.*padding inputs"):
        load_nf2vec(tmp_path / "padbias.pth", n_freqs=2, hidden_layers=2, hidden_dim=16)
    torch.save({"mlp_base.params": torch.zeros(100)}, tmp_path / "short.pth")
    with pytest.raises(FormatError, match=r"short\.pth.*100 values"):
        load_nf2vec(tmp_path / "short.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(FormatError, match=r"junk\.pth"):
        load_inr(tmp_path / "junk.pth")


def _folder(root):
    """2 classes x 2 objects, each as a tiny MLP and a tiny HASH field (plus one nf2vec NeRF)."""
    torch.manual_seed(0)
    for cls in ("chair", "lamp"):
        for obj in ("a", "b"):
            for arch in ("MLP", "HASH"):
                save_field(build_field(arch_spec_for(arch, 4, "tiny")), root / cls / f"{obj}.{arch.lower()}.safetensors")
    nf2vec_file(root / "lamp" / "c.nerf_weights.pth", n_freqs=2, hidden=1, width=16)


def test_import_train_embed_search_end_to_end(tmp_path, capsys):
    src, store, run, idx = tmp_path / "inrs", tmp_path / "store", tmp_path / "run", tmp_path / "index"
    _folder(src)
    # the nf2vec file is not the loader's default size: refused by name, then skipped on request
    assert main(["zoo", "import", str(src), "--out", str(store)]) == 2
    assert "c.nerf_weights.pth" in capsys.readouterr().err
    assert main(["zoo", "import", str(src), "--out", str(store), "--skip-unreadable"]) == 0
    out = capsys.readouterr().out
    # the refused run wrote nothing (every file is read first): all 8 are imported now
    import re
    m = re.search(r"imported (\d+) INRs \((\d+) already there", out)
    assert m and int(m[1]) + int(m[2]) == 8 and "4 objects in 2 classes" in out
    assert main(["zoo", "import", str(src), "--out", str(store), "--skip-unreadable"]) == 0   # idempotent
    assert "imported 0 INRs (8 already there" in capsys.readouterr().out
    from gmn_inr.zoo import open_store
    s = open_store(store)
    assert s.classes == ["chair", "lamp"] and {r.object_id for r in s} == {"chair_a", "chair_b", "lamp_a", "lamp_b"}
    assert main(["train", str(store), "--preset", "tiny", "--steps", "2", "--out", str(run), "--no-progress",
                 "--archs", "MLP,HASH"]) == 0
    assert main(["embed", str(store), "--checkpoint", str(run), "--out", str(tmp_path / "z.safetensors")]) == 0
    assert main(["search", "build", "--embeddings", str(tmp_path / "z.safetensors"), "--index", str(idx),
                 "--kind", "exact"]) == 0
    capsys.readouterr()
    assert main(["search", "query", str(idx), "chair_a/radiance/MLP", str(src / "lamp" / "b.hash.safetensors"),
                 "-k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [h["key"] for h in res[0]["hits"]].count("chair_a/radiance/MLP") == 0        # itself excluded
    assert len(res[0]["hits"]) == 3 and res[1]["hits"][0]["key"] == "lamp_b/radiance/HASH"   # the file finds itself
    assert res[1]["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    # built straight from the store with the checkpoint (sharded, resumable): the same embeddings
    assert main(["search", "build", str(store), "--checkpoint", str(run), "--index", str(tmp_path / "i2"),
                 "--shard-size", "3", "--no-progress", "--kind", "exact"]) == 0
    a, b = SearchIndex(idx), SearchIndex(tmp_path / "i2")
    assert a.keys == b.keys and torch.allclose(a.z, b.z, atol=1e-5)
    assert len(list((tmp_path / "i2" / "shards").glob("shard_*.safetensors"))) == 3
    # bad input: one line, exit 2
    capsys.readouterr()
    assert main(["search", "query", str(idx), "no/such/key"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no/such/key" in err
    assert main(["search", "query", str(tmp_path), "x"]) == 2
    assert "not a search index" in capsys.readouterr().err


def test_exact_search_matches_brute_force_in_chunks():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(1000, 16), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(7, 16), dim=-1)
    s, i = exact_search(q, z, 5, chunk=128)
    s2, i2 = (q @ z.t()).topk(5, dim=1)
    assert torch.equal(i, i2) and torch.allclose(s, s2)


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed (pip install -e '.[search]')")
def test_exact_and_faiss_agree_on_a_small_store(tmp_path):
    torch.manual_seed(0)
    z = torch.randn(500, 32)
    keys = [f"obj{i}/radiance/MLP" for i in range(500)]
    q = torch.randn(20, 32)
    ex = SearchIndex(build_index(z, keys, tmp_path / "exact", kind="exact"))
    for kind in ("faiss-flat", "faiss-hnsw"):
        fi = SearchIndex(build_index(z, keys, tmp_path / kind, kind=kind))
        assert fi.faiss is not None and fi.kind == kind
        s1, i1 = ex.search(q, 10)
        s2, i2 = fi.search(q, 10, ef_search=256)
        assert torch.equal(i1, i2)                   # 500 rows: HNSW with a wide beam finds the exact top 10
        assert torch.allclose(s1, s2, atol=1e-5)
