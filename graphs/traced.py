"""Tracing converter: an MLP-like ``nn.Module`` of any shape -> :class:`ParameterGraph`.

``trace_to_graph(module)`` runs the module's forward on an example input (the probe points) and
records the torch calls it makes (:mod:`graphs.trace_record`): Python control flow on shapes and
constants is specialised, as ``torch.export`` does. It then places what it recorded in the graph
where the tensor flows (Lim et al.'s ``arch_to_graph`` covers the same ground):

* ``nn.Linear`` / ``F.linear`` / ``x @ W (+ b)`` (also weight-normalised, hook style ``weight_g`` /
  ``weight_v`` or ``parametrizations.weight_norm``): a neuron per output, the edge ``i -> o`` holding
  ``W[o, i]`` (weight norm: the unit direction ``v[o, i] / |v[o]|``, plus the gain ``g[o]`` on an
  edge from one GAIN node per layer), a bias node per layer;
* elementwise activations (ReLU, sine, tanh, sigmoid, softplus, GELU, SiLU, leaky ReLU, ELU), with
  scalar arithmetic folded in when an activation follows it (SIREN's ``sin(w0 * x)``);
* ``LayerNorm``: a normalised copy of each neuron, ``gamma[i]`` on the edge from neuron ``i`` to
  its copy (NORM_SCALE; 1 without affine), ``beta`` from a bias node;
* concatenations, splits, chunks and slices along the feature dimension: no new nodes;
* ``a + b`` of a fresh pre-activation and another tensor (residual): edges of value 1 (RESIDUAL);
* a function of the inputs alone (an encoding, ``(x + 1) / 2``, ``clone().detach()``): input nodes
  holding its values, where a layer reads it (x, y or z as position when it is affine in one);
* several outputs (a tuple, list or dict): every output neuron is an OUTPUT node, in the order
  returned; a returned input (SIREN's ``(output, coords)``) is not an output.

Every parameter lies on exactly one edge; a parameter the forward does not use, a parameter used
twice (shared weights) or any other operation on a tensor computed from the input raises
:class:`TraceError` naming the operation and the module's source line. Probe features are the
recorded values: each neuron's row is its value at the probe points (after its activation).
Inputs: ``xyz_columns`` (default the first three, or ``module.gmn_xyz_columns``) of the first
input hold x, y, z at the probe points, the other inputs 0 -- unless the module has
``gmn_probe_inputs(points)`` returning its inputs, or ``example(points)`` gives the forward's
arguments. The input width: ``in_dims``, ``module.gmn_input_dims``, else the first
``nn.Linear``'s input width or 3; a forward taking siren's ``{"coords": x}`` dict is tried last.
"""
from __future__ import annotations

import inspect
import operator
from typing import Any, Callable, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import layout as L
from . import mlp as _mlp
from .graph import GraphBuilder, ParameterGraph, edge_features, node_features
from .mlp import add_linear
from .probe import probe_points
from .trace_ops import (ADD, CONST_BROADCASTS, CONST_VIEWS, MATMUL, PASS_FUNCTIONS, PASS_METHODS, ROUTING_FUNCTIONS,
                        ROUTING_METHODS, SCALAR_FUNCTIONS, SCALAR_METHODS, Const, Coord, Neurons, WeightNorm,
                        activation_of, op_in)
from .trace_record import Recording, TraceError, describe, record

_describe = describe


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(a) or a)
    return found


class _Converter:
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

    def _neurons_arg(self, node: fx.Node, arg, what: str) -> Neurons:
        s = self.S.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(s, Coord):
            s = self.materialise(arg)
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
        neurons = [s for s in states if isinstance(s, (Neurons, Coord))]
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
        if unused:
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


def _probe_inputs(module: nn.Module, dims: list[int], cols: list[int]) -> list[torch.Tensor]:
    pts = probe_points()
    hook = getattr(module, "gmn_probe_inputs", None)
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


def _columns(module: nn.Module, xyz_columns, width: int) -> list[int]:
    cols = xyz_columns if xyz_columns is not None else getattr(module, "gmn_xyz_columns", None)
    cols = list(cols) if cols is not None else list(range(min(3, width)))
    cols = [c % width for c in cols]
    if len(cols) > 3 or len(set(cols)) != len(cols):
        raise TraceError(f"xyz_columns must name at most three distinct input columns, got {cols}")
    return cols


def _record_on_probes(module: nn.Module, xyz_columns, in_dims, example: Optional[Callable]) -> tuple[Recording, list]:
    """Run the forward on the probe points, trying the input widths the module admits."""
    pts = probe_points()
    if example is not None:
        args = example(pts)
        args = args if isinstance(args, tuple) else (args,)
        first = next((t for t in torch.utils._pytree.tree_leaves(args) if isinstance(t, torch.Tensor)), None)
        return record(module, args), _columns(module, xyz_columns, first.shape[-1] if first is not None else 3)
    hint = in_dims if in_dims is not None else getattr(module, "gmn_input_dims", None)
    if hint is not None:
        candidates = [list(hint)]
    else:
        try:
            sig = inspect.signature(module.forward)
            n_in = sum(1 for p in sig.parameters.values() if p.default is p.empty and
                       p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        except (TypeError, ValueError):
            n_in = 1
        if n_in != 1:
            raise TraceError(f"{type(module).__name__}.forward takes {n_in} inputs: pass in_dims=[...] (their widths) "
                             "or example=")
        first = next((m.in_features for m in module.modules() if isinstance(m, nn.Linear)), None)
        candidates = [[d] for d in dict.fromkeys(x for x in (first, 3) if x)]
    errors = []
    for dims in candidates:
        cols = _columns(module, xyz_columns, dims[0]) if dims else []
        try:
            return record(module, tuple(_probe_inputs(module, dims, cols))), cols
        except TraceError:
            raise
        except Exception as exc:  # the forward rejects this width: try the next
            errors.append(f"input width {dims}: {type(exc).__name__}: {exc}")
    if hint is None:                  # siren's modules take {"coords": x} and return a dict
        try:
            return record(module, ({"coords": pts},)), [0, 1, 2]
        except TraceError:
            raise
        except Exception as exc:
            errors.append(f"{{'coords': x}}: {type(exc).__name__}: {exc}")
    raise TraceError(f"running {type(module).__name__}.forward on an example input failed ({'; '.join(errors)}); "
                     "pass in_dims=[...] or example=lambda points: (args,)")


def trace_to_graph(module: nn.Module, xyz_columns: Optional[Sequence[int]] = None,
                   in_dims: Optional[Sequence[int]] = None, name: Optional[str] = None,
                   example: Optional[Callable[[torch.Tensor], Any]] = None) -> ParameterGraph:
    """The parameter graph of an MLP-like ``module`` found by running its forward on the probe
    points (see the module docstring for what is placed where). ``xyz_columns``: which columns of
    the first input are x, y, z; ``in_dims``: the width of each forward input; ``example``: a
    function of the ``[K, 3]`` probe points giving the forward's arguments (a tuple; tensors may be
    nested in dicts). Raises :class:`TraceError` naming the first operation it cannot place. The
    module runs in eval mode (dropout off) and is left as it was."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"trace_to_graph takes an nn.Module, got {type(module).__name__}")
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            rec, cols = _record_on_probes(module, xyz_columns, in_dims, example)
            return _Converter(module, rec, cols).convert(name or type(module).__name__).validate()
    finally:
        module.train(was)


_mlp.sequential_fallback = trace_to_graph      # an nn.Sequential with other items is traced

__all__ = ["TraceError", "trace_to_graph"]
