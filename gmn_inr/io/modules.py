"""A researcher's own INR module: built by a factory in their Python file, its state dict loaded
strictly, read on the [-1, 1]^3 cube, and -- where its traced forward is a plain MLP of xyz --
the equivalent built-in :class:`~gmn_inr.fields.MLPField` (what a zoo store holds)."""
from __future__ import annotations

import hashlib
import importlib.util
import operator
import re
import sys
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.utils import _pytree as pytree

from gmn_inr.fields import ArchSpec, FrequencySpec, MLPSpec, build_field
from graphs.trace_ops import activation_of
from graphs.trace_record import TraceError, record_on_probes

from .common import FormatError

_FACTORIES: dict[str, Callable[[], nn.Module]] = {}


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """``path/to/file.py:factory`` -> the factory (the file is imported once per process)."""
    file, _, name = str(spec).rpartition(":")
    if not file or not name.isidentifier():
        raise FormatError(f"--module must be path/to/file.py:factory (a function returning the module), got {spec!r}")
    path = Path(file).resolve()
    if not path.is_file():
        raise FormatError(f"--module file {file} does not exist")
    key = f"{path}:{name}"
    if key not in _FACTORIES:
        modname = "gmn_inr_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        if modname not in sys.modules:
            loader = importlib.util.spec_from_file_location(modname, path)
            mod = importlib.util.module_from_spec(loader)
            sys.modules[modname] = mod           # so classes defined there pickle-free resolve by name
            try:
                loader.loader.exec_module(mod)
            except Exception as exc:
                del sys.modules[modname]
                raise FormatError(f"--module {file}: importing it failed: {type(exc).__name__}: {exc}") from None
        factory = getattr(sys.modules[modname], name, None)
        if not callable(factory):
            raise FormatError(f"--module {file} has no function {name!r}")
        _FACTORIES[key] = factory
    return _FACTORIES[key]


def unwrap_state(state: dict) -> dict:
    """The state dict inside a checkpoint (``state_dict`` / ``model_state_dict``), ``module.``
    prefixes (DataParallel) removed when every key has one."""
    for key in ("state_dict", "model_state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_state_strict(module: nn.Module, state: dict, what: str) -> nn.Module:
    """Load ``state`` into ``module`` strictly, floats as float32; the first key that does not fit
    is named with both shapes."""
    want = module.state_dict()
    cls = type(module).__name__
    for k, v in want.items():
        if k not in state:
            raise FormatError(f"{what} does not fit {cls}: key {k!r} {tuple(v.shape)} is missing from the file")
        got = state[k]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(v.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise FormatError(f"{what} does not fit {cls}: key {k!r} is {shape} in the file, {tuple(v.shape)} "
                              "in the module")
    extra = [k for k in state if k not in want]
    if extra:
        raise FormatError(f"{what} does not fit {cls}: key {extra[0]!r} {tuple(state[extra[0]].shape)} is in the file "
                          "but not in the module")
    module.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}, strict=True)
    return module.float().eval()


class CubeInput(nn.Module):
    """``module(scale * xyz + shift)``: reads an INR whose input box is not [-1, 1]^3 on the cube."""

    def __init__(self, module: nn.Module, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.module = module
        self.register_buffer("scale", scale.float(), persistent=False)
        self.register_buffer("shift", shift.float(), persistent=False)

    def forward(self, xyz: torch.Tensor):
        return self.module(xyz * self.scale + self.shift)


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


def as_mlp_field(module: nn.Module, scale: torch.Tensor, shift: torch.Tensor, name: str):
    """The built-in MLPField equal to ``module`` on the cube (checked on 4096 points to 1e-5), or None."""
    found = traced_mlp_layers(module)
    if found is None:
        return None
    layers, act, w0 = found
    try:
        if layers[0][0].shape[1] != 3 or len({w.shape[0] for w, _ in layers[:-1]}) != 1 or act not in ("relu", "sine"):
            return None
        field = mlp_field(layers, act, w0, scale, shift, name)
    except (FormatError, ValueError, RuntimeError):
        return None
    x = torch.rand(4096, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        inp = x * scale + shift
        want = [t for t in pytree.tree_leaves(module(inp)) if isinstance(t, torch.Tensor)
                and not (t.shape == inp.shape and torch.equal(t, inp))]       # a returned input is no output
        got = field(x)
    if len(want) != 1 or want[0].shape != got.shape:
        return None
    return field if float((want[0] - got).abs().max()) <= 1e-5 * (1 + float(want[0].abs().max())) else None
