"""Your own INR files as they are: a module's state dict with its module file, tiny-cuda-nn params
with their config, a plain Linear stack; each evaluates on the [-1, 1]^3 cube to the values of the
module it came from, and each way of failing says what to do (one line, exit 2 in the CLI)."""
import json
import math
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gmn_inr.cli import main
from gmn_inr.fields import HashGridField, MLPField
from gmn_inr.io import FormatError, load_inr
from graphs import layout as L, to_graph

CUBE = torch.rand(300, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1

MODULE_FILE = textwrap.dedent('''
    import torch
    from torch import nn


    class SkipDecoder(nn.Module):
        """A DeepSDF-style decoder: xyz re-fed before layer 2, weight norm, dropout off in eval."""

        def __init__(self, width=16):
            super().__init__()
            self.lin0 = nn.utils.parametrizations.weight_norm(nn.Linear(3, width))
            self.lin1 = nn.Linear(width, width - 3)
            self.lin2 = nn.Linear(width, 1)
            self.latent_in = (2,)

        def forward(self, xyz):
            x = xyz
            for layer in range(3):
                if layer in self.latent_in:
                    x = torch.cat([x, xyz], -1)
                x = getattr(self, "lin" + str(layer))(x)
                if layer < 2:
                    x = torch.nn.functional.dropout(torch.relu(x), p=0.2, training=self.training)
            return torch.tanh(x)


    class PlainMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(3, 16), nn.Linear(16, 16), nn.Linear(16, 1)])

        def forward(self, xyz):
            h = xyz
            for i, lin in enumerate(self.layers):
                h = lin(h)
                if i < len(self.layers) - 1:
                    h = torch.relu(h)
            return h


    class Cumulative(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 4)

        def forward(self, xyz):
            return torch.cumsum(self.lin(xyz), -1)


    def skip_decoder():
        return SkipDecoder()


    def cumulative():
        return Cumulative()


    def plain_mlp():
        return PlainMLP()
''')


@pytest.fixture
def module_file(tmp_path):
    p = tmp_path / "my_inr.py"
    p.write_text(MODULE_FILE)
    return p


def _instance(module_file, factory):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"_ref_{factory}", module_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, factory)().eval()


