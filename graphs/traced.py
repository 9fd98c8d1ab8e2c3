"""Tracing converter: an MLP-like ``nn.Module`` of any shape -> :class:`ParameterGraph`.

``trace_to_graph(module)`` runs the forward on the probe points, recording its torch calls
(:mod:`graphs.trace_record`: control flow on shapes and constants specialised, as ``torch.export``
does), and places them where the tensor flows (Lim et al.'s ``arch_to_graph`` covers the same ground):

* ``nn.Linear`` / ``F.linear`` / ``x @ W (+ b)``, plain or weight-normalised (hooks or
  parametrizations): a neuron per output, edge ``i -> o`` holding ``W[o, i]`` (weight norm: the unit
  direction ``v[o, i] / |v[o]|``, the gain ``g[o]`` on an edge from one GAIN node), a bias node;
* elementwise activations, with scalar arithmetic before them folded in (SIREN's ``sin(w0 * x)``);
* ``LayerNorm``: a normalised copy of each neuron (``gamma`` on NORM_SCALE edges, ``beta`` from a bias node);
* concatenation / split / chunk / slicing of features: no new nodes; ``x + f(x)``: RESIDUAL edges of 1;
* a function of the inputs alone (an encoding, ``(x + 1) / 2``, ``clone().detach()``): input nodes
  holding its values where a layer reads it (position x, y or z when affine in one of them);
* several outputs (tuple, list, dict): OUTPUT nodes in the order returned; a returned input
  (SIREN's ``(output, coords)``) is not an output.

Every parameter lies on exactly one edge; an unused or twice-used parameter, or any other operation
on a tensor computed from the input, raises :class:`TraceError` naming the operation and the source
line. Probe rows are the recorded values. Inputs: ``xyz_columns`` of the first input (default the
first three or ``module.gmn_xyz_columns``) hold x, y, z, others 0, unless ``gmn_probe_inputs(points)``
or ``example(points)`` gives them; widths from ``in_dims``, ``gmn_input_dims``, the first
``nn.Linear``, or 3; siren's ``{"coords": x}`` dict is tried last.
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import layout as L
from . import mlp as _mlp
from .graph import ParameterGraph, edge_features, node_features
from .mlp import add_linear
from .trace_ops import (ADD, CONST_BROADCASTS, CONST_VIEWS, MATMUL, PASS_FUNCTIONS, PASS_METHODS, ROUTING_FUNCTIONS,
                        ROUTING_METHODS, SCALAR_FUNCTIONS, SCALAR_METHODS, Const, Coord, GraphState, Neurons, WeightNorm,
                        activation_of, op_in)
from . import trace_grid
from .trace_grid import Grid
from .trace_record import TraceError, describe, record_on_probes

_describe = describe


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(a) or a)
    return found


class _Converter(GraphState):
    def _neurons_arg(self, node: fx.Node, arg, what: str) -> Neurons:
        s = self.S.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(s, Coord):
            s = self.materialise(arg)
        elif isinstance(s, Grid):
            s = trace_grid.place(self, arg)
        if not isinstance(s, Neurons):
            raise TraceError(f"{_describe(node)}: its {what} is not a tensor computed from the input")
        if s.pending:
            raise TraceError(f"{_describe(node)}: follows a scalar operation that only an activation may follow")
        return s

    def _can_modify(self, arg: fx.Node) -> bool:
        s = self.S.get(arg)
        return isinstance(s, Neurons) and s.fresh and len(arg.users) == 1

    def _param(self, node: fx.Node, arg, what: str):
        """A Const / WeightNorm argument (a parameter), or None for a missing one."""
        if arg is None:
            return None
        s = self.S.get(arg) if isinstance(arg, fx.Node) else None
        if not isinstance(s, (Const, WeightNorm)):
            raise TraceError(f"{_describe(node)}: its {what} is not a parameter of the module")
        return s

    # -- placing operations ---------------------------------------------------------------
    def linear(self, node: fx.Node, x: Neurons, weight, bias: Optional[Const], transpose: bool = False) -> Neurons:
        gain, names = None, []
        if isinstance(weight, WeightNorm):
            if weight.dim != 0 or weight.g.value.numel() != weight.v.value.shape[0]:
                raise TraceError(f"{_describe(node)}: weight norm over dim {weight.dim}; only the default dim=0 (one "
                                 "gain per output neuron) is placed")
            v = weight.v.value
            w = v / v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.ndim - 1)))
            gain, names = weight.g.value, [weight.v.name, weight.g.name]
        else:
            w, names = weight.value, [weight.name]
            if transpose:
                w = w.t()
        if w.ndim != 2:
            raise TraceError(f"{_describe(node)}: a weight of shape {tuple(w.shape)} (a matrix is placed)")
        if bias is not None:
            names.append(bias.name)
        for n in names:
            self._use_param(n, node)
        layer = self._layer_of(x.ids) + 1
        first = self.b.num_nodes
        ids, bias_ids = add_linear(self.b, x.ids, w.detach(), None if bias is None else bias.value.detach().reshape(-1),
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
        return Neurons(ids, fresh=True)

    def add_bias(self, node: fx.Node, x: fx.Node, c: Const) -> Neurons:
        """``x @ W + b`` written as a sum (siren's ``BatchLinear``): a bias node into fresh neurons."""
        s = self.S[x]
        n = s.ids.shape[0]
        if not self._can_modify(x) or c.value.numel() != n:
            raise TraceError(f"{_describe(node)}: adds parameter {c.name!r} ({tuple(c.value.shape)}) to a tensor that "
                             "is not the fresh output of one linear layer of that width")
        self._use_param(c.name, node)
        layer = self._layer_of(s.ids)
        bn = self._add_nodes(node_features(1, L.NodeType.BIAS, layer=layer), layer)
        self.b.add_edges(bn.expand(n), s.ids, edge_features(c.value.detach().reshape(-1), L.EdgeType.BIAS, layer=layer))
        self._ones(bn)
        self._probe(s.ids, self.V[node], node)
        return Neurons(s.ids, fresh=True)

    def layer_norm(self, node: fx.Node) -> Neurons:
        a = list(node.args) + [None] * (4 - len(node.args))
        x = self._neurons_arg(node, a[0], "input")
        shape = node.kwargs.get("normalized_shape", a[1])
        weight = self._param(node, node.kwargs.get("weight", a[2]), "weight")
        bias = self._param(node, node.kwargs.get("bias", a[3]), "bias")
        n = x.ids.shape[0]
        if tuple(shape) != (n,):
            raise TraceError(f"{_describe(node)}: LayerNorm over {tuple(shape)}, the tensor has {n} features")
        layer = self._layer_of(x.ids) + 1
        ids = self._add_nodes(node_features(n, L.NodeType.HIDDEN, layer=layer), layer)
        gamma = weight.value.detach().reshape(-1) if weight is not None else torch.ones(n)
        self.b.add_edges(x.ids, ids, edge_features(gamma, L.EdgeType.NORM_SCALE, layer=layer))
        if weight is not None:
            self._use_param(weight.name, node)
        if bias is not None:
            self._use_param(bias.name, node)
            bn = self._add_nodes(node_features(1, L.NodeType.BIAS, layer=layer), layer)
            self.b.add_edges(bn.expand(n), ids, edge_features(bias.value.detach().reshape(-1), L.EdgeType.BIAS,
                                                               layer=layer))
            self._ones(bn)
        self._probe(ids, self.V[node], node)
        return Neurons(ids, fresh=True)

    def activation(self, node: fx.Node, arg: fx.Node, name: str) -> Neurons:
        s = self.S.get(arg)
        if not isinstance(s, Neurons):
            raise TraceError(f"{_describe(node)}: activation {name!r} of a tensor not computed from the input")
        if not self._can_modify(arg):
            raise TraceError(f"{_describe(node)}: activation {name!r} applied to a tensor that is not the fresh output "
                             "of one linear layer (a second activation, or a tensor also used elsewhere before its "
                             "activation)")
        self.acts.append((s.ids, name))
        self._probe(s.ids, self.V[node], node)
        return Neurons(s.ids)

    def scalar(self, node: fx.Node) -> Neurons:
        args = list(node.args)
        tensors = [a for a in args if isinstance(a, fx.Node)]
        if len(tensors) != 1 or not all(isinstance(a, (int, float)) for a in args if not isinstance(a, fx.Node)):
            raise TraceError(f"{_describe(node)}: arithmetic between tensors (or with a tensor constant) is not placed; "
                             "only a scalar folded into a following activation, or a residual `x + f(x)`")
        arg = tensors[0]
        users = list(node.users)
        if not self._can_modify(arg) or len(users) != 1 or activation_of(users[0]) is None:
            raise TraceError(f"{_describe(node)}: a scalar operation is placed only between a linear layer and its "
                             "activation (e.g. SIREN's sin(w0 * x))")
        return Neurons(self.S[arg].ids, fresh=True, pending=True)

    def residual(self, node: fx.Node, a: fx.Node, b: fx.Node) -> Neurons:
        sa, sb = self._neurons_arg(node, a, "first term"), self._neurons_arg(node, b, "second term")
        if not self._can_modify(a):
            a, b, sa, sb = b, a, sb, sa
            if not self._can_modify(a):
                raise TraceError(f"{_describe(node)}: a residual sum needs one side to be the fresh output of a "
                                 "linear layer used nowhere else")
        if sa.ids.shape != sb.ids.shape:
            raise TraceError(f"{_describe(node)}: residual of {sa.ids.numel()} and {sb.ids.numel()} features")
        layer = self._layer_of(sa.ids)
        self.b.add_edges(sb.ids, sa.ids, edge_features(torch.ones(sa.ids.shape[0]), L.EdgeType.RESIDUAL, layer=layer))
        self._probe(sa.ids, self.V[node], node)
        return Neurons(sa.ids, fresh=True)

    def route(self, node: fx.Node) -> Any:
        """cat / split / chunk / slice along the features: run the op on id trackers (each column holds
        its neuron id) and read which neuron every output column is."""
        bad = []

        def tracker(a):
            if not isinstance(a, fx.Node):
                return a
            s = self.S.get(a)
            if isinstance(s, Const):
                s = self.constant(node, a, s)
            elif isinstance(s, Coord):
                s = self.materialise(a)
            elif isinstance(s, Grid):
                s = trace_grid.place(self, a)
            if isinstance(s, Neurons):
                if s.pending:
                    bad.append(a)
                return s.ids.double().expand(self.V[a].shape)
            if isinstance(self.V.get(a), torch.Tensor):
                bad.append(a)
            return self.V.get(a)

        args = fx.node.map_aggregate(node.args, tracker)
        kwargs = fx.node.map_aggregate(node.kwargs, tracker)
        if bad:
            raise TraceError(f"{_describe(node)}: combines {', '.join(b.name for b in bad)}, a tensor not computed from "
                             "the input (a buffer or constant) or an unfinished scalar op")
        out = getattr(args[0], node.target)(*args[1:], **kwargs) if node.op == "call_method" else node.target(*args, **kwargs)
        coord = all(isinstance(self.S.get(a), Neurons) and self.S[a].coord for a in _tensor_args(node))

        def read(t, v):
            if not isinstance(t, torch.Tensor):
                return t
            if t.shape != v.shape or t.ndim == 0:
                raise TraceError(f"{_describe(node)}: does not keep the features in the last dimension")
            rows = t.reshape(-1, t.shape[-1])
            if not torch.equal(rows, rows[:1].expand_as(rows)):
                raise TraceError(f"{_describe(node)}: mixes the batch and feature dimensions")
            return Neurons(rows[0].long(), coord=coord)

        if isinstance(out, (tuple, list)):
            return tuple(read(t, v) for t, v in zip(out, self.V[node]))
        return read(out, self.V[node])

    # -- dispatch -------------------------------------------------------------------------
    def visit(self, node: fx.Node) -> Any:
        op, tgt = node.op, node.target
        if op in ("placeholder", "output"):
            return self.S.get(node)
        if op == "get_attr":
            return Const(tgt, self.params[tgt]) if tgt in self.params else None   # buffers, constants: None
        if op == "call_function" and tgt is operator.getitem and isinstance(self.S.get(node.args[0]), tuple):
            return self.S[node.args[0]][node.args[1]]
        states = [self.S.get(a) for a in _tensor_args(node)]
        if op == "call_function" and tgt is F.grid_sample:
            return trace_grid.sample(self, node)
        if any(isinstance(s, Grid) for s in states) and not any(isinstance(s, (Neurons, Coord)) for s in states):
            return trace_grid.grid_op(self, node)
        neurons = [s for s in states if isinstance(s, (Neurons, Coord, Grid))]
        params = [s for s in states if isinstance(s, (Const, WeightNorm))]
        if not neurons:
            if op == "call_function" and tgt is torch._weight_norm and len(params) == 2:
                return WeightNorm(self.S[node.args[0]], self.S[node.args[1]], int(node.args[2]))
            if len(params) == 1 and len(states) == 1 and isinstance(params[0], Const):
                if op == "call_method" and tgt in CONST_BROADCASTS:
                    return params[0]
                if op == "call_method" and tgt in CONST_VIEWS:
                    return Const(params[0].name, self.V[node])
            if tgt in (F.linear, F.layer_norm):
                raise TraceError(f"{_describe(node)}: applied to a tensor not computed from the input")
            return None
        if not params and all(isinstance(s, Coord) or (isinstance(s, Neurons) and s.coord) or s is None
                              for s in states):
            # a function of the inputs alone: an encoding or a change of coordinates
            if op_in(node, PASS_FUNCTIONS, PASS_METHODS):
                return self._pass(node.args[0])
            if op_in(node, ROUTING_FUNCTIONS, ROUTING_METHODS) and all(isinstance(s, Neurons) for s in neurons):
                return self.route(node)
            return Coord()
        if tgt is F.linear:
            a = list(node.args) + [None] * (3 - len(node.args))
            x = self._neurons_arg(node, a[0], "input")
            return self.linear(node, x, self._param(node, node.kwargs.get("weight", a[1]), "weight"),
                               self._param(node, node.kwargs.get("bias", a[2]), "bias"))
        if (op, tgt) in MATMUL:
            return self.linear(node, self._neurons_arg(node, node.args[0], "input"),
                               self._param(node, node.args[1], "weight"), None, transpose=True)
        if tgt is F.layer_norm:
            return self.layer_norm(node)
        name = activation_of(node)
        if name is not None:
            return self.activation(node, node.args[0], name)
        if op_in(node, PASS_FUNCTIONS, PASS_METHODS):
            return self._pass(node.args[0])
        if (op, tgt) in ADD and len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args):
            a, b = node.args
            if isinstance(self.S.get(b), Const) and isinstance(self.S.get(a), Neurons):
                return self.add_bias(node, a, self.S[b])
            if isinstance(self.S.get(a), Const) and isinstance(self.S.get(b), Neurons):
                return self.add_bias(node, b, self.S[a])
            return self.residual(node, a, b)
        if op_in(node, SCALAR_FUNCTIONS, SCALAR_METHODS):
            return self.scalar(node)
        if op_in(node, ROUTING_FUNCTIONS, ROUTING_METHODS):
            return self.route(node)
        raise TraceError(f"{_describe(node)}: this operation cannot be placed in a parameter graph (supported: Linear, "
                         "elementwise activations, LayerNorm, weight norm, concatenation / split / slicing of "
                         "features, residual sums); register a converter for this module type")

    def _pass(self, arg) -> Any:
        s = self.S.get(arg)
        if isinstance(s, Neurons):
            return Neurons(s.ids, fresh=s.fresh and len(arg.users) == 1, pending=s.pending, coord=s.coord)
        return s

    # -- the whole module -----------------------------------------------------------------
    def convert(self, name: str) -> ParameterGraph:
        nodes = list(self.rec.graph.nodes)
        for i, p in enumerate(self.rec.placeholders):
            v = self.V[p]
            d = v.shape[-1] if v.ndim else 1
            pos = torch.zeros(d, 3)
            if i == 0:
                pos[torch.tensor(self.cols, dtype=torch.long), torch.arange(len(self.cols))] = 1.0
            ids = self._add_nodes(node_features(d, L.NodeType.INPUT, layer=0, pos=pos), 0)
            self.S[p] = Neurons(ids, coord=True)
            self._probe(ids, v, p)
        for node in nodes:
            self.S[node] = self.visit(node)
        outs: list[Neurons] = []
        for a in self.rec.outputs:
            s = self.S.get(a)
            if isinstance(s, Coord) or (isinstance(s, Neurons) and s.coord):
                continue                                  # the input handed back (siren's coords)
            if not isinstance(s, Neurons) or s.pending:
                raise TraceError(f"output {_describe(a)} of {type(self.module).__name__} is not a tensor computed "
                                 "from the input by placeable operations")
            outs.append(s)
        if not outs:
            raise TraceError(f"{type(self.module).__name__}.forward returns nothing computed from its parameters")
        unused = [n for n, _ in self.module.named_parameters() if n not in self.used_params]
        if unused and not self.allow_unused:
            raise TraceError(f"parameters {unused[:5]} of {type(self.module).__name__} are not used by its forward "
                             "(or only by operations that hold no neuron): each parameter must lie on one edge")
        return self._finish(torch.cat([o.ids for o in outs]), name)

    def _finish(self, out_ids: torch.Tensor, name: str) -> ParameterGraph:
        g = self.b.build(None, name)
        if torch.unique(out_ids).numel() != out_ids.numel():
            raise TraceError("a neuron is returned twice among the outputs")
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


