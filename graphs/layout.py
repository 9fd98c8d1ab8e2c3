"""The one feature layout shared by every parameter graph.

Every converter writes node features ``x [N, NODE_DIM]`` and edge features
``edge_attr [E, EDGE_DIM]`` with the columns below, so one encoder reads all
architecture families. Columns a node or edge does not use hold 0. Every column
is a float already scaled to roughly [-1, 1] (integers such as layer, level or
entry index are divided by a fixed constant), except the two ``*_TYPE`` columns,
which hold small integer codes (< 16) meant for an embedding table.

Node features (``x``)
=====================
=====  ============  ==========================================================
col    name          meaning
=====  ============  ==========================================================
0      N_TYPE        :class:`NodeType` code
1      N_LAYER       MLP layer index / LAYER_SCALE (0 = MLP inputs); grid
                     storage nodes (plane cells, hash entries, octree vertices)
                     use -1 / LAYER_SCALE
2      N_OUT         output neurons: channel index / OUT_SCALE (r,g,b,sigma =
                     0,1,2,3); else 0
3-5    N_POS         xyz in [-1,1]: the position of a plane cell, dense hash
                     entry or octree vertex; for an input neuron, the unit
                     vector of the coordinate it encodes; else 0
6      N_FREQ        input neurons of a frequency encoding: log2(freq) /
                     FREQ_SCALE; else 0
7      N_PHASE       input neurons: 0 raw coordinate, 0.5 sin, 1 cos; else 0
8      N_LEVEL       grid nodes: log2(grid resolution) / LEVEL_SCALE
9      N_ACT         neurons: code of the activation applied at that neuron
                     (:data:`ACTIVATIONS`) / ACT_SCALE; else 0
=====  ============  ==========================================================

Edge features (``edge_attr``)
=============================
=====  ============  ==========================================================
col    name          meaning
=====  ============  ==========================================================
0      E_VALUE       the parameter itself (weight, bias or grid feature),
                     unscaled: each parameter appears on exactly one edge
1      E_LAYER       layer index of the target node / LAYER_SCALE
2      E_TYPE        :class:`EdgeType` code
3-5    E_POS         xyz in [-1,1] of the grid cell / entry / vertex holding the
                     value (dense levels and planes only); else 0
6      E_LEVEL       grid edges: log2(grid resolution) / LEVEL_SCALE
7      E_ENTRY       hash edges: entry index / table size (in [0, 1)); else 0
8      E_ACT         weight and bias edges: activation code of the target
                     neuron / ACT_SCALE; else 0
=====  ============  ==========================================================

Edges are directed from the input side to the output side: a weight ``W[o, i]``
of a linear layer is the edge ``i -> o``; a grid storage node points to its
channel nodes, which are inputs of the MLP.
"""
from __future__ import annotations

from enum import IntEnum

NODE_DIM = 10
EDGE_DIM = 9

N_TYPE, N_LAYER, N_OUT = 0, 1, 2
N_POS = slice(3, 6)
N_FREQ, N_PHASE, N_LEVEL, N_ACT = 6, 7, 8, 9

E_VALUE, E_LAYER, E_TYPE = 0, 1, 2
E_POS = slice(3, 6)
E_LEVEL, E_ENTRY, E_ACT = 6, 7, 8

LAYER_SCALE = 8.0
OUT_SCALE = 4.0
FREQ_SCALE = 32.0
LEVEL_SCALE = 16.0
ACT_SCALE = 4.0

#: activation codes; the code 0 is kept for "linear" (no activation)
ACTIVATIONS = {"identity": 0, "relu": 1, "sine": 2, "softplus": 3, "tanh": 4, "sigmoid": 5,
               "gelu": 6, "silu": 7, "leaky_relu": 8, "elu": 9}


class NodeType(IntEnum):
    INPUT = 0          #: an MLP input neuron fed by the coordinates (raw or encoded)
    HIDDEN = 1
    OUTPUT = 2
    BIAS = 3
    GRID_CHANNEL = 4   #: a channel of a grid (plane/hash level/octree): an MLP input
    PLANE_CELL = 5
    HASH_ENTRY_DENSE = 6
    HASH_ENTRY_HASHED = 7
    OCTREE_VERTEX = 8
    VOXEL_CELL = 9     #: spare code for user grids (dense voxel grids, K-planes, ...)
    GAIN = 10          #: a weight-normalised layer's gain node (one per layer, like a bias node)


class EdgeType(IntEnum):
    WEIGHT = 0
    BIAS = 1
    PLANE = 2
    HASH = 3
    OCTREE = 4
    VOXEL = 5
    GAIN = 6           #: weight norm: the gain ``g[o]`` of neuron ``o`` (from the layer's gain node)
    NORM_SCALE = 7     #: LayerNorm: ``gamma[i]`` on the edge from neuron ``i`` to its normalised copy
    RESIDUAL = 8       #: an identity skip ``y = f(x) + x``: value 1, from ``x[i]`` to ``y[i]``


NUM_NODE_TYPES = 16
NUM_EDGE_TYPES = 16
