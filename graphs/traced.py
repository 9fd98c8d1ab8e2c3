"""Tracing converter: an MLP-like ``nn.Module`` of any shape -> :class:`ParameterGraph`.

``trace_to_graph(module)`` traces ``module.forward`` with ``torch.fx`` and places what it finds
in the graph where the tensor flows (Lim et al.'s ``arch_to_graph`` covers the same ground):

* ``nn.Linear`` / ``F.linear`` (also weight-normalised, old hook style ``weight_g``/``weight_v``
  or ``torch.nn.utils.parametrizations.weight_norm``): a neuron per output, the edge ``i -> o``
  holding ``W[o, i]`` (weight norm: the unit direction ``v[o, i] / |v[o]|``, plus the gain
  ``g[o]`` on an edge from one GAIN node per layer), a bias node per layer;
* elementwise activations (modules or functions: ReLU, sine, tanh, sigmoid, softplus, GELU,
  SiLU, leaky ReLU, ELU), with scalar arithmetic folded in when an activation follows it
  (SIREN's ``sin(w0 * x)``): the activation code goes on the neurons and their incoming edges;
* ``nn.LayerNorm``: a normalised copy of each neuron, ``gamma[i]`` on the edge from neuron
  ``i`` to its copy (NORM_SCALE; 1 without affine), ``beta`` from a bias node;
* concatenations, splits, chunks and slices along the feature dimension (skip connections such
  as DeepSDF's re-fed input, NeRF's view-direction branch): no new nodes, the next layer's
  edges start from the neurons the tensor came from;
* ``a + b`` of a fresh pre-activation and another tensor (residual): edges of value 1 (RESIDUAL);
* several outputs (a tuple, list or dict of tensors, or ``torch.cat`` of heads): every output
  neuron is an OUTPUT node, numbered in the order they are returned;
* dropout and identity are the identity (the module is traced in eval mode).

Every parameter lies on exactly one edge; a parameter the forward does not use, a module called
twice (shared weights) or any other operation on a tensor computed from the input raises
:class:`TraceError` naming the operation (and the source line when fx recorded it).

Probe features come from the traced forward itself: the fx graph is run on the probe points
(``graphs.probe``), and each neuron's row is its value there (after its activation). Input
columns: ``xyz_columns`` (default the first three, or ``module.gmn_xyz_columns``) hold x, y, z
at the probe points, the other inputs 0 -- unless the module has ``gmn_probe_inputs(points)``
returning its inputs at the points (e.g. their positional encoding). A module may also set
``gmn_input_dims`` (the width of each forward input) when the first layer does not tell.
"""
from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import layout as L
from .graph import GraphBuilder, GraphError, ParameterGraph, edge_features, node_features
from .mlp import activation_name, add_linear
from .probe import probe_points


class TraceError(GraphError):
    """A module that tracing cannot turn into a parameter graph; the message names the operation."""


_ACT_FUNCTIONS = {torch.relu: "relu", F.relu: "relu", torch.sin: "sine", torch.tanh: "tanh", F.tanh: "tanh",
                  torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.softplus: "softplus", F.gelu: "gelu",
                  F.silu: "silu", F.leaky_relu: "leaky_relu", F.elu: "elu"}
_ACT_METHODS = {"relu": "relu", "sin": "sine", "tanh": "tanh", "sigmoid": "sigmoid"}
_SCALAR_FUNCTIONS = {operator.mul, operator.truediv, operator.add, operator.sub, operator.neg, torch.mul, torch.add,
                     torch.sub, torch.div}
_SCALAR_METHODS = {"mul", "div", "add", "sub", "neg"}
_ROUTING_FUNCTIONS = {torch.cat, torch.concat, torch.split, torch.chunk, torch.narrow, operator.getitem}
_ROUTING_METHODS = {"split", "chunk", "narrow", "contiguous"}
_PASS_FUNCTIONS = {F.dropout}
_META_METHODS = {"size", "dim"}