def test_module_state_dict_forms(tmp_path, module_file):
    torch.manual_seed(0)
    ref = _instance(module_file, "skip_decoder")
    sd = ref.state_dict()
    torch.save({"epoch": 3, "model_state_dict": {k: v.double() for k, v in sd.items()}}, tmp_path / "ckpt.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "sd.safetensors")
    for name in ("ckpt.pth", "sd.safetensors"):
        m = load_inr(tmp_path / name, module=f"{module_file}:skip_decoder")
        assert all(p.dtype == torch.float32 for p in m.parameters())
        with torch.no_grad():
            assert torch.allclose(m(CUBE), ref(CUBE), atol=1e-5)
        g = to_graph(m)                                  # the skip keeps it a module: traced
        assert g.num_edges == sum(p.numel() for p in ref.parameters())
    # a box other than the cube: the module reads lo + (x + 1) / 2 (hi - lo)
    lo, hi = torch.tensor([0.0, -2.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])
    m = load_inr(tmp_path / "sd.safetensors", module=f"{module_file}:skip_decoder", bbox=[*lo, *hi])
    with torch.no_grad():
        assert torch.allclose(m(CUBE), ref(lo + (CUBE + 1) / 2 * (hi - lo)), atol=1e-5)
        g = to_graph(m)
        out = (g.x[:, L.N_TYPE] == L.NodeType.OUTPUT).nonzero().squeeze(1)
        assert torch.allclose(g.dense_probe()[out].t(), ref(lo + (_probe() + 1) / 2 * (hi - lo)), atol=1e-5)
        assert g.num_edges == sum(p.numel() for p in ref.parameters())


def _probe():
    from graphs.probe import probe_points
    return probe_points()


def test_a_module_that_is_a_plain_mlp_becomes_the_mlp_field(tmp_path, module_file):
    torch.manual_seed(0)
    ref = _instance(module_file, "plain_mlp")
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    f = load_inr(tmp_path / "w.pt", module=f"{module_file}:plain_mlp", input_range="unit")
    assert isinstance(f, MLPField) and f.spec.name == "plainmlp"
    with torch.no_grad():
        assert torch.allclose(f(CUBE), ref((CUBE + 1) / 2), atol=1e-5)


def test_plain_linear_stacks(tmp_path):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    save_file({k: v.contiguous() for k, v in seq.state_dict().items()}, tmp_path / "relu.safetensors")
    f = load_inr(tmp_path / "relu.safetensors")
    assert isinstance(f, MLPField) and f.spec.name == "relu-mlp2x32"
    with torch.no_grad():
        assert torch.allclose(f(CUBE), seq(CUBE), atol=1e-5)
    # layers.i.* keys, sine activation (SIREN's sin(30 x)), xyz in [0, 1]
    lins = nn.ModuleList([nn.Linear(3, 16), nn.Linear(16, 16), nn.Linear(16, 2)])
    torch.save({f"layers.{i}.{k}": v for i, l in enumerate(lins) for k, v in l.state_dict().items()},
               tmp_path / "siren.pth")
    f = load_inr(tmp_path / "siren.pth", activation="sine", input_range="unit")

    def siren(x):
        for lin in lins[:-1]:
            x = torch.sin(30 * lin(x))
        return lins[-1](x)

    with torch.no_grad():
        assert torch.allclose(f(CUBE), siren((CUBE + 1) / 2), atol=1e-5)
    # a layout that does not determine a stack: the reason and the flag that reads it
    torch.save({"0.weight": torch.randn(8, 3), "1.weight_g": torch.randn(8, 1)}, tmp_path / "wn.pth")
    with pytest.raises(FormatError, match=r"'1.weight_g' is not .* --module path/to/file.py:factory"):
        load_inr(tmp_path / "wn.pth")
    torch.save({"0.weight": torch.randn(8, 3), "2.weight": torch.randn(1, 7)}, tmp_path / "chain.pth")
    with pytest.raises(FormatError, match="layer 2 reads 7 inputs, the layer before gives 8"):
        load_inr(tmp_path / "chain.pth")


def tcnn_frequency_reference(params, n_freqs, width, hidden, n_out, u, act=torch.relu, identity=False):
    """tiny-cuda-nn's Frequency / Identity encoding + FullyFusedMLP written out: per axis, per
    frequency sin then cos of 2^k pi u (or u itself); the encoding padded with ones to a multiple of
    16; layers back to back, row-major, no biases."""
    enc = u if identity else torch.stack([f(2.0 ** k * math.pi * u) for k in range(n_freqs) for f in (torch.sin, torch.cos)],
                                         -1).reshape(u.shape[0], 3, n_freqs, 2).reshape(u.shape[0], -1)
    if not identity:
        enc = torch.stack([torch.stack([torch.sin(2.0 ** k * math.pi * u[:, a]), torch.cos(2.0 ** k * math.pi * u[:, a])], -1)
                           for a in range(3) for k in range(n_freqs)], 1).reshape(u.shape[0], -1)
    pad = (enc.shape[1] + 15) // 16 * 16
    h = torch.cat([enc, torch.ones(u.shape[0], pad - enc.shape[1])], 1)
    sizes = [width * pad] + [width * width] * (hidden - 1) + [((n_out + 15) // 16 * 16) * width]
    mats = torch.split(params, sizes)
    for i, m in enumerate(mats):
        h = h @ m.view(-1, h.shape[1]).t()
        if i < len(mats) - 1:
            h = act(h)
    return h[:, :n_out]


@pytest.mark.parametrize("otype", ["Frequency", "Identity"])
def test_tcnn_frequency_and_identity_networks(tmp_path, otype):
    torch.manual_seed(0)
    n_freqs, width, hidden, n_out = 3, 16, 2, 1
    n_in = 3 * 2 * n_freqs if otype == "Frequency" else 3
    pad = (n_in + 15) // 16 * 16
    params = torch.randn(width * pad + width * width * (hidden - 1) + 16 * width) * 0.3
    enc = {"otype": "Frequency", "n_frequencies": n_freqs} if otype == "Frequency" else {"otype": "Identity"}
    cfg = {"encoding": enc, "network": {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
                                        "n_neurons": width, "n_hidden_layers": hidden}}
    save_file({"params": params.half()}, tmp_path / "net.safetensors",
              metadata={"config": json.dumps(cfg), "n_output_dims": "1"})
    f = load_inr(tmp_path / "net.safetensors")
    assert isinstance(f, MLPField)
    want = tcnn_frequency_reference(params.half().float(), n_freqs, width, hidden, n_out, (CUBE + 1) / 2,
                                    identity=otype == "Identity")
    with torch.no_grad():
        assert torch.allclose(f(CUBE), want, atol=1e-5)
    # the config from a sidecar, the output width from --outputs; xyz read as it is (symmetric)
    save_file({"params": params}, tmp_path / "bare.safetensors")
    (tmp_path / "bare.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="pass --outputs N"):
        load_inr(tmp_path / "bare.safetensors")
    f = load_inr(tmp_path / "bare.safetensors", outputs=1, input_range="symmetric")
    with torch.no_grad():
        assert torch.allclose(f(CUBE), tcnn_frequency_reference(params, n_freqs, width, hidden, n_out, CUBE,
                                                                identity=otype == "Identity"), atol=1e-5)


def test_tcnn_hash_grid_with_its_config(tmp_path):
    torch.manual_seed(0)
    cfg = {"encoding": {"otype": "HashGrid", "n_levels": 2, "n_features_per_level": 2, "log2_hashmap_size": 8,
                        "base_resolution": 4, "per_level_scale": 2.0},
           "network": {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
                       "n_neurons": 16, "n_hidden_layers": 1}}
    n_net = 16 * 16 + 16 * 16
    from gmn_inr.fields import HashGridSpec, hash_levels
    n_enc = hash_levels(HashGridSpec.from_tcnn(cfg["encoding"])).n_entries * 2
    params = torch.randn(n_net + n_enc) * 0.1
    torch.save({"params": params}, tmp_path / "hash.pth")
    (tmp_path / "hash.pth.json").write_text(json.dumps(cfg))
    f = load_inr(tmp_path / "hash.pth", outputs=1)
    with torch.no_grad():
        assert torch.allclose(f(CUBE), HashGridField.from_tcnn(params, cfg, 1)(CUBE), atol=1e-6)
    with pytest.raises(FormatError, match="its input range must be 'unit'"):
        load_inr(tmp_path / "hash.pth", outputs=1, input_range="symmetric")


def test_errors_say_what_to_do(tmp_path, module_file, capsys):
    torch.manual_seed(0)
    ref = _instance(module_file, "skip_decoder")
    sd = dict(ref.state_dict())
    sd["lin1.weight"] = torch.randn(13, 15)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(FormatError, match=r"does not fit SkipDecoder: key 'lin1.weight' is \(13, 15\) in the file, "
                                          r"\(13, 16\) in the module"):
        load_inr(tmp_path / "bad.pth", module=f"{module_file}:skip_decoder")
    torch.save(_instance(module_file, "cumulative").state_dict(), tmp_path / "cum.pth")
    with pytest.raises(FormatError, match=r"Cumulative cannot be traced .* cumsum .*/my_inr.py\", line \d+: "
                                          r"return torch.cumsum"):
        load_inr(tmp_path / "cum.pth", module=f"{module_file}:cumulative")
    cfg = {"encoding": {"otype": "Frequency", "n_frequencies": 2, "n_dims_to_encode": 2},
           "network": {"otype": "FullyFusedMLP", "n_neurons": 16, "n_hidden_layers": 1}}
    save_file({"params": torch.zeros(16 * 16 + 16 * 16)}, tmp_path / "opt.safetensors",
              metadata={"config": json.dumps(cfg), "n_output_dims": "1"})
    with pytest.raises(FormatError, match="n_dims_to_encode=2 is not supported"):
        load_inr(tmp_path / "opt.safetensors")
    cfg["encoding"] = {"otype": "Frequency", "n_frequencies": 2, "frequency_scale": 2}
    (tmp_path / "opt.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match=r"keys \['frequency_scale'\] are not supported"):
        load_inr(tmp_path / "opt.safetensors", tcnn_config=str(tmp_path / "opt.json"))
    save_file({"params": torch.zeros(16)}, tmp_path / "noconf.safetensors")
    with pytest.raises(FormatError, match="pass --tcnn-config FILE.json"):
        load_inr(tmp_path / "noconf.safetensors")
    torch.save({"encoder.w": torch.zeros(3, 3)}, tmp_path / "foreign.pth")
    with pytest.raises(FormatError, match="pass --module path/to/file.py:factory"):
        load_inr(tmp_path / "foreign.pth")
    # the CLI: one line, exit 2, for each; a failed import leaves the store as it was
    good = tmp_path / "good" / "chair"
    good.mkdir(parents=True)
    seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    save_file({k: v.contiguous() for k, v in seq.state_dict().items()}, good / "a.safetensors")
    store = tmp_path / "store"
    assert main(["zoo", "import", str(tmp_path / "good"), "--out", str(store), "--function", "sdf"]) == 0
    before = {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    for bad, flags in (("bad.pth", ["--module", f"{module_file}:skip_decoder"]), ("noconf.safetensors", []),
                       ("foreign.pth", []), ("opt.safetensors", [])):
        src = tmp_path / f"src_{bad}" / "chair"
        src.mkdir(parents=True)
        (src / "a.safetensors").write_bytes((good / "a.safetensors").read_bytes())
        (src / ("b" + bad[bad.index("."):])).write_bytes((tmp_path / bad).read_bytes())
        capsys.readouterr()
        assert main(["zoo", "import", str(src.parent), "--out", str(store), "--function", "sdf"] + flags) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("gmn-inr zoo import: error:") and "b." in err
        assert {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()} == before
    assert main(["zoo", "import", str(tmp_path / "nowhere"), "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()                # nothing read, nothing created


def test_a_mixed_folder_each_file_on_its_own(tmp_path, module_file, capsys):
    """Known layouts (a gmn_inr field, a DeepSDF checkpoint) beside a module's state dict, tcnn
    params with a sidecar config and a plain stack: classes, architectures and object pairs."""
    from gmn_inr.fields import arch_spec_for, build_field
    from gmn_inr.io import DeepSDFDecoder, save_field
    from gmn_inr.zoo import open_store
    from gmn_inr.zoo.dataset import pairs_from_records

    torch.manual_seed(0)
    cfg = {"encoding": {"otype": "Frequency", "n_frequencies": 2},
           "network": {"otype": "FullyFusedMLP", "activation": "ReLU", "n_neurons": 16, "n_hidden_layers": 1}}
    mine = {}
    for cls in ("chair", "lamp"):
        d = tmp_path / "src" / cls
        d.mkdir(parents=True)
        mine[f"{cls}_a"] = _instance(module_file, "plain_mlp")
        torch.save(mine[f"{cls}_a"].state_dict(), d / "a.mine.pth")
        save_file({"params": torch.randn(16 * 16 + 16 * 16) * 0.1}, d / "a.freq.safetensors",
                  metadata={"n_output_dims": "1"})
        (d / "a.freq.json").write_text(json.dumps(cfg))
        save_field(build_field(arch_spec_for("HASH", 1, "tiny")), d / "b.hash.safetensors")
        seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
        save_file({k: v.contiguous() for k, v in seq.state_dict().items()}, d / "b.stack.safetensors")
    torch.save({"epoch": 1, "model_state_dict": DeepSDFDecoder(0, dims=(8,) * 4, latent_in=(2,), weight_norm=False).state_dict()},
               tmp_path / "src" / "lamp" / "c.deepsdf.pth")
    store = tmp_path / "store"
    argv = ["zoo", "import", str(tmp_path / "src"), "--out", str(store), "--function", "sdf",
            "--module", f"{module_file}:plain_mlp"]
    assert main(argv) == 2
    assert "c.deepsdf.pth loads as a DeepSDFDecoder" in capsys.readouterr().err
    assert not store.exists()
    assert main(argv + ["--skip-unreadable"]) == 0
    out = capsys.readouterr()
    assert "skipped (unreadable):" in out.err and "c.deepsdf.pth" in out.err and "embed it" in out.err
    assert "imported 8 INRs (0 already there, 1 unreadable) of 4 objects in 2 classes" in out.out
    s = open_store(store)
    assert sorted({(r.arch, r.family) for r in s}) == [("HASH", "hashgrid"), ("plainmlp", "mlp"),
                                                       ("relu-mlp1x8", "mlp"), ("tcnn-freq2", "mlp")]
    pairs = {(a.object_id, *sorted((a.arch, b.arch))) for a, b in pairs_from_records(list(s))}
    assert pairs == {("chair_b", "HASH", "relu-mlp1x8"), ("lamp_b", "HASH", "relu-mlp1x8")}   # a.* share a family
    with torch.no_grad():                                 # the stored INR is the module it came from
        for r in s:
            if r.arch == "plainmlp":
                assert torch.allclose(r.field()(CUBE), mine[r.object_id](CUBE), atol=1e-5)
