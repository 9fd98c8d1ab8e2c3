"""The MLP part every converter shares (Lim et al.), plus MLPField and plain ``nn.Sequential``.

Counts for an MLP with ``n_in`` inputs, ``H`` hidden layers of width ``W`` and ``n_out`` outputs:
nodes ``n_in + H*W + n_out (+ H + 1 bias nodes)``, edges = number of parameters.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from gmn_inr.fields import MLPField
from gmn_inr.fields.encoding import FrequencyEncoding
from gmn_inr.fields.mlp import Sine

from . import layout as L
from .graph import GraphBuilder, GraphError, ParameterGraph, edge_features, node_features
from .probe import probe_points
from .registry import register_converter
from .template import template_for, templatable

#: elementwise activation modules a plain nn.Sequential may contain
ELEMENTWISE = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Softplus: "softplus",
               nn.GELU: "gelu", nn.SiLU: "silu", nn.LeakyReLU: "leaky_relu", nn.ELU: "elu", Sine: "sine",
               nn.Identity: "identity"}


def activation_name(module: nn.Module) -> Optional[str]:
    """The activation code name of an elementwise module, or None if it is not one."""
    named = getattr(module, "gmn_activation", None)
    if isinstance(named, str):
        return named
    for cls, name in ELEMENTWISE.items():
        if isinstance(module, cls):
            return name
    return None


def encoding_input_nodes(builder: GraphBuilder, enc: FrequencyEncoding) -> torch.Tensor:
    """Input neurons of a frequency encoding: each knows its axis, frequency and phase."""
    pos = torch.nn.functional.one_hot(enc.axis, 3).float()
    feats = node_features(enc.out_dim, L.NodeType.INPUT, layer=0, pos=pos, freq=enc.freq, phase=enc.phase)
    return builder.add_nodes(feats)


def raw_input_nodes(builder: GraphBuilder, n: int) -> torch.Tensor:
    """Input neurons of an MLP fed raw coordinates: the first three are x, y, z."""
    pos = torch.zeros(n, 3)
    k = min(n, 3)
    pos[torch.arange(k), torch.arange(k)] = 1.0
    return builder.add_nodes(node_features(n, L.NodeType.INPUT, layer=0, pos=pos))


def add_linear(builder: GraphBuilder, input_ids: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               layer: int, node_type: int = L.NodeType.HIDDEN, act: str = "identity",
               out: Optional[torch.Tensor] = None, what: str = "linear layer") -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One linear layer ``y = W x + b`` on top of the neurons ``input_ids``: ``W.shape[0]`` new
    neurons, the edge ``i -> o`` holding ``W[o, i]`` (row-major order of ``W``) and, with a bias,
    a bias node with an edge to each neuron. Returns ``(neuron ids, bias node id [1] or None)``."""
    n_out, n_in = weight.shape
    if n_in != input_ids.shape[0]:
        raise GraphError(f"{what}: weight is [{n_out}, {n_in}] but the previous layer has {input_ids.shape[0]} neurons")
    ids = builder.add_nodes(node_features(n_out, node_type, layer=layer, out=out, act=act))
    src = input_ids.repeat(n_out)                       # row-major: o slowest, i fastest
    dst = ids.repeat_interleave(n_in)
    builder.add_edges(src, dst, edge_features(weight.reshape(-1), L.EdgeType.WEIGHT, layer=layer, act=act))
    bias_ids = None
    if bias is not None:
        bias_ids = builder.add_nodes(node_features(1, L.NodeType.BIAS, layer=layer))
        builder.add_edges(bias_ids.expand(n_out), ids, edge_features(bias, L.EdgeType.BIAS, layer=layer, act=act))
    return ids, bias_ids


def add_mlp(builder: GraphBuilder, input_ids: torch.Tensor, linears: Sequence[nn.Linear],
            activations: Sequence[str], input_probe: Optional[torch.Tensor] = None,
            act_fns: Optional[Sequence[Callable[[torch.Tensor], torch.Tensor]]] = None) -> torch.Tensor:
    """Add the neurons, bias nodes and weight/bias edges of ``linears`` on top of ``input_ids``.

    ``activations[k]`` is applied after ``linears[k]`` ("identity" for none). Weight ``W[o, i]``
    of layer ``k`` becomes the edge ``i -> o`` in row-major order of ``W``; a bias gets its own
    bias node per layer with an edge to each neuron. Returns the output neurons' ids.

    With ``input_probe [n_in, K]`` (the inputs' values at the probe points) and ``act_fns``
    (the callables behind ``activations``), every neuron also gets its probe features: its
    activation at those points (bias nodes: 1).
    """
    if input_probe is not None and (act_fns is None or len(act_fns) != len(linears)):
        raise GraphError("add_mlp: probe features need one activation callable per layer (act_fns)")
    prev = input_ids
    probe = input_probe
    if probe is not None:
        builder.set_probe(input_ids, probe)
    n_layers = len(linears)
    for k, (lin, act) in enumerate(zip(linears, activations), start=1):
        is_out = k == n_layers
        ids, bias_ids = add_linear(builder, prev, lin.weight, lin.bias, layer=k,
                                   node_type=L.NodeType.OUTPUT if is_out else L.NodeType.HIDDEN, act=act,
                                   out=torch.arange(lin.out_features) if is_out else None, what=f"layer {k}")
        if probe is not None:
            if bias_ids is not None:
                builder.set_probe(bias_ids, torch.ones(1, probe.shape[1]))
            with torch.no_grad():
                probe = act_fns[k - 1](lin(probe.t())).t()            # [n_out, K]
            builder.set_probe(ids, probe)
        prev = ids
    return prev


