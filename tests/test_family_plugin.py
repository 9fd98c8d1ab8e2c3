"""A new architecture family registered in one temporary module, end to end: zoo fit, training,
embedding and the benchmark's smoke path, touching no file of the package."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent('''
    """A dense lattice field: one file is all a family needs."""
    from dataclasses import dataclass

    import torch
    import torch.nn.functional as F
    from torch import nn

    from gmn_inr.fields import ArchSpec, Field, MLPSpec, register_family
    from graphs import GraphBuilder, add_field_mlp, add_grid_channels, add_storage_cells


    @dataclass(frozen=True)
    class LatticeSpec:
        resolution: int = 4
        channels: int = 3

        def validate(self):
            assert self.resolution >= 2

        @property
        def feature_dim(self):
            return self.channels


    def lattice_to_graph(field):
        C, R = field.lattice.shape[:2]
        ax = torch.linspace(-1, 1, R)
        d, h, w = torch.meshgrid(ax, ax, ax, indexing="ij")
        pos = torch.stack([w, h, d], -1).reshape(-1, 3)
        b = GraphBuilder()
        chans = add_grid_channels(b, C)
        add_storage_cells(b, chans, field.lattice.reshape(C, -1).t(), pos, level=1.0)
        add_field_mlp(b, field, chans)
        return b.build(field.spec, field.spec.name)


    MLP = MLPSpec(hidden_layers=1, hidden_dim=8, bias=True)


    @register_family("lattice", grid=LatticeSpec, converter=lattice_to_graph, training=("LAT",), archs={
        "LAT": dict(mlp=MLP, grid=LatticeSpec()),
        "LAT-2C": dict(mlp=MLP, grid=LatticeSpec(channels=2)),
    })
    class LatticeField(Field):
        def __init__(self, spec: ArchSpec):
            super().__init__(spec)
            g = spec.grid
            self.grid_dim = g.channels
            self.lattice = nn.Parameter(torch.randn(g.channels, g.resolution, g.resolution, g.resolution) * 0.1)

        def grid_features(self, xyz):
            pts = xyz.reshape(1, -1, 1, 1, 3)
            feats = F.grid_sample(self.lattice[None], pts, align_corners=True)[0, :, :, 0, 0].t()
            return feats.reshape(*xyz.shape[:-1], -1)
''')


@pytest.fixture()
def plugin(tmp_path):
    from gmn_inr.fields import load_plugin, registry

    path = tmp_path / "lattice_family.py"
    path.write_text(PLUGIN)
    load_plugin(str(path))
    yield str(path)
    registry.unregister_family("lattice")


def test_a_family_in_one_file_is_fitted_trained_embedded_and_benchmarked(plugin, tmp_path):
    from gmn_inr.cli import main
    from gmn_inr.fields import ArchSpec, arch_spec_for, build_field, get_family, load_field
    from gmn_inr.zoo import open_store
    from gmn_inr.zoo.build import build_zoo, preset_config
    from graphs import layout as L, to_graph

    # the registry knows it: spec validation, JSON, preset scaling, build / load, conversion
    spec = arch_spec_for("LAT", 4, "tiny")
    assert ArchSpec.from_json(spec.to_json()) == spec and spec.mlp_in_dim == 3
    field = build_field(spec)
    assert [n for n, _ in field.grid_parameters()] == ["lattice"]
    assert torch.equal(load_field(spec, field.state_dict()).lattice, field.lattice)
    g = to_graph(field)
    assert g.num_edges == sum(p.numel() for p in field.parameters())
    # generic roles only: every node and edge type is one the built-in families emit (trained rows)
    builtin = [to_graph(build_field(arch_spec_for(a, 4, "tiny"))) for a in ("MLP", "TRI", "HASH", "OCT")]
    assert set(g.x[:, L.N_TYPE].tolist()) <= {t for b in builtin for t in b.x[:, L.N_TYPE].tolist()}
    assert set(g.edge_attr[:, L.E_TYPE].tolist()) <= {t for b in builtin for t in b.edge_attr[:, L.E_TYPE].tolist()}
    assert get_family("lattice").source == str(Path(plugin).resolve())

    # zoo: a tiny fit of MLP and the new family (gates off: this checks plumbing, not quality)
    zoo = tmp_path / "zoo"
    cfg = preset_config("tiny", classes=("chair", "mug"), per_class=4, splits=(0.5, 0.0, 0.5), batch=8,
                        archs={"radiance": ("MLP", "LAT", "LAT-2C")},
                        fit=dict(steps=3, points=64, pool=512, surface=128, gate_res=6, gate_view=6,
                                 gate_view_samples=6, min_iou=0.0, min_psnr=-1e9, min_view_psnr=-1e9))
    build_zoo(zoo, config=cfg, progress=False)
    store = open_store(zoo)
    assert {r.arch for r in store} == {"MLP", "LAT", "LAT-2C"} and {r.family for r in store} >= {"lattice"}

    # training through the CLI on the new family, then embedding every INR of the zoo
    run = tmp_path / "run"
    assert main(["--plugin", plugin, "train", str(zoo), "--preset", "tiny", "--loss", "R+C", "--steps", "2",
                 "--archs", "MLP,LAT", "--out", str(run), "--no-progress", "--rays", "4", "--samples", "4"]) == 0
    emb = tmp_path / "emb.safetensors"
    assert main(["--plugin", plugin, "embed", str(zoo), "--checkpoint", str(run), "--out", str(emb),
                 "--device", "cpu"]) == 0
    from safetensors.torch import load_file
    z = load_file(str(emb))["embeddings"]
    assert z.shape[0] == len(store) and torch.isfinite(z).all()

    # the headline benchmark's smoke path: LAT trained on, LAT-2C reported as unseen
    out = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "unseen_arch.py"), "--plugin", plugin, "--preset", "smoke",
           "--zoo", str(zoo), "--archs", "MLP,LAT", "--out", str(out), "--runs", str(tmp_path / "runs"),
           "--no-plots", "--device", "cpu", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "unseen_arch.json").read_text())
    assert set(report["classification"]["L_R+C"]["ALL"]) == {"MLP", "LAT", "LAT-2C"}
    assert "MLP/LAT" in report["retrieval"]["L_R+C"]
