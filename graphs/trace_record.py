"""Record a module's forward on an example input as an ``fx.Graph`` of the torch calls it made.

The real forward runs (eval mode, no grad) under a ``TorchFunctionMode`` that sees every torch
function and tensor method the module calls, so Python control flow on shapes, constants and
module attributes (``if layer in self.latent_in``, iteration over an ``nn.Sequential``, ``len``,
dicts of inputs and outputs, ``.clone().detach().requires_grad_(True)``) is specialised to the
example, as ``torch.export`` does. Control flow on the *values* of a tensor computed from the
input (``if x.sum() > 0``) is refused by name: the graph would hold for this example only.

Each recorded node keeps the value it had on the example (``Recording.values``) and the user's
source line that made the call (``node.meta["where"]``). Parameters and buffers become
``get_attr`` nodes named as in ``named_parameters()``; other tensors made inside the forward
without the input (``torch.zeros``, ``torch.linspace``) are constants (``get_attr`` of
``"<constant i>"``, their value in ``Recording.constants``).
"""
from __future__ import annotations

import operator
import inspect
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from .graph import GraphError
from .probe import probe_points

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_THIS = os.path.abspath(__file__)

#: Tensor -> Python value conversions: control flow on them depends on the input's values
_DATA_DEPENDENT = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "numpy"}
#: calls whose result depends only on a tensor's shape / dtype: their outputs are constants
_SHAPE_ONLY = {"zeros_like", "ones_like", "empty_like", "full_like", "new_zeros", "new_ones", "new_full", "new_empty",
               "rand_like", "randn_like", "size", "dim", "__len__", "numel", "is_floating_point", "element_size"}


class TraceError(GraphError):
    """A module that tracing cannot turn into a parameter graph; the message names the operation
    and the source line of the module that made it."""


def leaf_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """Marker target: a module declaring ``gmn_activation = name`` was applied to ``x``."""
    return x


def _user_line() -> str:
    """``File "...", line N: code`` of the innermost frame outside torch and this recorder."""
    f = sys._getframe(2)
    while f is not None:
        fn = os.path.abspath(f.f_code.co_filename)
        if not fn.startswith(_TORCH_DIR) and fn != _THIS:
            import linecache

            code = linecache.getline(fn, f.f_lineno).strip()
            return f'File "{fn}", line {f.f_lineno}: {code}'
        f = f.f_back
    return ""


def describe(node: fx.Node) -> str:
    """How an error names a recorded call: the operation and the user's source line."""
    tgt = node.target
    name = tgt if isinstance(tgt, str) else getattr(tgt, "__name__", None) or repr(tgt)
    where = node.meta.get("where")
    return f"{node.op} {name!s} (node {node.name})" + (f" at {where}" if where else "")


@dataclass
class Recording:
    graph: fx.Graph
    values: dict = field(default_factory=dict)          # fx.Node -> its value on the example
    constants: dict = field(default_factory=dict)       # "<constant i>" -> tensor
    placeholders: list = field(default_factory=list)    # fx.Node per input tensor, in pytree order
    outputs: list = field(default_factory=list)         # fx.Node per output tensor, in pytree order


class _Recorder(TorchFunctionMode):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.rec = Recording(fx.Graph())
        self.node_of: dict[int, fx.Node] = {}
        self.keep: list = []                             # keeps recorded tensors alive (ids stay unique)
        self.from_input: set[fx.Node] = set()
        self.named = {id(p): n for n, p in module.named_parameters()}
        self.named.update({id(b): n for n, b in module.named_buffers()})

    def _bind(self, t: torch.Tensor, node: fx.Node, value) -> None:
        self.node_of[id(t)] = node
        self.keep.append(t)
        self.rec.values[node] = value

    def _arg(self, a):
        if not isinstance(a, torch.Tensor):
            return a
        n = self.node_of.get(id(a))
        if n is not None:
            return n
        name = self.named.get(id(a))
        if name is None:
            name = f"<constant {len(self.rec.constants)}>"
            self.rec.constants[name] = a.detach().clone()
        n = self.rec.graph.get_attr(name)
        self._bind(a, n, a.detach().clone())
        return n

    def input(self, t: torch.Tensor, i: int) -> None:
        n = self.rec.graph.placeholder(f"input_{i}")
        self._bind(t, n, t.detach().clone())
        self.from_input.add(n)
        self.rec.placeholders.append(n)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "__get__":                            # a tensor property: x.T, x.shape, ...
            name = getattr(getattr(func, "__self__", None), "__name__", name)
        method = getattr(torch.Tensor, name, None) is func or getattr(func, "__name__", "") == "__get__"
        if name in _DATA_DEPENDENT:
            t = args[0] if args else None
            n = self.node_of.get(id(t)) if isinstance(t, torch.Tensor) else None
            if n is not None and n in self.from_input:
                raise TraceError(f"Python control flow on the values of a tensor computed from the input "
                                 f"({name} of {n.name}) at {_user_line()}: the forward would differ between inputs; "
                                 "only control flow on shapes and constants is specialised")
        out = func(*args, **kwargs)
        if name in _SHAPE_ONLY or name == "__setitem__" and not self._touches_input(args):
            return out
        if name == "__setitem__":
            raise TraceError(f"in-place assignment into a tensor computed from the input at {_user_line()} cannot "
                             "be placed; build the tensor with torch.cat instead")
        leaves = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        in_tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if not leaves or not in_tensors:
            return out                                   # shapes, dtypes; factories become constants when used
        fargs = pytree.tree_map(self._arg, args)
        fkwargs = pytree.tree_map(self._arg, kwargs)
        g = self.rec.graph
        if method:
            node = g.call_method(name, tuple(fargs), dict(fkwargs))
        else:
            node = g.call_function(func, tuple(fargs), dict(fkwargs))
        node.meta["where"] = _user_line()
        if self._touches_input((fargs, fkwargs)):
            self.from_input.add(node)
        if isinstance(out, torch.Tensor):
            self._bind(out, node, out.detach().clone())
        elif isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
            self.rec.values[node] = tuple(t.detach().clone() for t in out)
            self.keep.append(out)
            for i, t in enumerate(out):                   # each part: a getitem node of the tuple
                part = g.call_function(operator.getitem, (node, i))
                part.meta["where"] = node.meta["where"]
                if node in self.from_input:
                    self.from_input.add(part)
                self._bind(t, part, self.rec.values[node][i])
        return out

    def _touches_input(self, tree) -> bool:
        found = []
        fx.node.map_aggregate(tree, lambda a: found.append(a) or a)
        return any(isinstance(a, fx.Node) and a in self.from_input for a in found) or any(
            isinstance(a, torch.Tensor) and self.node_of.get(id(a)) in self.from_input for a in found)


