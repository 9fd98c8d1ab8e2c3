"""Hash-grid converter (main paper section 3), with what the paper's graph left out.

Per level ``l`` (table size ``T_l``, ``F`` features): ``T_l`` entry nodes and ``F`` feature nodes,
each entry edged to each feature node with its stored value; the ``N F`` feature nodes are
the MLP's inputs. With ``N`` levels of ``T`` entries and an MLP of ``H`` x ``W``:
    nodes = N (T + F) + H W + n_out (+ H + 1 bias nodes)     [sum_l T_l in general]
    edges = N T F + MLP parameters
O(N(T+F)), never O(R^3). Beyond the paper: an entry of a dense level carries its grid
position; every node and edge carries its level's resolution (log2), and the entry index
is divided by the table size, so no raw integer in the thousands reaches the encoder.
"""
from __future__ import annotations

import torch

from gmn_inr.fields import HashGridField
from gmn_inr.fields.hashgrid import HashGridEncoding

from . import layout as L
from .graph import GraphBuilder, ParameterGraph, edge_features, node_features
from .mlp import field_to_graph
from .registry import register_converter


def entry_positions(enc: HashGridEncoding) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every table entry: ``(level [n], local index [n], xyz [n, 3], is_dense [n])``.

    A dense level's entry ``e = x + y res + z res^2`` sits at grid point ``(x, y, z)``, i.e. at
    ``u = (g - 0.5) / scale`` in [0, 1] (tcnn's +0.5), mapped to [-1, 1]; hashed entries have none.
    """
    lv = enc.levels
    size = torch.from_numpy(lv.size)
    level = torch.repeat_interleave(torch.arange(len(size)), size)
    local = torch.arange(int(size.sum())) - torch.from_numpy(lv.offset)[level]
    res = torch.from_numpy(lv.resolution)[level]
    dense = torch.from_numpy(lv.dense)[level] & (local < res ** 3)
    g = torch.stack([local % res, (local // res) % res, local // (res * res)], -1).float()
    scale = torch.from_numpy(lv.scale)[level].unsqueeze(-1)
    xyz = ((g - 0.5) / scale * 2 - 1).clamp(-1, 1) * dense.unsqueeze(-1)
    return level, local, xyz, dense


def add_hash_grid(builder: GraphBuilder, enc: HashGridEncoding) -> torch.Tensor:
    """Entry and feature nodes plus one edge per table value; returns the feature node ids
    in the encoding's output order (level-major)."""
    lv, F = enc.levels, enc.n_features
    level, local, xyz, dense = entry_positions(enc)
    log_res = torch.log2(torch.from_numpy(lv.resolution).float())
    ntype = torch.where(dense, int(L.NodeType.HASH_ENTRY_DENSE), int(L.NodeType.HASH_ENTRY_HASHED))
    ex = node_features(level.shape[0], 0, layer=-1, pos=xyz, level=log_res[level])
    ex[:, L.N_TYPE] = ntype.float()
    entries = builder.add_nodes(ex)
    n_levels = len(lv.size)
    feats = builder.add_nodes(node_features(n_levels * F, L.NodeType.GRID_CHANNEL, layer=0,
                                            level=log_res.repeat_interleave(F)))
    # params are [level][entry][feature]: flat k -> entry k // F, feature k % F of its level
    k = torch.arange(enc.params.numel())
    e, f = k // F, k % F
    entry_frac = local[e].float() / torch.from_numpy(lv.size)[level[e]].float()
    builder.add_edges(entries[e], feats[level[e] * F + f],
                      edge_features(enc.params, L.EdgeType.HASH, layer=0, pos=xyz[e], level=log_res[level[e]],
                                    entry=entry_frac))
    return feats


@register_converter(HashGridField)
def hashgrid_to_graph(field: HashGridField) -> ParameterGraph:
    return field_to_graph(field, lambda b, f: add_hash_grid(b, f.grid))


hashgrid_to_graph.uses_template = True  # to_graph leaves the checks to the template path (graphs.mlp)


@register_converter(HashGridEncoding)
def hash_encoding_to_graph(enc: HashGridEncoding) -> ParameterGraph:
    """A hash grid on its own (tcnn ``Encoding``): its feature nodes are the graph's sinks."""
    b = GraphBuilder()
    add_hash_grid(b, enc)
    return b.build(None, "HashGridEncoding")
