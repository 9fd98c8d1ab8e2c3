"""The README's "Add an architecture" workflow, run as written in examples/."""
import runpy
from pathlib import Path

import torch

from graphs import layout as L, to_graph

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "voxel_grid.py"


def test_voxel_grid_example_registers_and_converts():
    ns = runpy.run_path(str(EXAMPLE), run_name="example")
    field = ns["VoxelGridField"](resolution=4, channels=3)
    g = to_graph(field)
    params = torch.cat([p.detach().reshape(-1) for p in field.parameters()])
    assert g.num_edges == params.numel()
    assert torch.equal(torch.sort(g.edge_attr[:, L.E_VALUE]).values, torch.sort(params).values)
    # the voxel value at an edge's position is what the field reads there
    with torch.no_grad():
        field.grid.zero_()
        field.grid[1, 0, 2, 3] = 1.0
    g = to_graph(field)
    k = int((g.edge_attr[:, L.E_VALUE] == 1.0).nonzero())
    xyz = g.edge_attr[k, L.E_POS].reshape(1, 1, 1, 1, 3)
    read = torch.nn.functional.grid_sample(field.grid[None], xyz, align_corners=True).reshape(-1)
    assert abs(read[1].item() - 1.0) < 1e-5 and read[0].item() == 0.0
    # the shared MLP part gave the plug-in's neurons their probe features
    from graphs.probe import probe_points
    with torch.no_grad():
        want = field(probe_points())
    assert torch.allclose(g.dense_probe()[g.x[:, L.N_TYPE] == L.NodeType.OUTPUT].t(), want, atol=1e-6)


def test_demo_prints_every_architecture(capsys):
    from gmn_inr.cli import main
    from gmn_inr.fields import ARCHITECTURES

    assert main(["demo", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ARCHITECTURES)