class _Tracer(fx.Tracer):
    """Linear, LayerNorm, dropout and activation modules stay whole (call_module nodes)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Linear, nn.LayerNorm, nn.Dropout)) or activation_name(m) is not None:
            return True
        return super().is_leaf_module(m, qualname)


@dataclass
class _Neurons:
    """A tensor computed from the input: the graph node of each of its last-dimension columns."""

    ids: torch.Tensor          # [n] long
    fresh: bool = False        # made by a linear / norm / residual, no activation applied yet
    pending: bool = False      # a scalar op was folded in: an activation must follow


@dataclass
class _Const:
    """A parameter used as a tensor (e.g. an auto-decoder's latent code concatenated to xyz)."""

    name: str
    value: torch.Tensor


def _describe(node: fx.Node) -> str:
    tgt = node.target
    name = tgt if isinstance(tgt, str) else getattr(tgt, "__qualname__", None) or getattr(tgt, "__name__", repr(tgt))
    where = ""
    if node.stack_trace:                         # the last frame outside torch: the user's line
        lines = [ln.strip() for ln in node.stack_trace.strip().splitlines() if ln.strip()]
        frames = [(a, b) for a, b in zip(lines, lines[1:] + [""]) if a.startswith("File ")
                  and f"{os.sep}torch{os.sep}" not in a]
        if frames:
            where = f" at {frames[-1][0]}: {frames[-1][1]}"
    return f"{node.op} {name!s} (fx node {node.name}){where}"


class _Converter:
    def __init__(self, module: nn.Module, xyz_columns: Optional[Sequence[int]], in_dims: Optional[Sequence[int]]):
        self.module = module
        self.xyz_columns = xyz_columns
        self.in_dims = list(in_dims) if in_dims is not None else None
        self.b = GraphBuilder()
        self.layer: list[torch.Tensor] = []            # layer of every node, in blocks
        self.acts: list[tuple[torch.Tensor, str]] = []  # (neuron ids, activation) in order
        self.probes: list[tuple[torch.Tensor, torch.Tensor]] = []  # (ids, rows [n, K]) in order
        self.used_params: dict[str, str] = {}            # parameter name -> the fx node that placed it
        self.called: set[str] = set()
        self.S: dict[fx.Node, Any] = {}                  # structure of each fx node's value
        self.V: dict[fx.Node, Any] = {}                  # its value at the probe points

    # -- tracing and running ------------------------------------------------------------
    def trace(self) -> fx.GraphModule:
        tracer = _Tracer()
        tracer.record_stack_traces = True
        try:
            graph = tracer.trace(self.module)
            gm = fx.GraphModule(tracer.root, graph)
        except Exception as exc:  # fx raises many types: data-dependent control flow, proxies in C code, ...
            raise TraceError(f"torch.fx cannot trace {type(self.module).__name__}.forward: "
                             f"{type(exc).__name__}: {exc}") from None
        gm.graph.eliminate_dead_code()
        gm.recompile()
        return gm

    def _input_dims(self, placeholders: list[fx.Node]) -> list[int]:
        if self.in_dims is not None:
            if len(self.in_dims) != len(placeholders):
                raise TraceError(f"in_dims has {len(self.in_dims)} entries, forward takes {len(placeholders)} inputs")
            return self.in_dims
        hint = getattr(self.module, "gmn_input_dims", None)
        if hint is not None and len(hint) == len(placeholders):
            return list(hint)
        dims = []
        for p in placeholders:
            d = None
            for u in p.users:
                if u.op == "call_module":
                    m = self.gm.get_submodule(u.target)
                    if isinstance(m, nn.Linear):
                        d = m.in_features
                    elif isinstance(m, nn.LayerNorm):
                        d = int(m.normalized_shape[-1])
                elif u.op in ("call_function", "call_method") and u.target in (torch.split, "split"):
                    sizes = u.args[1] if len(u.args) > 1 else u.kwargs.get("split_size_or_sections")
                    if isinstance(sizes, (list, tuple)):
                        d = int(sum(sizes))
                if d is not None:
                    break
            if d is None:
                raise TraceError(f"cannot tell the width of input {p.name!r} of {type(self.module).__name__} "
                                 "(it does not feed a Linear, LayerNorm or split directly): pass in_dims=[...]")
            dims.append(d)
        return dims

    def _probe_inputs(self, dims: list[int]) -> list[torch.Tensor]:
        pts = probe_points()
        cols = self.xyz_columns if self.xyz_columns is not None else getattr(self.module, "gmn_xyz_columns", None)
        if cols is None:
            cols = tuple(range(min(3, dims[0]))) if dims else ()
        cols = [c % dims[0] for c in cols]
        if len(cols) > 3 or len(set(cols)) != len(cols):
            raise TraceError(f"xyz_columns must name at most three distinct input columns, got {cols}")
        self.cols = cols
        hook = getattr(self.module, "gmn_probe_inputs", None)
        if callable(hook):                       # the module knows its inputs at xyz (e.g. an encoding)
            xs = [torch.as_tensor(x).float() for x in hook(pts)]
            if [tuple(x.shape) for x in xs] != [(pts.shape[0], d) for d in dims]:
                raise TraceError(f"gmn_probe_inputs gave shapes {[tuple(x.shape) for x in xs]}, want "
                                 f"{[(pts.shape[0], d) for d in dims]}")
            return xs
        xs = [torch.zeros(pts.shape[0], d) for d in dims]
        if dims:
            xs[0][:, cols] = pts[:, :len(cols)]
        return xs

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

    def _neurons_arg(self, node: fx.Node, arg, what: str) -> _Neurons:
        s = self.S.get(arg) if isinstance(arg, fx.Node) else None
        if not isinstance(s, _Neurons):
            raise TraceError(f"{_describe(node)}: its {what} is not a tensor computed from the input")
        if s.pending:
            raise TraceError(f"{_describe(node)}: follows a scalar operation that only an activation may follow")
        return s

    def _can_modify(self, node: fx.Node, arg: fx.Node) -> bool:
        s = self.S.get(arg)
        return isinstance(s, _Neurons) and s.fresh and len(arg.users) == 1

    def linear(self, node: fx.Node, x: _Neurons, weight: torch.Tensor, bias: Optional[torch.Tensor],
               gain: Optional[torch.Tensor], names: list[str]) -> _Neurons:
        for n in names:
            self._use_param(n, node)
        layer = self._layer_of(x.ids) + 1
        first = self.b.num_nodes
        ids, bias_ids = add_linear(self.b, x.ids, weight.detach(), None if bias is None else bias.detach(),
                                   layer=layer, what=_describe(node))
        self.layer.append(torch.full((self.b.num_nodes - first,), layer, dtype=torch.long))
        if bias_ids is not None:
            self._ones(bias_ids)
        if gain is not None:
            g = self._add_nodes(node_features(1, L.NodeType.GAIN, layer=layer), layer)
            self.b.add_edges(g.expand(ids.shape[0]), ids,
                             edge_features(gain.detach().reshape(-1), L.EdgeType.GAIN, layer=layer))
            self._ones(g)
        self._probe(ids, self.V[node], node)
        return _Neurons(ids, fresh=True)

    def layer_norm(self, node: fx.Node, x: _Neurons, m: nn.LayerNorm, prefix: str) -> _Neurons:
        n = x.ids.shape[0]
        if tuple(m.normalized_shape) != (n,):
            raise TraceError(f"{_describe(node)}: LayerNorm over {tuple(m.normalized_shape)}, the tensor has {n} features")
        layer = self._layer_of(x.ids) + 1
        ids = self._add_nodes(node_features(n, L.NodeType.HIDDEN, layer=layer), layer)
        gamma = m.weight.detach() if m.weight is not None else torch.ones(n)
        self.b.add_edges(x.ids, ids, edge_features(gamma, L.EdgeType.NORM_SCALE, layer=layer))
        if m.weight is not None:
            self._use_param(f"{prefix}weight", node)
        if m.bias is not None:
            self._use_param(f"{prefix}bias", node)
            bn = self._add_nodes(node_features(1, L.NodeType.BIAS, layer=layer), layer)
            self.b.add_edges(bn.expand(n), ids, edge_features(m.bias.detach(), L.EdgeType.BIAS, layer=layer))
            self._ones(bn)
        self._probe(ids, self.V[node], node)
        return _Neurons(ids, fresh=True)

    def activation(self, node: fx.Node, arg: fx.Node, name: str) -> _Neurons:
        s = self.S.get(arg)
        if not isinstance(s, _Neurons):
            raise TraceError(f"{_describe(node)}: activation {name!r} of a tensor not computed from the input")
        if not self._can_modify(node, arg):
            raise TraceError(f"{_describe(node)}: activation {name!r} applied to a tensor that is not the fresh output "
                             "of one linear layer (an input encoding, a second activation, or a tensor also used "
                             "elsewhere before its activation)")
        self.acts.append((s.ids, name))
        self._probe(s.ids, self.V[node], node)
        return _Neurons(s.ids)

    def scalar(self, node: fx.Node, args: list) -> _Neurons:
        tensors = [a for a in args if isinstance(a, fx.Node)]
        if len(tensors) != 1 or not all(isinstance(a, (int, float)) for a in args if not isinstance(a, fx.Node)):
            raise TraceError(f"{_describe(node)}: arithmetic between tensors (or with a tensor constant) is not placed; "
                             "only a scalar folded into a following activation, or a residual `x + f(x)`")
        arg = tensors[0]
        users = list(node.users)
        if not self._can_modify(node, arg) or len(users) != 1 or self._activation_name(users[0]) is None:
            raise TraceError(f"{_describe(node)}: a scalar operation is placed only between a linear layer and its "
                             "activation (e.g. SIREN's sin(w0 * x))")
        return _Neurons(self.S[arg].ids, fresh=True, pending=True)

    def residual(self, node: fx.Node, a: fx.Node, b: fx.Node) -> _Neurons:
        sa, sb = self.S.get(a), self.S.get(b)
        if not (isinstance(sa, _Neurons) and isinstance(sb, _Neurons)):
            raise TraceError(f"{_describe(node)}: adds a tensor not computed from the input (a parameter or constant)")
        if not self._can_modify(node, a):
            a, b, sa, sb = b, a, sb, sa
            if not self._can_modify(node, a):
                raise TraceError(f"{_describe(node)}: a residual sum needs one side to be the fresh output of a "
                                 "linear layer used nowhere else")
        if sa.ids.shape != sb.ids.shape or sb.pending:
            raise TraceError(f"{_describe(node)}: residual of {sa.ids.numel()} and {sb.ids.numel()} features")
        layer = self._layer_of(sa.ids)
        self.b.add_edges(sb.ids, sa.ids, edge_features(torch.ones(sa.ids.shape[0]), L.EdgeType.RESIDUAL, layer=layer))
        self._probe(sa.ids, self.V[node], node)
        return _Neurons(sa.ids, fresh=True)

    def constant(self, node: fx.Node, arg: fx.Node, c: _Const) -> _Neurons:
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
        s = _Neurons(ids)
        self.S[arg] = s
        return s

    def route(self, node: fx.Node) -> Any:
        """cat / split / chunk / slice along the features: run the op on id trackers (each column holds
        its neuron id) and read which neuron every output column is."""
        bad = []

        def tracker(a):
            if isinstance(a, fx.Node):
                s = self.S.get(a)
                if isinstance(s, _Const):
                    s = self.constant(node, a, s)
                if isinstance(s, _Neurons):
                    if s.pending:
                        bad.append(a)
                    return s.ids.double().expand(self.V[a].shape)
                if isinstance(s, tuple):
                    return tuple(tracker_of(x, v) for x, v in zip(s, self.V[a]))
                if isinstance(self.V[a], torch.Tensor):
                    bad.append(a)
                return self.V[a]
            return a

        def tracker_of(s, v):
            return s.ids.double().expand(v.shape) if isinstance(s, _Neurons) else v

        args = fx.node.map_aggregate(node.args, tracker)
        kwargs = fx.node.map_aggregate(node.kwargs, tracker)
        if bad:
            raise TraceError(f"{_describe(node)}: combines {', '.join(b.name for b in bad)}, a tensor not computed from "
                             "the input (a parameter, buffer or constant) or an unfinished scalar op")
        out = getattr(args[0], node.target)(*args[1:], **kwargs) if node.op == "call_method" else node.target(*args, **kwargs)

        def read(t, v):
            if not isinstance(t, torch.Tensor):
                return t
            if t.shape != v.shape or t.ndim == 0:
                raise TraceError(f"{_describe(node)}: does not keep the features in the last dimension")
            rows = t.reshape(-1, t.shape[-1])
            if not torch.equal(rows, rows[:1].expand_as(rows)):
                raise TraceError(f"{_describe(node)}: mixes the batch and feature dimensions")
            return _Neurons(rows[0].long())

        if isinstance(out, (tuple, list)):
            return tuple(read(t, v) for t, v in zip(out, self.V[node]))
        return read(out, self.V[node])

    # -- dispatch -------------------------------------------------------------------------
    def _activation_name(self, node: fx.Node) -> Optional[str]:
        if node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            if isinstance(m, nn.Identity):
                return None
            return activation_name(m)
        if node.op == "call_function":
            return _ACT_FUNCTIONS.get(node.target)
        if node.op == "call_method":
            return _ACT_METHODS.get(node.target)
        return None

    def _touches_neurons(self, node: fx.Node) -> bool:
        found = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(a) or a)
        return any(self.S.get(a) is not None for a in found)

    def visit(self, node: fx.Node) -> Any:
        op, tgt = node.op, node.target
        if op == "placeholder":
            return self.S[node]
        if op == "get_attr":
            try:
                return _Const(tgt, self.gm.get_parameter(tgt))   # placed where it is concatenated
            except AttributeError:
                return None                                      # a buffer: refused where it meets a neuron
        if (op == "call_method" and tgt in ("expand", "expand_as", "reshape", "view", "unsqueeze")
                and isinstance(self.S.get(node.args[0]), _Const)):
            return self.S[node.args[0]]
        if op == "call_module":
            m = self.gm.get_submodule(tgt)
            if tgt in self.called and any(True for _ in m.parameters()):
                raise TraceError(f"{_describe(node)}: module {tgt!r} is called twice (shared weights)")
            self.called.add(tgt)
            if isinstance(m, nn.Linear):
                return self._linear_module(node, m, tgt)
            if isinstance(m, nn.LayerNorm):
                return self.layer_norm(node, self._neurons_arg(node, node.args[0], "input"), m, f"{tgt}.")
            if isinstance(m, (nn.Dropout, nn.Identity)):
                return self._pass(node, node.args[0])
            name = activation_name(m)
            if name is not None:
                if any(True for _ in m.parameters()):
                    raise TraceError(f"{_describe(node)}: activation module {type(m).__name__} has parameters")
                return self.activation(node, node.args[0], name)
            if not self._touches_neurons(node):
                return None
            raise TraceError(f"{_describe(node)}: {type(m).__name__} is not a Linear, LayerNorm or elementwise "
                             "activation; register a converter for it")
        if op == "output":
            return None
        # call_function / call_method
        if not self._touches_neurons(node):
            if tgt in (F.linear, F.layer_norm):
                raise TraceError(f"{_describe(node)}: applied to a tensor not computed from the input")
            return None
        if op == "call_function" and tgt is getattr and node.args[1] in ("shape", "dtype", "device", "ndim"):
            return None
        if op == "call_method" and tgt in _META_METHODS:
            return None
        if tgt is F.linear:
            return self._linear_function(node)
        name = self._activation_name(node)
        if name is not None:
            return self.activation(node, node.args[0], name)
        if tgt in _PASS_FUNCTIONS:
            return self._pass(node, node.args[0])
        if (op == "call_function" and tgt in (operator.add, torch.add) or op == "call_method" and tgt == "add") and \
                sum(isinstance(self.S.get(a), _Neurons) for a in node.args if isinstance(a, fx.Node)) == 2:
            return self.residual(node, node.args[0], node.args[1])
        if (op == "call_function" and tgt in _SCALAR_FUNCTIONS) or (op == "call_method" and tgt in _SCALAR_METHODS):
            return self.scalar(node, list(node.args))
        if (op == "call_function" and tgt in _ROUTING_FUNCTIONS) or (op == "call_method" and tgt in _ROUTING_METHODS):
            return self.route(node)
        raise TraceError(f"{_describe(node)}: this operation cannot be placed in a parameter graph (supported: Linear, "
                         "elementwise activations, LayerNorm, weight norm, concatenation / split / slicing of "
                         "features, residual sums); register a converter for this module type")

    def _pass(self, node: fx.Node, arg) -> Any:
        s = self.S.get(arg)
        if isinstance(s, _Neurons):
            return _Neurons(s.ids, fresh=s.fresh and len(arg.users) == 1, pending=s.pending)
        return s

    def _linear_module(self, node: fx.Node, m: nn.Linear, prefix: str) -> _Neurons:
        x = self._neurons_arg(node, node.args[0], "input")
        names = [f"{prefix}.{n}" for n, _ in m.named_parameters()]
        bias = m.bias
        params = dict(m.named_parameters())
        if "weight_g" in params and "weight_v" in params:                      # nn.utils.weight_norm (hooks)
            g, v, dim = params["weight_g"], params["weight_v"], _hook_dim(m)
        elif "parametrizations.weight.original0" in params:                   # parametrizations.weight_norm
            g, v = params["parametrizations.weight.original0"], params["parametrizations.weight.original1"]
            dim = getattr(m.parametrizations.weight[0], "dim", 0)
        elif "weight" in params:
            return self.linear(node, x, m.weight, bias, None, names)
        else:
            raise TraceError(f"{_describe(node)}: Linear {prefix!r} holds parameters {sorted(params)}; only plain "
                             "weights and weight norm are understood")
        if dim != 0 or g.numel() != v.shape[0]:
            raise TraceError(f"{_describe(node)}: weight norm over dim {dim}; only the default dim=0 (one gain per "
                             "output neuron) is placed")
        direction = v / v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.ndim - 1)))
        return self.linear(node, x, direction, bias, g, names)

    def _linear_function(self, node: fx.Node) -> _Neurons:
        args = list(node.args) + [None] * (3 - len(node.args))
        x = self._neurons_arg(node, args[0], "input")
        w = node.kwargs.get("weight", args[1])
        b = node.kwargs.get("bias", args[2])
        tensors, names = [], []
        for a in (w, b):
            if a is None:
                tensors.append(None)
                continue
            if not (isinstance(a, fx.Node) and a.op == "get_attr"):
                raise TraceError(f"{_describe(node)}: F.linear with a weight that is not a parameter of the module")
            tensors.append(self.gm.get_parameter(a.target))
            names.append(a.target)
        return self.linear(node, x, tensors[0], tensors[1], None, names)

    # -- the whole module -----------------------------------------------------------------
    def convert(self, name: str) -> ParameterGraph:
        self.gm = self.trace()
        nodes = list(self.gm.graph.nodes)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        dims = self._input_dims(placeholders)
        inputs = self._probe_inputs(dims)
        self.K = inputs[0].shape[0] if inputs else probe_points().shape[0]

        class _Recorder(fx.Interpreter):
            def run_node(inner, n):
                out = super().run_node(n)
                self.V[n] = out
                return out

        try:
            with torch.no_grad():
                _Recorder(self.gm, garbage_collect_values=False).run(*inputs)
        except Exception as exc:
            raise TraceError(f"running the traced {type(self.module).__name__} on the probe points failed "
                             f"(input widths {dims}): {type(exc).__name__}: {exc}") from None
        for i, (p, d) in enumerate(zip(placeholders, dims)):
            pos = torch.zeros(d, 3)
            if i == 0:
                pos[torch.tensor(self.cols, dtype=torch.long), torch.arange(len(self.cols))] = 1.0
            ids = self._add_nodes(node_features(d, L.NodeType.INPUT, layer=0, pos=pos), 0)
            self.S[p] = _Neurons(ids)
            self._probe(ids, self.V[p], p)
        for node in nodes:
            self.S[node] = self.visit(node)
        out_node = next(n for n in nodes if n.op == "output")
        outs: list[_Neurons] = []

        def collect(a):
            if isinstance(a, fx.Node):
                s = self.S.get(a)
                if isinstance(s, _Neurons) and not s.pending:
                    outs.append(s)
                elif isinstance(s, tuple):
                    outs.extend(x for x in s if isinstance(x, _Neurons))
                else:
                    raise TraceError(f"output {a.name} of {type(self.module).__name__} is not a tensor computed "
                                     "from the input by placeable operations")
            return a

        fx.node.map_aggregate(out_node.args[0], collect)
        if not outs:
            raise TraceError(f"{type(self.module).__name__}.forward returns nothing computed from its input")
        unused = [n for n, _ in self.module.named_parameters() if n not in self.used_params]
        if unused:
            raise TraceError(f"parameters {unused[:5]} of {type(self.module).__name__} are not used by its forward "
                             "(or only by operations that hold no neuron): each parameter must lie on one edge")
        return self._finish(torch.cat([o.ids for o in outs]), name)

    def _finish(self, out_ids: torch.Tensor, name: str) -> ParameterGraph:
        g = self.b.build(None, name)
        if torch.unique(out_ids).numel() != out_ids.numel():
            raise TraceError("a neuron is returned twice among the outputs")
        types = g.x[out_ids, L.N_TYPE]
        if bool((types == L.NodeType.INPUT).any()):
            raise TraceError("an input is returned unchanged among the outputs")
        g.x[out_ids, L.N_TYPE] = float(L.NodeType.OUTPUT)
        g.x[out_ids, L.N_OUT] = torch.arange(out_ids.numel(), dtype=torch.float32) / L.OUT_SCALE
        code = torch.zeros(g.num_nodes)
        for ids, act in self.acts:
            code[ids] = float(L.ACTIVATIONS[act])
        neuron = (g.x[:, L.N_TYPE] == L.NodeType.HIDDEN) | (g.x[:, L.N_TYPE] == L.NodeType.OUTPUT)
        g.x[:, L.N_ACT] = torch.where(neuron, code / L.ACT_SCALE, g.x[:, L.N_ACT])
        g.edge_attr[:, L.E_ACT] = code[g.edge_index[1]] / L.ACT_SCALE
        probe = torch.zeros(g.num_nodes, self.K)
        has = torch.zeros(g.num_nodes, dtype=torch.bool)
        for ids, rows in self.probes:           # later rows (after an activation) overwrite earlier ones
            probe[ids] = rows
            has[ids] = True
        g.probe_index = has.nonzero().squeeze(1)
        g.probe = probe[g.probe_index]
        return g


def _hook_dim(m: nn.Module) -> int:
    for hook in m._forward_pre_hooks.values():
        if type(hook).__name__ == "WeightNorm":
            return hook.dim
    return 0


def trace_to_graph(module: nn.Module, xyz_columns: Optional[Sequence[int]] = None,
                   in_dims: Optional[Sequence[int]] = None, name: Optional[str] = None) -> ParameterGraph:
    """The parameter graph of an MLP-like ``module`` found by tracing its forward (see the module
    docstring for what is placed where). ``xyz_columns``: which columns of the first input are x, y,
    z (default ``module.gmn_xyz_columns`` or the first three); ``in_dims``: the width of each forward
    input when it cannot be read off the first layer. Raises :class:`TraceError` naming the first
    operation it cannot place. The module is traced in eval mode (dropout off) and left as it was."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"trace_to_graph takes an nn.Module, got {type(module).__name__}")
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            return _Converter(module, xyz_columns, in_dims).convert(name or type(module).__name__).validate()
    finally:
        module.train(was)
