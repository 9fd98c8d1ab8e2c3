"""What the tracing converter (:mod:`graphs.traced`) knows about the torch calls it meets: which
are activations, scalar arithmetic, feature routing or no-ops, and the state it keeps per value."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Optional

import torch
import torch.fx as fx
import torch.nn.functional as F

from .trace_record import leaf_activation

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

