"""Add an architecture gmn_inr does not know: a dense voxel-grid field, in one short file.

Run ``python examples/voxel_grid.py``: it defines the field, registers its converter and
converts it, ready to embed. The converter reuses the package's builder and MLP part, so only
the grid's own nodes and edges are written here; the MLP part also gives every neuron its
probe features, from the field's ``grid_features`` (and ``encoding``, None here).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from gmn_inr.fields import MLP, MLPSpec
from graphs import GraphBuilder, add_field_mlp, edge_features, layout as L, node_features, register_converter, to_graph


class VoxelGridField(nn.Module):
    """``xyz [..., 3] -> [..., out_dim]``: trilinear features from a ``[C, R, R, R]`` grid, then an MLP."""

    encoding = None            # no frequency encoding next to the grid features

    def __init__(self, resolution: int = 8, channels: int = 4, out_dim: int = 1):
        super().__init__()
        self.grid = nn.Parameter(torch.randn(channels, resolution, resolution, resolution) * 0.1)
        self.mlp = MLP(channels, out_dim, MLPSpec(hidden_layers=2, hidden_dim=32, bias=True))

    def grid_features(self, xyz):
        """``xyz [..., 3] -> [..., C]``."""
        g = xyz.reshape(1, -1, 1, 1, 3)  # grid_sample wants (x, y, z) -> (W, H, D)
        feats = F.grid_sample(self.grid[None], g, align_corners=True)[0, :, :, 0, 0].t()
        return feats.reshape(*xyz.shape[:-1], -1)

    def forward(self, xyz):
        return self.mlp(self.grid_features(xyz))


@register_converter(VoxelGridField)
def voxel_grid_to_graph(field: VoxelGridField):
    """A node per voxel (with its position), a node per channel, one edge per stored value."""
    C, R = field.grid.shape[:2]
    b = GraphBuilder()
    ax = torch.linspace(-1, 1, R)
    # grid[c, d, h, w] sits at (x, y, z) = (w, h, d)
    d, h, w = torch.meshgrid(ax, ax, ax, indexing="ij")
    pos = torch.stack([w, h, d], -1).reshape(-1, 3)
    voxels = b.add_nodes(node_features(R ** 3, L.NodeType.VOXEL_CELL, layer=-1, pos=pos, level=math.log2(R)))
    chans = b.add_nodes(node_features(C, L.NodeType.GRID_CHANNEL, layer=0, level=math.log2(R)))
    cell = torch.arange(R ** 3).repeat(C)              # grid.flatten() is channel-major
    chan = torch.arange(C).repeat_interleave(R ** 3)
    b.add_edges(voxels[cell], chans[chan], edge_features(field.grid.reshape(-1), L.EdgeType.VOXEL, pos=pos[cell],
                                                           level=math.log2(R)))
    add_field_mlp(b, field, chans)
    return b.build(name="VoxelGrid")


if __name__ == "__main__":
    field = VoxelGridField()
    graph = to_graph(field)
    n_params = sum(p.numel() for p in field.parameters())
    print(f"{graph}: {n_params} parameters, one edge each: {graph.num_edges == n_params}")
