"""The converter registry: ``@register_converter(ModuleType)`` and the lookup ``find_converter``.

Third-party packages add architectures through the ``gmn_inr.graph_converters`` entry-point
group: each entry point names a module (or object) whose import registers converters.
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, Type

from torch import nn


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
