"""A zoo store holding your own modules as they are (family ``traced``): a DeepSDF-style decoder with
its skip and output tanh, a SIREN-like module returning ``(output, coords)``; the stored field is
the module it came from, its graph has every parameter on one edge, the store keeps a copy of the
module file and refuses a changed or missing one by name, a failed import writes nothing, and the
same files give the same store."""
import json
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gmn_inr.cli import main
from gmn_inr.io import FormatError, load_inr
from gmn_inr.zoo import ZooError, open_store
from graphs import layout as L
from test_io_forms import CUBE, MODULE_FILE, _instance, _probe, module_file  # noqa: F401  (a fixture)

EXTRA = textwrap.dedent('''
    import torch
    from torch import nn


    class SkipSiren(nn.Module):
        """Sine layers, xyz re-fed before the last layer, and siren's (output, coords) return."""

        def __init__(self):
            super().__init__()
            self.first = nn.Linear(3, 16)
            self.last = nn.Linear(16 + 3, 1)

        def forward(self, coords):
            coords = coords.clone().detach().requires_grad_(True)
            h = torch.sin(30.0 * self.first(coords))
            return self.last(torch.cat([h, coords], -1)), coords


    class TwoHeads(nn.Module):
        """A radiance field returning a dict of two heads, the density one re-fed xyz."""

        def __init__(self):
            super().__init__()
            self.trunk = nn.Linear(3, 16)
            self.rgb = nn.Linear(16, 3)
            self.sigma = nn.Linear(16 + 3, 1)

        def forward(self, x):
            h = torch.relu(self.trunk(x))
            return {"rgb": self.rgb(h), "sigma": self.sigma(torch.cat([h, x], -1))}


    class DictSkip(nn.Module):
        """siren's SingleBVPNet calling convention: {"coords": x} in, {"model_in", "model_out"} out."""

        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 8)
            self.b = nn.Linear(8 + 3, 1)

        def forward(self, model_input):
            coords = model_input["coords"].clone().detach().requires_grad_(True)
            return {"model_in": coords, "model_out": self.b(torch.cat([torch.relu(self.a(coords)), coords], -1))}


    def skip_siren():
        return SkipSiren()


    def dict_skip():
        return DictSkip()


    def two_heads():
        return TwoHeads()
''')


def _files(store):
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in store.rglob("*") if p.is_file()
            and p.name != ".lock"}


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _import(src, store, *flags):
    return main(["zoo", "import", str(src), "--out", str(store), "--function", "sdf", *flags])


def _skip_folder(tmp_path, module_file):
    """src/<class>/<object>.skip.<ext>: three skip decoders (two classes), a checkpoint and a
    safetensors file; returns the reference modules by object."""
    torch.manual_seed(0)
    refs = {}
    for cls, obj, ext in (("chair", "a", "pth"), ("chair", "b", "safetensors"), ("lamp", "c", "pth")):
        d = tmp_path / "src" / cls
        d.mkdir(parents=True, exist_ok=True)
        ref = refs[f"{cls}_{obj}"] = _instance(module_file, "skip_decoder")
        if ext == "pth":
            torch.save({"epoch": 1, "model_state_dict": ref.state_dict()}, d / f"{obj}.skip.pth")
        else:
            save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, d / f"{obj}.skip.safetensors")
    return tmp_path / "src", refs


def test_a_store_holds_a_skip_decoder_as_itself(tmp_path, module_file):
    src, refs = _skip_folder(tmp_path, module_file)
    store = tmp_path / "store"
    assert _import(src, store, "--module", f"{module_file}:skip_decoder") == 0
    s = open_store(store)
    assert [(r.object_id, r.arch, r.family) for r in s] == [(o, "skipdecoder", "traced") for o in sorted(refs)]
    assert {p.name for p in (store / "modules").iterdir()} == {s[0].spec.file.split("/")[1]}   # one copy
    assert (store / s[0].spec.file).read_bytes() == module_file.read_bytes()
    for r in s:
        ref = refs[r.object_id]
        f = r.field()
        with torch.no_grad():
            assert torch.allclose(f(CUBE), ref(CUBE), atol=1e-5)
            g = r.graph()
            out = (g.x[:, L.N_TYPE] == L.NodeType.OUTPUT).nonzero().squeeze(1)
            assert torch.allclose(g.dense_probe()[out].t(), ref(_probe()), atol=1e-5)
        assert g.num_edges == _n_params(ref)                 # every parameter on one edge
    # a stored entry's file is read through its store (search query, embed); not away from it
    path = store / s[0].entry["path"]
    with torch.no_grad():
        assert torch.allclose(load_inr(path)(CUBE), refs[s[0].object_id](CUBE), atol=1e-5)
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "x.safetensors").write_bytes(path.read_bytes())
    with pytest.raises(ZooError, match="away from its store"):
        load_inr(tmp_path / "alone" / "x.safetensors")


