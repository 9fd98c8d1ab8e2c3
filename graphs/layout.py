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

Roles for new families
======================
A converter of a new family describes its nodes by :data:`NODE_ROLES` and its edges by
:data:`EDGE_ROLES` (through :func:`node_type` / :func:`edge_type`, or the helpers of
:mod:`graphs.cells`), never by a raw code: every role maps to a code the built-in families
already emit, so an encoder trained without the new family has trained embedding rows for
every node and edge of its graph. The generic grid storage role ``"cell"`` is the octree
vertex's: a stored feature vector at a 3D position and a resolution level, interpolated
into the grid's channels (a dense voxel grid read with ``align_corners=True`` is exactly a
one-LOD octree with every voxel occupied). A family that truly needs a role no built-in
family has asks :func:`new_node_type` / :func:`new_edge_type` for a free code, knowing
that no trained checkpoint has learned it.
"""
from __future__ import annotations

import warnings
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
#: a radiance field's density output channel (r, g, b, sigma = 0..3): where geometry is read
DENSITY_CHANNEL = 3
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
    OCTREE_VERTEX = 8  #: also the generic grid storage cell of new families (role "cell")
    # 9 is free (it was the voxel example's own code; plug-ins now use the role "cell")
    GAIN = 10          #: a weight-normalised layer's gain node (one per layer, like a bias node)


class EdgeType(IntEnum):
    WEIGHT = 0
    BIAS = 1
    PLANE = 2
    HASH = 3
    OCTREE = 4         #: also the generic "cell -> channel" edge of new families
    # 5 is free (it was the voxel example's own code)
    GAIN = 6           #: weight norm: the gain ``g[o]`` of neuron ``o`` (from the layer's gain node)
    NORM_SCALE = 7     #: LayerNorm: ``gamma[i]`` on the edge from neuron ``i`` to its normalised copy
    RESIDUAL = 8       #: an identity skip ``y = f(x) + x``: value 1, from ``x[i]`` to ``y[i]``


NUM_NODE_TYPES = 16
NUM_EDGE_TYPES = 16

#: generic node roles shared by every family -> the code a converter writes
NODE_ROLES = {
    "input": NodeType.INPUT,          # an MLP input fed by the coordinates (raw or encoded)
    "hidden": NodeType.HIDDEN,
    "output": NodeType.OUTPUT,
    "bias": NodeType.BIAS,
    "channel": NodeType.GRID_CHANNEL,  # a grid channel: an MLP input
    "cell": NodeType.OCTREE_VERTEX,    # grid storage: position, level, feeds channels
}
#: generic edge roles -> code
EDGE_ROLES = {"weight": EdgeType.WEIGHT, "bias": EdgeType.BIAS, "cell": EdgeType.OCTREE}

_extra_node_types: dict[str, int] = {}
_extra_edge_types: dict[str, int] = {}


def output_channel(x):
    """The output channel index (long) of node features ``x [..., NODE_DIM]``, read from ``N_OUT``
    (meaningful for output neurons only)."""
    return (x[..., N_OUT] * OUT_SCALE).round().long()


def node_type(role: str) -> int:
    """The node-type code of a generic role (:data:`NODE_ROLES`) or of one handed out by
    :func:`new_node_type`."""
    if role in NODE_ROLES:
        return int(NODE_ROLES[role])
    if role in _extra_node_types:
        return _extra_node_types[role]
    raise KeyError(f"unknown node role {role!r}; generic roles: {', '.join(NODE_ROLES)}")


def edge_type(role: str) -> int:
    """The edge-type code of a generic role (:data:`EDGE_ROLES`) or of :func:`new_edge_type`."""
    if role in EDGE_ROLES:
        return int(EDGE_ROLES[role])
    if role in _extra_edge_types:
        return _extra_edge_types[role]
    raise KeyError(f"unknown edge role {role!r}; generic roles: {', '.join(EDGE_ROLES)}")


def _new_code(name: str, table: dict, used: set, limit: int, what: str) -> int:
    if name in table:
        return table[name]
    free = [c for c in range(limit) if c not in used and c not in table.values()]
    if not free:
        raise RuntimeError(f"all {limit} {what} codes are taken")
    warnings.warn(f"{what} {name!r} gets the new code {free[0]}: no trained checkpoint has learned it, so an "
                  f"encoder must be trained on graphs that use it (a generic role needs no retraining)",
                  stacklevel=3)
    table[name] = free[0]
    return free[0]


def new_node_type(name: str) -> int:
    """A node-type code no family uses yet, for a role the generic ones cannot describe (the same
    name always gets the same code in a process). Warns: no checkpoint has trained it."""
    return _new_code(name, _extra_node_types, {int(t) for t in NodeType}, NUM_NODE_TYPES, "node type")


def new_edge_type(name: str) -> int:
    """An edge-type code no family uses yet (see :func:`new_node_type`)."""
    return _new_code(name, _extra_edge_types, {int(t) for t in EdgeType}, NUM_EDGE_TYPES, "edge type")