def add_field_mlp(builder: GraphBuilder, field, grid_channel_ids: Optional[torch.Tensor]) -> torch.Tensor:
    """A field's MLP fed by ``cat(grid channels, frequency-encoding inputs)`` (or the reverse when
    ``field.encoding_first``: the field's order), with probe features: the MLP's inputs at the probe
    points propagated through its layers."""
    inputs, probe = [], []
    pts = probe_points()
    with torch.no_grad():
        if grid_channel_ids is not None:
            inputs.append(grid_channel_ids)
            probe.append(field.grid_features(pts))
        if field.encoding is not None:
            inputs.append(encoding_input_nodes(builder, field.encoding))
            probe.append(field.encoding(pts))
    if getattr(field, "encoding_first", False):
        # the MLP's columns: encoding first; the nodes (and their probe rows) keep their ids
        inputs.reverse()
        probe.reverse()
    mlp = field.mlp
    n = len(mlp.layers)
    acts = [mlp.activation] * (n - 1) + ["identity"]
    fns = [mlp.act] * (n - 1) + [nn.Identity()]
    return add_mlp(builder, torch.cat(inputs), list(mlp.layers), acts, torch.cat(probe, dim=1).t(), fns)


def field_to_graph(field, add_grid=None, template: bool = True) -> ParameterGraph:
    """The graph of a reference field: ``add_grid(builder, field) -> channel ids`` adds its grid
    (None for a plain MLP field), then the shared MLP part on top of it.

    A built-in dense field (:func:`graphs.template.templatable`) is converted from its spec's
    cached template (built by this function with ``template=False`` the first time): the same
    graph, bit for bit, without rebuilding the structure."""
    if template and templatable(field):
        return template_for(field, lambda: field_to_graph(field, add_grid, template=False)).convert(field)
    b = GraphBuilder()
    chans = add_grid(b, field) if add_grid is not None else None
    add_field_mlp(b, field, chans)
    return b.build(field.spec, field.spec.name or field.family)


@register_converter(MLPField)
def mlp_field_to_graph(field: MLPField) -> ParameterGraph:
    """MLPField: encoding input nodes -> MLP (counts in the module docstring, ``n_in`` = encoding size)."""
    return field_to_graph(field)


# to_graph skips its own parameter and graph checks for templated fields: the template path
# checks each value and probe row once (graphs.template)
mlp_field_to_graph.uses_template = True


#: how an ``nn.Sequential`` holding other modules is converted (``graphs.traced`` sets it to
#: ``trace_to_graph``: tracing sits above this module, so it registers itself here)
sequential_fallback: Optional[Callable[[nn.Module], ParameterGraph]] = None


def _plain_sequential(seq: nn.Sequential) -> bool:
    """Linear layers, each followed by at most one elementwise activation module."""
    prev = None
    for m in seq:
        kind = "linear" if type(m) is nn.Linear else ("act" if activation_name(m) is not None and
                                                     not any(True for _ in m.parameters()) else None)
        if kind is None or (kind == "act" and prev != "linear"):
            return False
        prev = kind
    return prev is not None


@register_converter(nn.Sequential)
def sequential_to_graph(seq: nn.Sequential) -> ParameterGraph:
    """Any ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations (a user's own
    ReLU MLP or SIREN). Raw inputs; the first three input neurons are taken as x, y, z. Any other
    ``nn.Sequential`` (SIREN ``SineLayer`` items, nested Sequentials) goes to tracing."""
    if sequential_fallback is not None and not _plain_sequential(seq):
        return sequential_fallback(seq)
    linears: list[nn.Linear] = []
    acts: list[str] = []
    fns: list[Callable] = []
    for i, m in enumerate(seq):
        if isinstance(m, nn.Linear):
            linears.append(m)
            acts.append("identity")
            fns.append(nn.Identity())
            continue
        name = activation_name(m)
        if name is None:
            raise GraphError(f"nn.Sequential item {i} ({type(m).__name__}) is neither nn.Linear nor an elementwise "
                             "activation; register a converter for this module type with @register_converter")
        if not linears:
            raise GraphError(f"nn.Sequential item {i} ({type(m).__name__}) comes before any nn.Linear")
        if acts[-1] != "identity":
            raise GraphError(f"nn.Sequential item {i}: two activations in a row are not supported")
        acts[-1] = name
        fns[-1] = m
    if not linears:
        raise GraphError("nn.Sequential holds no nn.Linear layer")
    b = GraphBuilder()
    n_in = linears[0].in_features
    inputs = raw_input_nodes(b, n_in)
    # raw inputs at the probe points: x, y, z on the first three neurons, 0 on any others
    pts = probe_points()
    probe = torch.zeros(n_in, pts.shape[0])
    probe[:min(n_in, 3)] = pts.t()[:min(n_in, 3)]
    add_mlp(b, inputs, linears, acts, probe, fns)
    return b.build(None, "Sequential")