def test_a_stored_entry_imports_into_another_store(tmp_path, module_file):
    src, refs = _skip_folder(tmp_path, module_file)
    store = tmp_path / "store"
    assert _import(src, store, "--module", f"{module_file}:skip_decoder") == 0
    first = open_store(store)[0]
    linked = tmp_path / "linked" / "chair"
    linked.mkdir(parents=True)
    (linked / "x.safetensors").symlink_to(store / first.entry["path"])     # read through its store
    assert _import(tmp_path / "linked", tmp_path / "other") == 0
    again = open_store(tmp_path / "other")[0]
    assert again.arch == "skipdecoder" and again.spec.file == first.spec.file
    assert (tmp_path / "other" / again.spec.file).read_bytes() == module_file.read_bytes()
    with torch.no_grad():
        assert torch.allclose(again.field()(CUBE), refs[first.object_id](CUBE), atol=1e-5)


def test_the_cube_map_and_a_returned_input_are_kept(tmp_path, module_file):
    torch.manual_seed(0)
    extra = tmp_path / "extra.py"
    extra.write_text(EXTRA)
    ref = _instance(module_file, "skip_decoder")
    sir = _instance(extra, "skip_siren")
    bvp = _instance(extra, "dict_skip")
    for cls, m in (("a", ref), ("b", sir), ("c", bvp)):
        (tmp_path / "src" / cls).mkdir(parents=True)
        torch.save(m.state_dict(), tmp_path / "src" / cls / "o.pth")
    lo, hi = torch.tensor([0.0, -2.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])
    store = tmp_path / "store"
    assert _import(tmp_path / "src", store, "--module", f"{module_file}:skip_decoder", "--module",
                   f"{extra}:skip_siren", "--module", f"{extra}:dict_skip",
                   "--bbox", *map(str, [*lo.tolist(), *hi.tolist()])) == 0
    s = {r.arch: r for r in open_store(store)}
    assert sorted(s) == ["dictskip", "skipdecoder", "skipsiren"] and len(list((store / "modules").iterdir())) == 2
    x = lo + (CUBE + 1) / 2 * (hi - lo)
    with torch.no_grad():
        assert torch.allclose(s["skipdecoder"].field()(CUBE), ref(x), atol=1e-5)
        got = s["skipsiren"].field()(CUBE)                    # the output alone, not the returned coords
        assert got.shape == (len(CUBE), 1) and torch.allclose(got, sir(x)[0], atol=1e-5)
        got = s["dictskip"].field()(CUBE)                     # called with {"coords": x}
        assert torch.allclose(got, bvp({"coords": x})["model_out"], atol=1e-5)
    assert s["skipsiren"].spec.outputs == (0,) and s["skipsiren"].spec.out_dim == 1
    assert s["dictskip"].spec.outputs == (1,) and s["dictskip"].spec.coords_dict
    for arch, m in (("skipsiren", sir), ("dictskip", bvp)):
        assert s[arch].graph().num_edges == _n_params(m)


def test_a_radiance_module_with_two_heads_is_one_field(tmp_path):
    torch.manual_seed(0)
    extra = tmp_path / "extra.py"
    extra.write_text(EXTRA)
    ref = _instance(extra, "two_heads")
    (tmp_path / "src" / "a").mkdir(parents=True)
    torch.save(ref.state_dict(), tmp_path / "src" / "a" / "o.pth")
    store = tmp_path / "store"
    assert main(["zoo", "import", str(tmp_path / "src"), "--out", str(store), "--module", f"{extra}:two_heads"]) == 0
    r = open_store(store)[0]
    assert (r.arch, r.family, r.function, r.spec.outputs, r.spec.out_dim) == ("twoheads", "traced", "radiance",
                                                                              (0, 1), 4)
    x = CUBE.reshape(30, 10, 3)                               # rays x samples, as renders and teachers pass them
    with torch.no_grad():
        want = ref(CUBE)
        assert torch.allclose(r.field()(x), torch.cat([want["rgb"], want["sigma"]], -1).reshape(30, 10, 4), atol=1e-5)
    assert r.graph().num_edges == _n_params(ref)
    assert main(["zoo", "show", str(store), "--out", str(tmp_path / "zoo.png"), "--size", "16"]) == 0  # no truth: imported
    assert (tmp_path / "zoo.png").stat().st_size > 0


