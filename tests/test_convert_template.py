"""The cached-template conversion is the builder's graph bit for bit; the reference-converter
side-by-side timing of benchmarks/convert_speed.py loads a checkout without touching sys.path."""
import dataclasses
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gmn_inr.fields import ARCHITECTURES, arch_spec_for, build_field
from gmn_inr.fields.spec import RAW_XYZ
from graphs import to_graph
from graphs.hashgrid import add_hash_grid
from graphs.mlp import field_to_graph
from graphs.template import cached_template, clear_cache
from graphs.triplane import add_triplane

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("x", "edge_index", "edge_attr", "probe", "probe_index")


def _variants(preset: str):
    """Every built-in dense architecture, plus the tri-plane conventions and a biased sine MLP."""
    out = [(n, arch_spec_for(n, 4, preset)) for n in ARCHITECTURES if arch_spec_for(n).family != "octree"]
    t, m = arch_spec_for("TRI", 1, preset), arch_spec_for("MLP", 1, preset)
    out += [("TRI-xyz", t.replace(encoding=RAW_XYZ, name="TRI-xyz")),
            ("TRI-encoding-first", t.replace(grid=dataclasses.replace(t.grid, encoding_first=True))),
            ("TRI-concat", t.replace(grid=dataclasses.replace(t.grid, aggregate="concat", align_corners=True))),
            ("MLP-bias-sine", m.replace(mlp=dataclasses.replace(m.mlp, bias=True, activation="sine")))]
    return out


def _builder(field):
    add = {"mlp": None, "triplane": lambda b, f: add_triplane(b, f.planes, f.align_corners, f.concat),
           "hashgrid": lambda b, f: add_hash_grid(b, f.grid)}[field.spec.family]
    return field_to_graph(field, add, template=False).validate()


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_template_path_equals_builder_path_for_every_dense_family(preset):
    """to_graph through the cached template (the transposed probe forward, cached lookups) gives
    the builder's graph bit for bit: for the INR that built the template and for others."""
    clear_cache()
    names = []
    for name, spec in _variants(preset):
        for seed in (0, 1):
            torch.manual_seed(seed)
            f = build_field(spec)
            fast, slow = to_graph(f), _builder(f)
            assert cached_template(f) is not None, name
            for k in KEYS:
                assert torch.equal(getattr(fast, k), getattr(slow, k)), (name, seed, k)
        names.append(name)
    assert {"MLP", "TRI", "HASH", "TRI-xyz", "HASH-11T", "TRI-8C", "MLP-32H"} <= set(names)


def test_template_graph_does_not_share_memory_with_the_template():
    f = build_field(arch_spec_for("HASH", 4, "tiny"))
    a, b = to_graph(f), to_graph(f)
    for k in KEYS:
        assert getattr(a, k).data_ptr() != getattr(b, k).data_ptr(), k


def test_template_path_rejects_parameters_over_the_bound():
    f = build_field(arch_spec_for("MLP", 4, "tiny"))
    to_graph(f)                                          # template cached: the fast path checks alone
    with torch.no_grad():
        f.mlp.layers[1].weight[0, 0] = 1e9
    with pytest.raises(ValueError, match=r"mlp.layers.1.weight.*magnitude"):
        to_graph(f)


@pytest.mark.parametrize("features", [1, 2, 4])
def test_hash_level_features_gathered_as_integers_are_the_same_bits(features):
    """The probes' gather of hash table rows as integers reads the same bytes; the field's own
    forward keeps its differentiable gather (fitting trains through it)."""
    spec = arch_spec_for("HASH", 4, "tiny")
    g = build_field(spec.replace(grid=dataclasses.replace(spec.grid, features_per_level=features))).grid
    with torch.no_grad():
        g.params.normal_()
    idx, w = g.lookup(torch.rand(300, 3))
    with_grad = g.level_features(idx, w.unsqueeze(-1))
    assert with_grad.requires_grad
    assert torch.equal(g.level_features(idx, w.unsqueeze(-1), no_grad=True), with_grad.detach())


# -- the side-by-side timing against reference converters ------------------------------------------
def _bench():
    spec = importlib.util.spec_from_file_location("convert_speed", ROOT / "benchmarks" / "convert_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_reference(root: Path) -> None:
    """A checkout laid out as the references' (gmn/graph_construct/...), with a minimal converter of
    nn.Linear stacks written here: the loader and the interleaved timing are what is tested."""
    pkg = root / "gmn" / "graph_construct"
    pkg.mkdir(parents=True)
    (pkg / "constants.py").write_text("KIND = 'fake'\n")
    (pkg / "utils.py").write_text("from gmn.graph_construct.constants import KIND\n")
    (pkg / "layers.py").write_text("")
    (pkg / "model_arch_graph.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from gmn.graph_construct.utils import KIND

        def sequential_to_arch(model):
            return [m.weight for m in model if isinstance(m, nn.Linear)]

        def arch_to_graph(arch):
            n = [arch[0].shape[1]] + [w.shape[0] for w in arch]
            attr = torch.cat([w.reshape(-1, 1) for w in arch])
            return torch.zeros(sum(n), 3), torch.zeros(2, attr.shape[0], dtype=torch.long), attr
    """))


def test_reference_loader_imports_a_checkout_and_restores_modules(tmp_path):
    bench = _bench()
    _fake_reference(tmp_path / "graph_metanetworks")
    path_before, gmn_before = list(sys.path), {k for k in sys.modules if k.split(".")[0] == "gmn"}
    ref = bench.load_reference(str(tmp_path / "graph_metanetworks"))
    assert sys.path == path_before
    assert {k for k in sys.modules if k.split(".")[0] == "gmn"} == gmn_before
    field = bench.make_field("MLP", "tiny")
    net = bench.reference_net(ref, "MLP", field)
    x, ei, ea = ref.to_graph(ref.to_arch(net))
    assert ea.shape[0] == sum(lin.weight.numel() for lin in field.mlp.layers)
    assert bench.reference_net(ref, "TRI", bench.make_field("TRI", "tiny")) is None   # it has no tri-plane module
    with pytest.raises(FileNotFoundError, match="lacks"):
        bench.load_reference(str(tmp_path / "nowhere"))


def test_interleaved_timing_rotates_the_order():
    bench = _bench()
    seen = []
    jobs = {n: (lambda n=n: seen.append(n)) for n in ("a", "b", "c")}
    t = bench.time_side_by_side(jobs, 3)
    assert all(len(v) == 3 for v in t.values())
    assert seen[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]     # after one warm-up call each


def _run(args):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_convert_speed_references_smoke(tmp_path):
    """With a checkout: a ratio row per family it converts and the goal line; without: one line, no ratio."""
    _fake_reference(tmp_path / "graph_metanetworks")
    out = _run([ROOT / "benchmarks" / "convert_speed.py", "--smoke", "--references", tmp_path, "--parts"])
    assert "absent under" in out and "gmnerf" in out and "beside the references" in out
    assert "where one to_graph spends its time" in out and "hidden layer products" in out
    mlp = [ln for ln in out.splitlines() if ln.startswith("MLP ") and " GMN " in ln]
    assert len(mlp) == 1 and "goal conversion with probe rows" in out
    out = _run([ROOT / "benchmarks" / "convert_speed.py", "--smoke"])
    assert "no ratio is printed" in out and "beside the references" not in out
