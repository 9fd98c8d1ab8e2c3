"""Graph transforms, used for ablations against the main paper's graph."""
from __future__ import annotations

import torch

from . import layout as L
from .graph import ParameterGraph

_HASH_NODES = (L.NodeType.HASH_ENTRY_DENSE, L.NodeType.HASH_ENTRY_HASHED)


def paper_style(graph: ParameterGraph) -> ParameterGraph:
    """The graph as the main paper builds it, for an ablation of what gmn_inr adds.

    The paper's nodes carry (layer, neuron index, type) and its edges (value, layer, type, and
    for hash grids the table index and the raw entry index): no activation, no level
    resolution, no position of dense hash entries, and the entry index unscaled. This keeps
    gmn_inr's columns but blanks what the paper does not have: activation codes, levels and
    hash positions are zeroed, every hash entry is of one type, and the hash edges' entry
    column holds the raw entry index (thousands), as in the paper's code.
    """
    x, ea = graph.x.clone(), graph.edge_attr.clone()
    x[:, L.N_ACT] = 0
    ea[:, L.E_ACT] = 0
    hash_nodes = (x[:, L.N_TYPE] == _HASH_NODES[0]) | (x[:, L.N_TYPE] == _HASH_NODES[1])
    x[hash_nodes, L.N_POS] = 0
    x[hash_nodes, L.N_TYPE] = float(L.NodeType.HASH_ENTRY_HASHED)
    hash_edges = ea[:, L.E_TYPE] == L.EdgeType.HASH
    ea[hash_edges, L.E_POS] = 0
    # the entry index is recovered from its scaled form: local index = frac * table size, where
    # the table size of the edge's level is the number of entry nodes sharing the level value
    if bool(hash_edges.any()):
        src = graph.edge_index[0, hash_edges]
        lvl = x[src, L.N_LEVEL]
        levels, inverse = torch.unique(x[hash_nodes, L.N_LEVEL], return_inverse=True)
        sizes = torch.bincount(inverse, minlength=levels.numel()).float()
        size_of_edge = sizes[torch.searchsorted(levels, lvl)]
        ea[hash_edges, L.E_ENTRY] = torch.round(ea[hash_edges, L.E_ENTRY] * size_of_edge)
        # the level becomes the table index, 0..N-1, unscaled
        ea[hash_edges, L.E_LEVEL] = torch.searchsorted(levels, lvl).float()
    x[:, L.N_LEVEL] = 0
    ea[~hash_edges, L.E_LEVEL] = 0
    return ParameterGraph(x, graph.edge_index, ea, spec=graph.spec, name=graph.name + " (paper graph)")
