"""What the tracing converter (:mod:`graphs.traced`) knows about the torch calls it meets: which
are activations, scalar arithmetic, feature routing or no-ops, and the state it keeps per value."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import layout as L
from .graph import GraphBuilder, edge_features, node_features
from .probe import probe_points

from .trace_record import Recording, TraceError, describe as _describe, leaf_activation

ACT_FUNCTIONS = {torch.relu: "relu", F.relu: "relu", torch.sin: "sine", torch.tanh: "tanh", F.tanh: "tanh",
                 torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.softplus: "softplus", F.gelu: "gelu",
                 F.silu: "silu", F.leaky_relu: "leaky_relu", F.elu: "elu"}
ACT_METHODS = {"relu": "relu", "sin": "sine", "tanh": "tanh", "sigmoid": "sigmoid"}
SCALAR_FUNCTIONS = {operator.mul, operator.truediv, operator.add, operator.sub, operator.neg, torch.mul, torch.add,
                    torch.sub, torch.div}
SCALAR_METHODS = {"mul", "div", "add", "sub", "neg", "mul_", "div_", "add_", "sub_", "__rsub__", "__radd__",
                  "__rmul__", "__truediv__"}
ADD = {("call_function", operator.add), ("call_function", torch.add), ("call_method", "add"),
       ("call_method", "add_"), ("call_method", "__radd__")}
ROUTING_FUNCTIONS = {torch.cat, torch.concat, torch.split, torch.chunk, torch.narrow, operator.getitem}
ROUTING_METHODS = {"split", "chunk", "narrow", "__getitem__"}
#: no-ops on a value (dropout is off: the module is traced in eval mode)
PASS_FUNCTIONS = {F.dropout, torch.clone, torch.detach}
PASS_METHODS = {"clone", "detach", "requires_grad_", "contiguous", "float", "to", "type_as", "cpu", "detach_"}
#: rearrangements of a parameter used as a tensor (a weight transposed for matmul, a bias unsqueezed)
CONST_VIEWS = {"reshape", "view", "unsqueeze", "squeeze", "permute", "transpose", "t", "T", "mT", "contiguous",
               "clone", "detach", "float", "to", "flatten"}
CONST_BROADCASTS = {"expand", "expand_as", "repeat"}
MATMUL = {("call_function", torch.matmul), ("call_method", "matmul"), ("call_method", "__matmul__"),
          ("call_function", operator.matmul)}


@dataclass
class Neurons:
    """A tensor computed from the input: the graph node of each of its last-dimension columns."""

    ids: torch.Tensor          # [n] long
    fresh: bool = False        # made by a linear / norm / residual, no activation applied yet
    pending: bool = False      # a scalar op was folded in: an activation must follow
    coord: bool = False        # the input itself (or a routing of it): x, y, z and other inputs


@dataclass
class Coord:
    """A function of the inputs alone with no parameter (an encoding, ``(x + 1) / 2``): it becomes
    input nodes holding its values where a layer reads it."""


@dataclass
class Const:
    """A parameter used as a tensor (a latent code concatenated to xyz, a weight given to matmul)."""

    name: str
    value: torch.Tensor


@dataclass
class WeightNorm:
    """``torch._weight_norm(v, g, dim)`` of two parameters: a weight-normalised matrix."""

    v: Const
    g: Const
    dim: int


def activation_of(node: fx.Node) -> Optional[str]:
    """The activation a recorded call applies, or None."""
    if node.op == "call_function":
        if node.target is leaf_activation:
            return node.args[1]
        return ACT_FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return ACT_METHODS.get(str(node.target).rstrip("_"))
    return None


def op_in(node: fx.Node, functions: set, methods: set) -> bool:
    return (node.op == "call_function" and node.target in functions) or (node.op == "call_method" and
                                                                          node.target in methods)



class GraphState:
    """The graph being built from a recording, and the pieces every placed operation adds."""

    def __init__(self, module: nn.Module, rec: Recording, cols: list[int]):
        self.module, self.rec, self.V, self.cols = module, rec, rec.values, cols
        self.params = dict(module.named_parameters())
        self.b = GraphBuilder()
        self.layer: list[torch.Tensor] = []             # layer of every node, in blocks
        self.acts: list[tuple[torch.Tensor, str]] = []  # (neuron ids, activation) in order
        self.probes: list[tuple[torch.Tensor, torch.Tensor]] = []  # (ids, rows [n, K]) in order
        self.used_params: dict[str, str] = {}
        self.S: dict[fx.Node, Any] = {}                 # what each recorded value is in the graph
        self.pts = probe_points()
        self.K = self.pts.shape[0]

    # -- graph pieces ---------------------------------------------------------------------
    def _add_nodes(self, feats: torch.Tensor, layer: int) -> torch.Tensor:
        ids = self.b.add_nodes(feats)
        self.layer.append(torch.full((feats.shape[0],), layer, dtype=torch.long))
        return ids

    def _layer_of(self, ids: torch.Tensor) -> int:
        return int(torch.cat(self.layer)[ids].max()) if ids.numel() else 0

    def _probe(self, ids: torch.Tensor, value: torch.Tensor, node: fx.Node) -> None:
        rows = value.detach().float().reshape(-1, ids.shape[0])
        if rows.shape[0] != self.K:
            raise TraceError(f"{_describe(node)} changes the batch of probe points ({rows.shape[0]} rows, want {self.K})")
        self.probes.append((ids, rows.t()))

    def _ones(self, ids: torch.Tensor) -> None:
        self.probes.append((ids, torch.ones(ids.shape[0], self.K)))

    def _use_param(self, name: str, node: fx.Node) -> None:
        if name in self.used_params:
            raise TraceError(f"parameter {name!r} is used twice ({self.used_params[name]} and {_describe(node)}): "
                             "shared weights cannot lie on one edge each")
        self.used_params[name] = _describe(node)

    def materialise(self, arg: fx.Node) -> Neurons:
        """Input nodes for a function of the inputs (an encoding): their probe rows are its values;
        a column affine in x, y or z (and nothing else) has that axis as its position."""
        v = self.V[arg].detach().float()
        n = v.shape[-1] if v.ndim else 1
        rows = v.reshape(-1, n)
        if rows.shape[0] != self.K:
            raise TraceError(f"{_describe(arg)}: a function of the input with {rows.shape[0]} rows, want {self.K}")
        A = torch.cat([self.pts, torch.ones(self.K, 1)], 1).double()
        pos = torch.zeros(n, 3)
        for axis in range(3):        # three least-squares fits, each over all columns at once
            X = A[:, [axis, 3]]
            coef = torch.linalg.lstsq(X, rows.double()).solution
            resid = (X @ coef - rows.double()).abs().amax(0)
            hit = (resid <= 1e-5 * (1 + rows.double().abs().amax(0))) & (coef[0].abs() > 1e-6)
            pos[hit, axis] = 1.0
        pos[pos.sum(1) > 1] = 0.0
        ids = self._add_nodes(node_features(n, L.NodeType.INPUT, layer=0, pos=pos), 0)
        self.probes.append((ids, rows.t()))
        s = Neurons(ids, coord=True)
        self.S[arg] = s
        return s

    def constant(self, node: fx.Node, arg: fx.Node, c: Const) -> Neurons:
        """A parameter vector fed to the network beside the input: one INPUT node per entry, each with
        an edge from a bias node holding its value (so the value lies on one edge)."""
        v = c.value.detach()
        n = v.shape[-1]
        if v.numel() != n:
            raise TraceError(f"{_describe(node)}: parameter {c.name!r} of shape {tuple(v.shape)} enters as a tensor; "
                             "only a vector (a latent code) can be placed")
        self._use_param(c.name, node)
        ids = self._add_nodes(node_features(n, L.NodeType.INPUT, layer=0), 0)
        bn = self._add_nodes(node_features(1, L.NodeType.BIAS, layer=0), 0)
        self.b.add_edges(bn.expand(n), ids, edge_features(v.reshape(-1), L.EdgeType.BIAS, layer=0))
        self._ones(bn)
        self.probes.append((ids, v.reshape(-1, 1).float().expand(n, self.K)))
        s = Neurons(ids)
        self.S[arg] = s
        return s

