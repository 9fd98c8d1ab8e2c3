"""Octree converter (NGLOD-style sparse octree; our design, in the spirit of Lim et al.).

Per LOD ``i`` a node per stored vertex (the generic storage-cell role, :mod:`graphs.cells`: type
OCTREE_VERTEX, its position in [-1, 1] and
``log2`` resolution = LOD), ``C`` channel nodes shared by all LODs (the field sums the LODs'
features per channel, as a tri-plane sums its planes), and one edge per stored value from
its vertex to its channel. The channel nodes and the raw-xyz input nodes feed the MLP.
With ``V_i`` vertices at LOD ``i``, ``C`` channels, ``D`` encoding inputs:
    nodes = sum_i V_i + C + D + H W + n_out (+ H + 1 bias nodes)
    edges = C sum_i V_i + MLP parameters
"""
from __future__ import annotations

import torch

from gmn_inr.fields import OctreeField

from .cells import add_grid_channels, add_storage_cells
from .graph import GraphBuilder, ParameterGraph
from .mlp import field_to_graph
from .registry import register_converter


def add_octree(builder: GraphBuilder, field: OctreeField) -> torch.Tensor:
    chans = add_grid_channels(builder, field.grid_dim)
    for i, lod in enumerate(field.lods):  # a handful of LODs; each block is vectorised
        pos = field.vertices(i).float() / 2 ** lod * 2 - 1
        add_storage_cells(builder, chans, field.features[i], pos, level=lod)    # features [V_i, C]
    return chans


@register_converter(OctreeField)
def octree_to_graph(field: OctreeField) -> ParameterGraph:
    return field_to_graph(field, add_octree)
