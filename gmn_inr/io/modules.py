"""A researcher's own INR module (built, loaded and read on the cube by
:mod:`gmn_inr.fields.user_module`) and -- where its traced forward is a plain MLP of xyz -- the
equivalent built-in :class:`~gmn_inr.fields.MLPField`; a plain Linear stack read off a state dict."""
from __future__ import annotations

import operator
import re
from typing import Optional

import torch
from torch import nn

from gmn_inr.fields import ArchSpec, FrequencySpec, MLPSpec, build_field
from gmn_inr.fields.user_module import ModuleField
from graphs.trace_ops import activation_of
from graphs.trace_record import TraceError, record_on_probes

from .common import FormatError

_STACK_KEY = re.compile(r"^(?P<prefix>(?:[A-Za-z_]\w*\.)*)(?P<i>\d+)\.(?P<kind>weight|bias)$")


def linear_stack(state: dict, what: str) -> list[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """``[(W, b), ...]`` of a plain Linear stack read off a state dict's keys and shapes
    (``0.weight, 0.bias, 2.weight, ...`` or ``<prefix>.<i>.*``); a layout that does not determine
    one is refused with the reason."""
    groups: dict[str, dict[int, dict]] = {}
    for k, v in state.items():
        m = _STACK_KEY.match(k)
        if m is None or not isinstance(v, torch.Tensor):
            raise FormatError(f"{what}: key {k!r} is not '<i>.weight' / '<i>.bias' of a Linear stack, so the file does "
                              "not determine its module: pass --module path/to/file.py:factory (your module) or "
                              "--tcnn-config FILE.json (a tiny-cuda-nn params blob)")
        groups.setdefault(m["prefix"], {}).setdefault(int(m["i"]), {})[m["kind"]] = v
    if len(groups) != 1:
        raise FormatError(f"{what}: Linear layers under several prefixes {sorted(groups)}: not one stack; "
                          "pass --module path/to/file.py:factory")
    layers = []
    for i, entry in sorted(next(iter(groups.values())).items()):
        w, b = entry.get("weight"), entry.get("bias")
        if w is None or w.ndim != 2 or (b is not None and tuple(b.shape) != (w.shape[0],)):
            raise FormatError(f"{what}: layer {i} is not a Linear layer (weight {None if w is None else tuple(w.shape)}, "
                              f"bias {None if b is None else tuple(b.shape)}); pass --module path/to/file.py:factory")
        if layers and layers[-1][0].shape[0] != w.shape[1]:
            raise FormatError(f"{what}: layer {i} reads {w.shape[1]} inputs, the layer before gives "
                              f"{layers[-1][0].shape[0]}: not a chain; pass --module path/to/file.py:factory")
        layers.append((w.float(), None if b is None else b.float()))
    if len(layers) < 2 or layers[0][0].shape[1] != 3:
        raise FormatError(f"{what}: a Linear stack of {len(layers)} layers reading {layers[0][0].shape[1]} inputs; a "
                          "plain stack needs at least 2 layers on x, y, z: pass --module path/to/file.py:factory")
    widths = {w.shape[0] for w, _ in layers[:-1]}
    if len(widths) != 1:
        raise FormatError(f"{what}: hidden widths {[w.shape[0] for w, _ in layers[:-1]]} differ (a plain stack has one "
                          "width): pass --module path/to/file.py:factory")
    return layers


def mlp_field(layers: list, activation: str, w0: float, scale: torch.Tensor, shift: torch.Tensor, name: str):
    """The :class:`MLPField` computing ``layers`` with ``activation`` on ``scale * xyz + shift``:
    ``(xyz + 1) / 2`` by the encoding's ``input_range="unit"``, another map folded into the first
    layer (``W diag(scale)``, ``b + W shift``)."""
    if activation not in ("relu", "sine"):
        raise FormatError(f"activation {activation!r} is not one an MLPField holds (relu, sine)")
    H, W, n_out = len(layers) - 1, layers[0][0].shape[0], layers[-1][0].shape[0]
    unit = bool((scale == 0.5).all() and (shift == 0.5).all())
    if unit:
        scale, shift = torch.ones(3), torch.zeros(3)
    spec = ArchSpec(family="mlp", out_dim=n_out, name=name,
                    mlp=MLPSpec(hidden_layers=H, hidden_dim=W, activation=activation, bias=True,
                                **({"w0": float(w0)} if activation == "sine" else {})),
                    encoding=FrequencySpec(n_freqs=0, include_input=True, style="nerf",
                                           input_range="unit" if unit else "signed"))
    field = build_field(spec)
    with torch.no_grad():
        for i, (lin, (w, b)) in enumerate(zip(field.mlp.layers, layers)):
            b = torch.zeros(w.shape[0]) if b is None else b
            if i == 0:
                w, b = w * scale, b + w @ shift
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return field.eval()


def traced_mlp_layers(module: nn.Module) -> Optional[tuple[list, str, float]]:
    """``(layers, activation, w0)`` when the module's recorded forward is a chain of linear layers
    with one elementwise activation (ReLU, or sine with one scalar ``w0``) between them; else None."""
    try:
        rec, _ = record_on_probes(module, None, None, None)
    except (TraceError, RuntimeError, TypeError, ValueError):
        return None
    V = rec.values
    layers, acts, w0s = [], set(), set()
    for n in rec.graph.nodes:
        if n.op == "call_function" and n.target is torch.nn.functional.linear:
            a = list(n.args) + [None] * (3 - len(n.args))
            w, b = n.kwargs.get("weight", a[1]), n.kwargs.get("bias", a[2])
            layers.append([V[w], None if b is None else V[b]])
        elif n.target in ("matmul", torch.matmul, operator.matmul) and isinstance(n.args[1], torch.fx.Node):
            layers.append([V[n.args[1]].t(), None])
        elif n.target in ("add_", "add", operator.add) and layers and layers[-1][1] is None and \
                any(isinstance(a, torch.fx.Node) and a.op == "get_attr" or
                    (isinstance(a, torch.fx.Node) and a.target == "unsqueeze") for a in n.args):
            layers[-1][1] = next(V[a] for a in n.args if isinstance(a, torch.fx.Node) and
                                 (a.op == "get_attr" or a.target == "unsqueeze")).reshape(-1)
        elif activation_of(n) is not None:
            acts.add(activation_of(n))
            prev = n.args[0]
            if acts == {"sine"}:
                scalars = [a for a in getattr(prev, "args", ()) if isinstance(a, (int, float))]
                w0s.add(float(scalars[0]) if scalars and prev.target in ("mul", operator.mul) else 1.0)
    if len(layers) < 2 or len(acts) != 1 or len(w0s) > 1:
        return None
    act = next(iter(acts))
    return [(w.detach().float(), None if b is None else b.detach().float()) for w, b in layers], act, \
        (next(iter(w0s)) if w0s else 1.0)


def as_mlp_field(field: ModuleField, name: str):
    """The built-in MLPField equal to ``field`` (a module read on the cube) on 4096 points of the
    cube to 1e-5, or None."""
    found = traced_mlp_layers(field.module)
    if found is None:
        return None
    layers, act, w0 = found
    try:
        if layers[0][0].shape[1] != 3 or len({w.shape[0] for w, _ in layers[:-1]}) != 1 or act not in ("relu", "sine"):
            return None
        mlp = mlp_field(layers, act, w0, field.scale, field.shift, name)
    except (FormatError, ValueError, RuntimeError):
        return None
    x = torch.rand(4096, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        want, got = field(x), mlp(x)
    if want.shape != got.shape:
        return None
    return mlp if float((want - got).abs().max()) <= 1e-5 * (1 + float(want.abs().max())) else None