def record(module: nn.Module, args: tuple) -> Recording:
    """Run ``module(*args)`` (eval mode, no grad) and record it; ``args`` may nest tensors in
    tuples, lists and dicts (every floating tensor in them is an input)."""
    rec = _Recorder(module)
    leaves, spec = pytree.tree_flatten(args)
    for i, t in enumerate(x for x in leaves if isinstance(x, torch.Tensor)):
        rec.input(t, i)
    hooks = []
    for m in module.modules():                     # a declared activation module stays one call
        if isinstance(getattr(m, "gmn_activation", None), str) and m is not module:
            hooks.append(m.register_forward_hook(_leaf_hook(rec, m.gmn_activation)))
            hooks.append(m.register_forward_pre_hook(_leaf_pre_hook(rec)))
    running: list[str] = []                        # which submodule a failing forward was in
    for qual, m in module.named_modules():
        label = f"{qual or type(module).__name__} ({type(m).__name__})"
        hooks.append(m.register_forward_pre_hook(lambda *_, label=label: running.append(label)))
        hooks.append(m.register_forward_hook(lambda *_: running.pop() and None))
    try:
        with torch.no_grad(), rec:
            out = module(*args)
    except TraceError:
        raise
    except Exception as exc:
        exc.gmn_module = running[-1] if running else None
        raise
    finally:
        for h in hooks:
            h.remove()
    for t in pytree.tree_leaves(out):
        if isinstance(t, torch.Tensor):
            n = rec.node_of.get(id(t))
            if n is None:
                raise TraceError(f"{type(module).__name__}.forward returns a tensor not computed from its input")
            rec.rec.outputs.append(n)
    rec.rec.graph.output(tuple(rec.rec.outputs))
    rec.rec.graph.eliminate_dead_code()
    return rec.rec


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


def record_on_probes(module: nn.Module, xyz_columns, in_dims, example: Optional[Callable]) -> tuple[Recording, list]:
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
            with warnings.catch_warnings(record=True) as caught:   # a rejected width's warnings are dropped
                warnings.simplefilter("always")
                out = record(module, tuple(_probe_inputs(module, dims, cols))), cols
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            return out
        except TraceError:
            raise
        except Exception as exc:  # the forward rejects this width: try the next
            where = getattr(exc, "gmn_module", None)
            errors.append(f"input width {dims}: " + (f"in {where}: " if where else "") + f"{type(exc).__name__}: {exc}")
    if hint is None:                  # siren's modules take {"coords": x} and return a dict
        try:
            return record(module, ({"coords": pts},)), [0, 1, 2]
        except TraceError:
            raise
        except Exception as exc:
            errors.append(f"{{'coords': x}}: {type(exc).__name__}: {exc}")
    raise TraceError(f"running {type(module).__name__}.forward on an example input failed ({'; '.join(errors)}); "
                     "pass in_dims=[...] or example=lambda points: (args,)")


def _leaf_pre_hook(rec: _Recorder) -> Callable:
    def pre(m, inputs):
        m._gmn_leaf_input = inputs[0] if inputs else None
    return pre


def _leaf_hook(rec: _Recorder, name: str) -> Callable:
    def post(m, inputs, out):
        x = getattr(m, "_gmn_leaf_input", None)
        del m._gmn_leaf_input
        n = rec.node_of.get(id(x)) if isinstance(x, torch.Tensor) else None
        if n is None or not isinstance(out, torch.Tensor):
            return None
        node = rec.rec.graph.call_function(leaf_activation, (n, name))
        node.meta["where"] = _user_line()
        if n in rec.from_input:
            rec.from_input.add(node)
        rec._bind(out, node, out.detach().clone())
        return None
    return post


__all__ = ["Recording", "TraceError", "describe", "leaf_activation", "record", "record_on_probes"]
