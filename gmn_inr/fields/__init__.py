"""Reference INR architectures as ``nn.Module``s, built from serialisable :class:`ArchSpec`s.

Every field maps ``xyz [..., 3]`` in [-1, 1] to raw ``[..., out_dim]`` values (4 = r, g, b,
sigma before :func:`~gmn_inr.fields.activations.radiance_from_raw`; 1 = sdf, udf or
occupancy logit). All families share :class:`MLP` and :class:`FrequencyEncoding`; each registers
itself with :func:`register_family` (:mod:`gmn_inr.fields.registry`), and everything that needs
the list of families or architectures reads that registry.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .activations import FUNCTIONS, out_dim_of, radiance_from_raw
from .base import Field, cell_centres
from .encoding import FrequencyEncoding
from .mlp import MLP, Sine
from .registry import Family, architectures, families, get_family, load_plugin, load_plugins, register_family
# the built-in families register themselves on import, in this order (it orders ARCHITECTURES)
from .mlp_field import MLPField
from .triplane import TriplaneField
from .hashgrid import HashGridEncoding, HashGridField, hash_levels
from .octree import OctreeField
from .spec import (ARCHITECTURES, FAMILIES, PRESETS, TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES, ArchSpec,
                   FrequencySpec, HashGridSpec, MLPSpec, OctreeSpec, SpecError, TriplaneSpec, arch_spec,
                   arch_spec_for, default_spec)


def _field_class(spec: ArchSpec) -> type:
    try:
        return get_family(spec.family).field
    except KeyError as exc:
        raise SpecError(str(exc.args[0])) from None


def build_field(spec: ArchSpec, occupancy=None) -> Field:
    """A freshly initialised field of ``spec`` (``occupancy`` only for sparse fields: octrees)."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"build_field needs an ArchSpec, got {type(spec).__name__}")
    cls = _field_class(spec)
    if getattr(cls, "sparse", False):
        return cls(spec, occupancy=occupancy)
    if occupancy is not None:
        raise ValueError(f"occupancy only applies to sparse (octree) fields, not {spec.family!r}")
    return cls(spec)


def load_field(spec: ArchSpec, state_dict: Mapping[str, torch.Tensor]) -> Field:
    """Rebuild a field from ``spec`` and its ``state_dict()``; shapes must match the spec."""
    cls = _field_class(spec)
    if getattr(cls, "sparse", False):                   # its storage's shape lives in the state dict
        return cls.from_state_dict(spec, dict(state_dict))
    field = build_field(spec)
    try:
        field.load_state_dict(dict(state_dict))
    except RuntimeError as exc:
        raise ValueError(f"state dict does not fit a {spec.name or spec.family} field: {exc}") from None
    return field


__all__ = [
    "ARCHITECTURES", "FAMILIES", "FUNCTIONS", "Family", "architectures", "cell_centres", "families",
    "get_family", "load_plugin", "load_plugins", "register_family", "PRESETS", "TRAINING_ARCHITECTURES",
    "UNSEEN_ARCHITECTURES", "ArchSpec", "Field", "FrequencyEncoding", "FrequencySpec", "HashGridEncoding",
    "HashGridField", "HashGridSpec", "MLP", "MLPField", "MLPSpec", "OctreeField", "OctreeSpec", "Sine",
    "SpecError", "TriplaneField", "TriplaneSpec", "arch_spec", "arch_spec_for", "build_field", "default_spec",
    "hash_levels", "load_field", "out_dim_of", "radiance_from_raw",
]
