"""Octree converter (NGLOD-style sparse octree; our design, in the spirit of Lim et al.).

Per LOD ``i`` a node per stored vertex (type OCTREE_VERTEX, its position in [-1, 1] and
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

from . import layout as L
from .graph import GraphBuilder, ParameterGraph, edge_features, node_features
from .mlp import field_to_graph
from .registry import register_converter


def add_octree(builder: GraphBuilder, field: OctreeField) -> torch.Tensor:
    C = field.grid_dim
    chans = builder.add_nodes(node_features(C, L.NodeType.GRID_CHANNEL, layer=0))
    for i, lod in enumerate(field.lods):  # a handful of LODs; each block is vectorised
        v = field.vertices(i)
        pos = v.float() / 2 ** lod * 2 - 1
        verts = builder.add_nodes(node_features(v.shape[0], L.NodeType.OCTREE_VERTEX, layer=-1, pos=pos, level=lod))
        feats = field.features[i]                                   # [V_i, C] row-major
        row = torch.arange(v.shape[0]).repeat_interleave(C)
        col = torch.arange(C).repeat(v.shape[0])
        builder.add_edges(verts[row], chans[col],
                          edge_features(feats.reshape(-1), L.EdgeType.OCTREE, layer=0, pos=pos[row], level=lod))
    return chans


@register_converter(OctreeField)
def octree_to_graph(field: OctreeField) -> ParameterGraph:
    return field_to_graph(field, add_octree)
