"""Tri-plane converter (Lim et al.; main paper appendix A), with positions that cannot scramble.

For planes ``[3, C, R, R]``, encoding size ``D`` and an MLP (``H`` x ``W``, ``n_out`` outputs):
    nodes = 3 R^2 (cells) + C (channels; 3 C for concatenated planes) + D + H W + n_out (+ H + 1 bias nodes)
    edges = 3 R^2 C + MLP parameters
Edge ``(p, c, h, w)`` goes from the cell node of ``(p, h, w)`` to channel ``c`` and holds
``planes[p, c, h, w]`` with that cell's position, so every value keeps its own place even
for C > 1 (the anchor code's defect).
"""
from __future__ import annotations

import math

import torch

from gmn_inr.fields import TriplaneField
from gmn_inr.fields.triplane import PLANE_AXES

from . import layout as L
from .graph import GraphBuilder, ParameterGraph, edge_features, node_features
from .mlp import field_to_graph
from .registry import register_converter


def plane_cell_positions(resolution: int, align_corners: bool = False) -> torch.Tensor:
    """``[3, R, R, 3]`` xyz of every cell ``(p, h, w)``: ``u`` (width) and ``v`` (height) on the
    plane's two axes, as ``grid_sample`` reads them (cell centres ``(2i + 1) / R - 1``, or
    ``2i / (R - 1) - 1`` with ``align_corners``); 0 on the third."""
    i = torch.arange(resolution, dtype=torch.float32)
    c = 2 * i / (resolution - 1) - 1 if align_corners else (2 * i + 1) / resolution - 1
    v, u = torch.meshgrid(c, c, indexing="ij")                         # [R(h), R(w)]
    pos = torch.zeros(3, resolution, resolution, 3)
    for p, (a, b) in enumerate(PLANE_AXES):  # three planes, not a loop over values
        pos[p, :, :, a] = u
        pos[p, :, :, b] = v
    return pos


def add_triplane(builder: GraphBuilder, planes: torch.Tensor, align_corners: bool = False,
                 concat: bool = False) -> torch.Tensor:
    """Cell and channel nodes plus one edge per plane value; returns the channel node ids.

    Summed planes share ``C`` channel nodes (the MLP's ``C`` grid inputs); concatenated planes
    (``concat``) have ``3 C``, plane ``p``'s channel ``c`` being node ``p C + c``."""
    _, C, R, _ = planes.shape
    level = math.log2(R)
    pos = plane_cell_positions(R, align_corners).reshape(-1, 3)        # [3R^2, 3] in (p, h, w) order
    cells = builder.add_nodes(node_features(3 * R * R, L.NodeType.PLANE_CELL, layer=-1, pos=pos, level=level))
    n_chan = 3 * C if concat else C
    chans = builder.add_nodes(node_features(n_chan, L.NodeType.GRID_CHANNEL, layer=0, level=level))
    # planes.flatten() is (p, c, h, w)-major; derive src/dst from the same index grid
    p, c, hw = torch.meshgrid(torch.arange(3), torch.arange(C), torch.arange(R * R), indexing="ij")
    cell = (p * R * R + hw).reshape(-1)
    chan = (p * C + c if concat else c).reshape(-1)
    builder.add_edges(cells[cell], chans[chan],
                      edge_features(planes.reshape(-1), L.EdgeType.PLANE, layer=0, pos=pos[cell], level=level))
    return chans


@register_converter(TriplaneField)
def triplane_to_graph(field: TriplaneField) -> ParameterGraph:
    return field_to_graph(field, lambda b, f: add_triplane(b, f.planes, f.align_corners, f.concat))


triplane_to_graph.uses_template = True  # to_graph leaves the checks to the template path (graphs.mlp)