def trace_to_graph(module: nn.Module, xyz_columns: Optional[Sequence[int]] = None,
                   in_dims: Optional[Sequence[int]] = None, name: Optional[str] = None,
                   example: Optional[Callable[[torch.Tensor], Any]] = None,
                   allow_unused: bool = False) -> ParameterGraph:
    """The parameter graph of an MLP-like ``module`` found by running its forward on the probe
    points (see the module docstring for what is placed where). ``xyz_columns``: which columns of
    the first input are x, y, z; ``in_dims``: the width of each forward input; ``example``: a
    function of the ``[K, 3]`` probe points giving the forward's arguments (a tuple; tensors may be
    nested in dicts); ``allow_unused``: parameters this forward does not use (NGLOD's other levels of
    detail when one is asked for) are left out instead of refused. Raises :class:`TraceError` naming the first operation it cannot place. The
    module runs in eval mode (dropout off) and is left as it was."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"trace_to_graph takes an nn.Module, got {type(module).__name__}")
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            rec, cols = record_on_probes(module, xyz_columns, in_dims, example)
            conv = _Converter(module, rec, cols)
            conv.allow_unused = allow_unused
            return conv.convert(name or type(module).__name__).validate()
    finally:
        module.train(was)


_mlp.sequential_fallback = trace_to_graph      # an nn.Sequential with other items is traced

__all__ = ["TraceError", "trace_to_graph"]
