"""How a field's raw outputs become physical quantities (shared by fitting and rendering)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

FUNCTIONS = ("radiance", "sdf", "udf", "occupancy")


def radiance_from_raw(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``raw [..., 4] -> (rgb [..., 3] in (0,1), sigma [...] >= 0)``: sigmoid colour, softplus density."""
    return torch.sigmoid(raw[..., :3]), F.softplus(raw[..., 3])


def out_dim_of(function: str) -> int:
    """4 for radiance fields, 1 for sdf / udf / occupancy (logit)."""
    if function not in FUNCTIONS:
        raise ValueError(f"unknown implicit function {function!r}; known: {FUNCTIONS}")
    return 4 if function == "radiance" else 1
