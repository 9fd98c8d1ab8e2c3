"""The converter registry: ``@register_converter(ModuleType)`` and ``to_graph(module)``.

Third-party packages add architectures through the ``gmn_inr.graph_converters`` entry-point
group: each entry point names a module (or object) whose import registers converters.
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, Type

import torch
from torch import nn

from .graph import GraphError

ENTRY_POINT_GROUP = "gmn_inr.graph_converters"

Converter = Callable[[nn.Module], "ParameterGraph"]  # noqa: F821
_CONVERTERS: Dict[type, Converter] = {}
_entry_points_loaded = False


class UnregisteredArchitectureError(TypeError):
    """``to_graph`` was given a module type no converter is registered for."""


def register_converter(module_type: Type[nn.Module]) -> Callable[[Converter], Converter]:
    """Decorator: ``@register_converter(MyField)`` over ``def convert(module) -> ParameterGraph``.

    Registering a type twice warns and replaces the earlier converter (as timm does)."""
    if not isinstance(module_type, type):
        raise TypeError(f"register_converter takes a module class, got {module_type!r}")

    def decorate(fn: Converter) -> Converter:
        if module_type in _CONVERTERS and _CONVERTERS[module_type] is not fn:
            warnings.warn(f"replacing the graph converter registered for {module_type.__qualname__}", stacklevel=2)
        _CONVERTERS[module_type] = fn
        return fn

    return decorate


def registered_types() -> list[type]:
    return list(_CONVERTERS)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from gmn_inr.fields.registry import load_entry_point_group

    load_entry_point_group(ENTRY_POINT_GROUP, "graph converter")


def find_converter(module: nn.Module) -> Converter:
    """The converter of ``type(module)`` or of its nearest registered base class: one registered
    here, or the ``converter=`` of the field's family (:func:`gmn_inr.fields.register_family`)."""
    from gmn_inr.fields.registry import family_of_field_type

    for attempt in range(2):
        for cls in type(module).__mro__:
            if cls in _CONVERTERS:
                return _CONVERTERS[cls]
        fam = family_of_field_type(type(module))
        if fam is not None and fam.converter is not None:
            return fam.converter
        if attempt == 0:
            _load_entry_points()
    t = type(module)
    raise UnregisteredArchitectureError(
        f"no parameter-graph converter is registered for {t.__module__}.{t.__qualname__}. "
        f"Write one in a file of your own:\n"
        f"    from graphs import register_converter, ParameterGraph\n"
        f"    @register_converter({t.__name__})\n"
        f"    def convert(module) -> ParameterGraph: ...\n"
        f"and import that file before calling to_graph (or expose it in the '{ENTRY_POINT_GROUP}' "
        f"entry-point group of an installed package). Registered: "
        f"{', '.join(c.__qualname__ for c in _CONVERTERS) or 'none'}.")


#: the largest parameter magnitude a graph takes: far above any trained INR's weights, far below what
#: overflows the encoder's float32 features (a finite 1e38 weight gave an all-NaN embedding)
MAX_PARAMETER_ABS = 1e6


def check_finite(module: nn.Module) -> None:
    """Raise ValueError naming the first parameter that holds NaN or inf, or a value whose magnitude
    is over :data:`MAX_PARAMETER_ABS` (it would overflow the graph's features)."""
    from .graph import _all_finite

    for name, p in module.named_parameters():
        if not p.is_floating_point():
            continue
        if not _all_finite(p.detach()):
            raise ValueError(f"parameter {name!r} of {type(module).__name__} holds NaN or inf values")
        big = float(p.detach().abs().max()) if p.numel() else 0.0
        if big > MAX_PARAMETER_ABS:
            raise ValueError(f"parameter {name!r} of {type(module).__name__} holds a value of magnitude {big:.3g}, "
                             f"over {MAX_PARAMETER_ABS:g}: it would overflow the graph's features")


def to_graph(module: nn.Module):
    """Convert ``module`` into a :class:`~graphs.ParameterGraph` through the registry."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"to_graph takes an nn.Module, got {type(module).__name__}")
    check_finite(module)                   # once, for every path below
    module = _as_float32(module)
    try:
        converter = find_converter(module)
    except UnregisteredArchitectureError as exc:
        with torch.no_grad():
            return _tracing_fallback(module, exc)(module).validate()
    if getattr(converter, "uses_template", False):
        from .template import templatable

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
    import copy

    return copy.deepcopy(module).float()


class UntraceableModuleError(UnregisteredArchitectureError, GraphError):
    """No converter is registered for the module's type and tracing it failed too."""


def _tracing_fallback(module: nn.Module, unregistered: UnregisteredArchitectureError) -> Converter:
    """A module with no registered converter is traced (``graphs.traced``); when that fails the
    error names the operation tracing could not place, then the recipe for a converter."""
    from .traced import TraceError, trace_to_graph

    try:
        graph = trace_to_graph(module)
    except TraceError as exc:
        raise UntraceableModuleError(f"tracing {type(module).__name__} as an MLP failed: {exc}\n{unregistered}") from None
    return lambda _m: graph
