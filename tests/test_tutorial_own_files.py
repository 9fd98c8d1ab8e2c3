"""The README tutorial as a test: a folder of SDF INRs written by reference modules in the forms
researchers hold (DeepSDF's published decoder shape -- a skip and an output tanh -- with its module
file, a SIREN, a tcnn hash blob with its config) -> ``zoo import`` -> ``train`` (pairs: one object
in two forms) -> ``search build`` -> ``search query`` with a file read by the same flags."""
import json
import textwrap

import torch
from safetensors.torch import save_file

from gmn_inr.cli import main
from gmn_inr.fields import HashGridField

MODULES = textwrap.dedent('''
    import torch
    from torch import nn


    class Decoder(nn.Module):
        """DeepSDF's decoder idioms (lin0..linN by getattr, latent_in / dropout flags, weight norm),
        no latent code and no output tanh."""

        def __init__(self, dims=(32, 32, 32), latent_in=(), dropout=(0, 1), dropout_prob=0.2, norm_layers=(0, 1, 2)):
            super().__init__()
            dims = [3] + list(dims) + [1]
            self.num_layers, self.latent_in = len(dims), latent_in
            self.dropout, self.dropout_prob = dropout, dropout_prob
            for layer in range(self.num_layers - 1):
                lin = nn.Linear(dims[layer], dims[layer + 1])
                if layer in norm_layers:
                    lin = nn.utils.parametrizations.weight_norm(lin)
                setattr(self, "lin" + str(layer), lin)
            self.relu = nn.ReLU()

        def forward(self, input):
            x = input
            for layer in range(self.num_layers - 1):
                if layer in self.latent_in:
                    x = torch.cat([x, input], 1)
                x = getattr(self, "lin" + str(layer))(x)
                if layer < self.num_layers - 2:
                    x = self.relu(x)
                    if self.dropout is not None and layer in self.dropout:
                        x = torch.nn.functional.dropout(x, p=self.dropout_prob, training=self.training)
            return x


    class SineLayer(nn.Module):
        def __init__(self, in_features, out_features, omega_0=30.0):
            super().__init__()
            self.omega_0 = omega_0
            self.linear = nn.Linear(in_features, out_features)

        def forward(self, input):
            return torch.sin(self.omega_0 * self.linear(input))


    class Siren(nn.Module):
        """The siren notebook's Siren: returns (output, coords)."""

        def __init__(self, hidden=32, layers=2):
            super().__init__()
            net = [SineLayer(3, hidden)] + [SineLayer(hidden, hidden) for _ in range(layers - 1)]
            self.net = nn.Sequential(*net, nn.Linear(hidden, 1))

        def forward(self, coords):
            coords = coords.clone().detach().requires_grad_(True)
            return self.net(coords), coords


    class SkipDecoder(Decoder):
        """The published DeepSDF shape: xyz re-fed before a middle layer and tanh on the output."""

        def __init__(self):
            super().__init__(dims=(32, 32, 32), latent_in=(2,))
            self.lin1 = nn.utils.parametrizations.weight_norm(nn.Linear(32, 32 - 3))   # room for the re-fed xyz

        def forward(self, input):
            return torch.tanh(super().forward(input))


    def decoder():
        return Decoder()


    def skip_decoder():
        return SkipDecoder()


    def siren():
        return Siren()
''')

HASH_CONFIG = {"encoding": {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": 2, "log2_hashmap_size": 10,
                            "base_resolution": 4, "per_level_scale": 1.5},
               "network": {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
                           "n_neurons": 16, "n_hidden_layers": 2}}


def _sdf(kind, x, size):
    if kind == "ball":
        return x.norm(dim=-1, keepdim=True) - size
    q = x.abs() - size                                                    # a box
    return q.clamp(min=0).norm(dim=-1, keepdim=True) + q.max(-1, keepdim=True).values.clamp(max=0)


