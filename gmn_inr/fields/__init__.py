"""Reference INR architectures as ``nn.Module``s, built from serialisable :class:`ArchSpec`s.

Every field maps ``xyz [..., 3]`` in [-1, 1] to raw ``[..., out_dim]`` values (4 = r, g, b,
sigma before :func:`~gmn_inr.fields.activations.radiance_from_raw`; 1 = sdf, udf or
occupancy logit). All four families share :class:`MLP` and :class:`FrequencyEncoding`.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .activations import FUNCTIONS, out_dim_of, radiance_from_raw
from .base import Field
from .encoding import FrequencyEncoding
from .hashgrid import HashGridEncoding, HashGridField, hash_levels
from .mlp import MLP, Sine
from .mlp_field import MLPField
from .octree import OctreeField
from .spec import (ARCHITECTURES, FAMILIES, PRESETS, TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES, ArchSpec,
                   FrequencySpec, HashGridSpec, MLPSpec, OctreeSpec, SpecError, TriplaneSpec, arch_spec,
                   arch_spec_for, default_spec)
from .triplane import TriplaneField

FIELD_CLASSES = {"mlp": MLPField, "triplane": TriplaneField, "hashgrid": HashGridField, "octree": OctreeField}


def build_field(spec: ArchSpec, occupancy=None) -> Field:
    """A freshly initialised field of ``spec`` (``occupancy`` only for octrees)."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"build_field needs an ArchSpec, got {type(spec).__name__}")
    cls = FIELD_CLASSES[spec.family]
    if spec.family == "octree":
        return cls(spec, occupancy=occupancy)
    if occupancy is not None:
        raise ValueError(f"occupancy only applies to octree fields, not {spec.family!r}")
    return cls(spec)


def load_field(spec: ArchSpec, state_dict: Mapping[str, torch.Tensor]) -> Field:
    """Rebuild a field from ``spec`` and its ``state_dict()``; shapes must match the spec."""
    if spec.family == "octree":
        return OctreeField.from_state_dict(spec, dict(state_dict))
    field = build_field(spec)
    try:
        field.load_state_dict(dict(state_dict))
    except RuntimeError as exc:
        raise ValueError(f"state dict does not fit a {spec.name or spec.family} field: {exc}") from None
    return field


__all__ = [
    "ARCHITECTURES", "FAMILIES", "FIELD_CLASSES", "FUNCTIONS", "PRESETS", "TRAINING_ARCHITECTURES",
    "UNSEEN_ARCHITECTURES", "ArchSpec", "Field", "FrequencyEncoding", "FrequencySpec", "HashGridEncoding",
    "HashGridField", "HashGridSpec", "MLP", "MLPField", "MLPSpec", "OctreeField", "OctreeSpec", "Sine",
    "SpecError", "TriplaneField", "TriplaneSpec", "arch_spec", "arch_spec_for", "build_field", "default_spec",
    "hash_levels", "load_field", "out_dim_of", "radiance_from_raw",
]
