"""``to_graph(module)`` and ``to_batch(modules)``: the registry's converter, the cached template
of a built-in dense field, or tracing for a module type with no converter."""
from __future__ import annotations

import copy
from typing import Iterable, Optional

import torch
from torch import nn

from .graph import GraphError, batch_graphs
from .registry import Converter, UnregisteredArchitectureError, check_finite, find_converter
from .template import cached_template, ready_template, templatable
from .traced import TraceError, trace_to_graph


def to_graph(module: nn.Module):
    """Convert ``module`` into a :class:`~graphs.ParameterGraph` through the registry."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"to_graph takes an nn.Module, got {type(module).__name__}")
    tpl = ready_template(module)
    if tpl is not None and getattr(find_converter(module), "uses_template", False):
        # a built-in dense field of a known spec: the template path checks every parameter (finite,
        # within MAX_PARAMETER_ABS) and probe row once, the structure once per spec
        with torch.no_grad():
            return tpl.convert(module)
    check_finite(module)                   # once, for every path below
    module = _as_float32(module)
    try:
        converter = find_converter(module)
    except UnregisteredArchitectureError as exc:
        with torch.no_grad():
            return _tracing_fallback(module, exc)(module).validate()
    if getattr(converter, "uses_template", False):
        if templatable(module):
            # checked in the template path: every parameter (one edge value each) and probe row once,
            # the structure once per spec
            with torch.no_grad():
                return converter(module)
    with torch.no_grad():
        return converter(module).validate()


def _as_float32(module: nn.Module) -> nn.Module:
    """A float32 copy of a module whose floating parameters or buffers are another dtype (float64,
    float16, bfloat16): graphs hold float32 features and the probe points are float32, so the module
    is converted (exactly for float16 / bfloat16) rather than left to fail with a dtype error. tcnn
    modules (half precision by design) are left to their converters."""
    tensors = list(module.parameters()) + list(module.buffers())
    if all(not t.is_floating_point() or t.dtype == torch.float32 for t in tensors) or \
            type(module).__module__.startswith("tinycudann"):
        return module
    return copy.deepcopy(module).float()


class UntraceableModuleError(UnregisteredArchitectureError, GraphError):
    """No converter is registered for the module's type and tracing it failed too."""


def _tracing_fallback(module: nn.Module, unregistered: UnregisteredArchitectureError) -> Converter:
    """A module with no registered converter is traced (``graphs.traced``); when that fails the
    error names the operation tracing could not place, then the recipe for a converter."""
    try:
        graph = trace_to_graph(module)
    except TraceError as exc:
        raise UntraceableModuleError(f"tracing {type(module).__name__} as an MLP failed: {exc}\n{unregistered}") from None
    return lambda _m: graph


def to_batch(modules: Iterable[nn.Module], device: Optional[torch.device | str] = None):
    """Many INRs -> one PyG ``Batch``, equal to ``batch_graphs([to_graph(m) for m in modules])``.

    Fields of one built-in dense architecture (the common case: a zoo's INRs of one spec) are
    converted together from their template; anything else (octrees, traced or plug-in modules,
    a mix of architectures) is converted one at a time, grouped runs of one spec still batched.
    """
    modules = list(modules)
    if not modules:
        raise ValueError("to_batch needs at least one module")
    first = modules[0]
    same = templatable(first) and all(type(m) is type(first) and templatable(m) and m.spec == first.spec
                                      for m in modules)
    if same and getattr(find_converter(first), "uses_template", False):
        tpl = cached_template(first)
        if tpl is None:
            to_graph(first)                     # the family's converter builds and caches the template
            tpl = cached_template(first)
        if tpl is not None:
            for m in modules:
                check_finite(m)                 # the bounds to_graph checks, for every INR
            b = tpl.convert_batch(modules)
            return b.to(device) if device is not None else b
    return batch_graphs([to_graph(m) for m in modules], device=device)