def _fit(module, kind, size, steps=40, unit=False):
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(steps):
        x = torch.rand(256, 3, generator=g) * 2 - 1
        out = module((x + 1) / 2 if unit else x)
        out = out[0] if isinstance(out, tuple) else out
        loss = (out - _sdf(kind, x, size)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return module.eval()


def _tcnn_params(field: HashGridField) -> torch.Tensor:
    """tiny-cuda-nn's flat params of a hash-grid network: the MLP's matrices row-major, input and
    output padded to 16, then the grid's table."""
    mats = []
    for lin in field.mlp.layers:
        w = lin.weight.detach()
        pad = torch.zeros((w.shape[0] + 15) // 16 * 16, (w.shape[1] + 15) // 16 * 16)
        pad[:w.shape[0], :w.shape[1]] = w
        mats.append(pad[:16 if lin is field.mlp.layers[-1] else w.shape[0]].reshape(-1))
    return torch.cat(mats + [field.grid.params.detach().reshape(-1)])


def write_tutorial_folder(root):
    """SRC/<class>/<object>.<form>.<ext>: two objects per class, each as a DeepSDF decoder with its skip
    and output tanh (state dict + module file) and a tcnn hash blob (params + config in the metadata);
    one also as a SIREN."""
    import importlib.util
    (root / "modules.py").write_text(MODULES)
    spec = importlib.util.spec_from_file_location("tutorial_modules", root / "modules.py")
    mods = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mods)
    torch.manual_seed(0)
    for cls, sizes in (("ball", (0.4, 0.6)), ("box", (0.3, 0.5))):
        d = root / "inrs" / cls
        d.mkdir(parents=True)
        for i, size in enumerate(sizes):
            dec = _fit(mods.skip_decoder(), cls, size)
            torch.save({"epoch": 40, "model_state_dict": dec.state_dict()}, d / f"o{i}.decoder.pth")
            tcnn = _fit(HashGridField.from_tcnn(torch.zeros(_n_params()), HASH_CONFIG, 1).train(), cls, size)
            save_file({"params": _tcnn_params(tcnn).half()}, d / f"o{i}.hash.safetensors",
                      metadata={"config": json.dumps(HASH_CONFIG), "n_output_dims": "1"})
        sir = _fit(mods.siren(), cls, sizes[0])
        save_file({k: v.contiguous() for k, v in sir.state_dict().items()}, d / "o0.siren.safetensors")
    return root / "inrs", root / "modules.py"


def _n_params():
    from gmn_inr.fields import HashGridSpec, hash_levels
    n_enc = hash_levels(HashGridSpec.from_tcnn(HASH_CONFIG["encoding"])).n_entries * 2
    return 16 * 16 + 16 * 16 + 16 * 16 + n_enc


def test_tutorial_import_train_search(tmp_path, capsys):
    src, modules = write_tutorial_folder(tmp_path)
    store, run, idx = tmp_path / "store", tmp_path / "run", tmp_path / "index"
    # one import: the decoders and the SIRENs go to the module whose keys they hold, the hash blobs
    # are read on their own
    assert main(["zoo", "import", str(src), "--out", str(store), "--function", "sdf",
                 "--module", f"{modules}:skip_decoder", "--module", f"{modules}:siren"]) == 0
    assert "imported 10 INRs (0 already there, 0 unreadable) of 4 objects in 2 classes" in capsys.readouterr().out
    from gmn_inr.zoo import open_store
    s = open_store(store)
    # the skip decoder is stored as itself (traced), the SIREN as the equal built-in MLP
    assert sorted({(r.arch, r.family) for r in s}) == [("siren", "mlp"), ("skipdecoder", "traced"),
                                                       ("tcnn-hash", "hashgrid")]
    assert s.classes == ["ball", "box"]
    from gmn_inr.zoo.dataset import pairs_from_records
    pairs = {(a.object_id, *sorted((a.arch, b.arch))) for a, b in pairs_from_records(list(s))}
    assert len(pairs) == 8 and ("ball_o0", "siren", "skipdecoder") in pairs and \
        ("box_o1", "skipdecoder", "tcnn-hash") in pairs                     # across families
    assert main(["train", str(store), "--preset", "tiny", "--steps", "2", "--out", str(run), "--no-progress",
                 "--function", "sdf", "--archs", "skipdecoder,siren,tcnn-hash"]) == 0
    assert main(["search", "build", str(store), "--checkpoint", str(run), "--index", str(idx), "--kind", "exact",
                 "--no-progress"]) == 0
    capsys.readouterr()
    query = src / "ball" / "o1.decoder.pth"
    assert main(["search", "query", str(idx), str(query), "--module", f"{modules}:skip_decoder", "-k", "2",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res[0]["hits"][0]["key"] == "ball_o1/sdf/skipdecoder" and res[0]["hits"][0]["score"] > 0.9999
    # a module of another shape (no skip: read as the equal plain MLP) is queried with as well
    import importlib.util
    spec = importlib.util.spec_from_file_location("tutorial_modules_2", modules)
    mods = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mods)
    plain = _fit(mods.decoder(), "ball", 0.5)
    torch.save(plain.state_dict(), tmp_path / "plain.pth")
    capsys.readouterr()
    assert main(["search", "query", str(idx), str(tmp_path / "plain.pth"), "--module", f"{modules}:decoder",
                 "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["hits"]) == 3
    assert main(["embed", str(src), "--checkpoint", str(run), "--out", str(tmp_path / "z.safetensors"),
                 "--module", f"{modules}:skip_decoder", "--module", f"{modules}:siren"]) == 0
    from safetensors.torch import load_file
    z = load_file(tmp_path / "z.safetensors")["embeddings"]
    assert z.shape[0] == 10 and torch.isfinite(z).all()