def test_a_changed_or_missing_module_file_is_refused_by_name(tmp_path, module_file, capsys):
    src, _ = _skip_folder(tmp_path, module_file)
    for cls, obj in (("chair", "a"), ("chair", "b"), ("lamp", "c")):      # a second family: training pairs
        seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
        save_file({k: v.contiguous() for k, v in seq.state_dict().items()}, src / cls / f"{obj}.stack.safetensors")
    store = tmp_path / "store"
    assert _import(src, store, "--module", f"{module_file}:skip_decoder") == 0
    def traced():
        return next(r for r in open_store(store) if r.family == "traced")
    rec = traced()
    copy = store / rec.spec.file
    original = copy.read_bytes()
    # a change that would still import and run: the values must not silently be another field's
    copy.write_bytes(original.replace(b"torch.tanh(x)", b"torch.sigmoid(x)"))
    with pytest.raises(ZooError, match=f"module file {copy} of INR {rec.key} was changed"):
        traced().field()
    capsys.readouterr()
    assert main(["zoo", "info", str(store)]) == 1
    assert str(copy) in capsys.readouterr().err
    argv = ["train", str(store), "--preset", "tiny", "--steps", "1", "--out", str(tmp_path / "run"), "--no-progress",
            "--function", "sdf", "--archs", "skipdecoder,relu-mlp1x8", "--batch-pairs", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was changed" in err and str(copy) in err
    copy.unlink()
    with pytest.raises(ZooError, match=f"module file {copy} of INR .* is missing"):
        traced().field()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is missing" in err and str(copy) in err
    # zoo info --fix forgets the entries; importing again restores them, bit for bit
    assert main(["zoo", "info", str(store), "--fix"]) == 0
    assert {r.family for r in open_store(store)} == {"mlp"}
    assert _import(src, store, "--module", f"{module_file}:skip_decoder") == 0
    assert copy.read_bytes() == original and len(open_store(store)) == 6
    assert main(argv) == 0


def test_a_failed_import_leaves_the_store_as_it_was(tmp_path, module_file, capsys):
    src, _ = _skip_folder(tmp_path, module_file)
    store = tmp_path / "store"
    assert _import(src, store, "--module", f"{module_file}:skip_decoder") == 0
    before = _files(store)
    # a module file that reads a file beside it works where it is, not as a copy in a store
    (tmp_path / "width.txt").write_text("16")
    beside = tmp_path / "beside.py"
    beside.write_text(MODULE_FILE.replace("import torch\n", "import torch\nfrom pathlib import Path\n"
                                          "WIDTH = int((Path(__file__).parent / 'width.txt').read_text())\n", 1)
                      .replace("return SkipDecoder()", "return SkipDecoder(WIDTH)"))
    more = tmp_path / "more" / "sofa"
    more.mkdir(parents=True)
    torch.save(_instance(module_file, "skip_decoder").state_dict(), more / "d.skip.pth")
    capsys.readouterr()
    assert _import(more.parent, store, "--module", f"{beside}:skip_decoder") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not work as a copy in a store" in err and "d.skip.pth" in err
    assert _files(store) == before
    # a state dict that does not fit: named, nothing written
    sd = _instance(module_file, "skip_decoder").state_dict()
    sd["lin2.weight"] = torch.zeros(1, 15)
    torch.save(sd, more / "d.skip.pth")
    assert _import(more.parent, store, "--module", f"{module_file}:skip_decoder") == 2
    assert "key 'lin2.weight' is (1, 15) in the file, (1, 16) in the module" in capsys.readouterr().err
    assert _files(store) == before


def test_the_same_files_give_the_same_store(tmp_path, module_file, capsys):
    src, _ = _skip_folder(tmp_path, module_file)
    a, b = tmp_path / "a", tmp_path / "b"
    for store in (a, b):
        assert _import(src, store, "--module", f"{module_file}:skip_decoder") == 0
    fa, fb = _files(a), _files(b)
    manifest = [json.loads(f.pop("manifest.json")) for f in (fa, fb)]
    assert fa == fb and len(fa) == 4                          # three INR files and one module file
    for m in manifest:
        m.pop("created")                                      # the one field that is a time
    assert manifest[0] == manifest[1]
    capsys.readouterr()
    assert _import(src, a, "--module", f"{module_file}:skip_decoder") == 0    # again: nothing changes
    assert "imported 0 INRs (3 already there" in capsys.readouterr().out
    assert {k: v for k, v in _files(a).items() if k != "manifest.json"} == fa


def test_module_field_refuses_what_is_not_a_field():
    from gmn_inr.fields.user_module import ModuleField

    class Pair(nn.Module):
        def forward(self, x):
            return x.sum(0), x                                # no per-point output
    with pytest.raises(FormatError, match="no \\[N, k\\] output tensor per point"):
        ModuleField(Pair())


@pytest.mark.parametrize("fault", ["after_module_write:1", "after_inr_write:2", "after_journal:3",
                                   "after_manifest_flush:2"])
def test_an_import_killed_at_any_point_resumes_to_the_same_store(tmp_path, module_file, fault):
    import subprocess
    import sys

    from child import child_env

    src, _ = _skip_folder(tmp_path, module_file)
    argv = ["zoo", "import", str(src), "--function", "sdf", "--module", f"{module_file}:skip_decoder"]
    ref, store = tmp_path / "ref", tmp_path / "store"
    assert main(argv + ["--out", str(ref)]) == 0
    p = subprocess.run([sys.executable, "-m", "gmn_inr.cli", *argv, "--out", str(store)],
                       env=child_env(GMN_INR_FAULT=fault), capture_output=True, timeout=300)
    assert p.returncode == -9, p.stderr.decode()[-2000:]                 # killed where asked
    assert main(argv + ["--out", str(store)]) == 0                       # the same command again
    fr, fs = _files(ref), _files(store)
    manifest = [json.loads(f.pop("manifest.json")) for f in (fr, fs)]
    for m in manifest:
        m.pop("created")
    assert fs == fr and manifest[0] == manifest[1]
