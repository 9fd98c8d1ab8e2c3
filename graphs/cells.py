"""Grid storage in the generic roles every family shares: channel nodes and storage cells.

A grid that stores feature vectors at 3D positions (octree vertices, a plug-in's dense voxel
grid, ...) becomes ``C`` channel nodes (MLP inputs) and one ``"cell"`` node per stored vector
(position, level), with one ``"cell"`` edge per stored value from its cell to its channel. The
codes are those the octree family trains (``graphs.layout.NODE_ROLES``), so a checkpoint
trained on the built-in families reads such a grid with trained weights only.
"""
from __future__ import annotations

import torch

from . import layout as L
from .graph import GraphBuilder, edge_features, node_features


def add_grid_channels(builder: GraphBuilder, channels: int, level: float = 0.0) -> torch.Tensor:
    """``channels`` channel nodes (the MLP inputs a grid feeds); returns their ids ``[C]``."""
    return builder.add_nodes(node_features(channels, L.node_type("channel"), layer=0, level=level))


def add_storage_cells(builder: GraphBuilder, chans: torch.Tensor, values: torch.Tensor, pos: torch.Tensor,
                      level: float) -> torch.Tensor:
    """Cells holding ``values [V, C]`` (row ``v`` stored at ``pos [V, 3]`` in [-1, 1]) at a grid of
    resolution ``2^level``; edge ``(v, c)`` carries ``values[v, c]`` into channel ``chans[c]``, in
    row-major order. Returns the cell ids ``[V]``."""
    V, C = values.shape
    cells = builder.add_nodes(node_features(V, L.node_type("cell"), layer=-1, pos=pos, level=level))
    row = torch.arange(V).repeat_interleave(C)
    col = torch.arange(C).repeat(V)
    builder.add_edges(cells[row], chans[col],
                      edge_features(values.reshape(-1), L.edge_type("cell"), layer=0, pos=pos[row], level=level))
    return cells
