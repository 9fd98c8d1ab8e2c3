"""Tri-plane fields (Cardace et al.)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Field
from .registry import register_family
from .spec import CARDACE_ENCODING, ArchSpec, TriplaneSpec, default_spec, sine_mlp

#: the coordinate axes (u, v) each plane is indexed by: (x,y), (x,z), (y,z)
PLANE_AXES = ((0, 1), (0, 2), (1, 2))

#: Table 7's TRI and its unseen variants
ARCHS = {
    "TRI": dict(mlp=sine_mlp(), encoding=CARDACE_ENCODING, grid=TriplaneSpec()),
    "TRI-2L": dict(mlp=sine_mlp(hidden_layers=2), encoding=CARDACE_ENCODING, grid=TriplaneSpec()),
    "TRI-32H": dict(mlp=sine_mlp(hidden_dim=32), encoding=CARDACE_ENCODING, grid=TriplaneSpec()),
    "TRI-16W": dict(mlp=sine_mlp(), encoding=CARDACE_ENCODING, grid=TriplaneSpec(resolution=16)),
    "TRI-8C": dict(mlp=sine_mlp(), encoding=CARDACE_ENCODING, grid=TriplaneSpec(channels=8)),
}


@register_family("triplane", grid=TriplaneSpec, archs=ARCHS, training=("TRI",))
class TriplaneField(Field):
    """``planes [3, C, R, R]``; plane ``p`` is sampled at ``(u, v) = xyz[PLANE_AXES[p]]`` with
    ``grid_sample`` (bilinear, zero padding, ``align_corners=False``): ``u`` indexes the last
    (width) dimension, ``v`` the height. The three features are summed, then
    ``MLP(cat(features, PE(xyz)))``. Default: Cardace et al.'s R=32, C=16, sine 3 x 64."""

    family = "triplane"

    def __init__(self, spec: ArchSpec | None = None):
        spec = spec or default_spec("triplane")
        super().__init__(spec)
        g = spec.grid
        self.grid_dim = g.channels
        self.planes = nn.Parameter(torch.randn(3, g.channels, g.resolution, g.resolution) * 0.1)
        self.register_buffer("plane_axes", torch.tensor(PLANE_AXES), persistent=False)

    def grid_features(self, xyz: torch.Tensor) -> torch.Tensor:
        lead = xyz.shape[:-1]
        pts = xyz.reshape(-1, 3)
        uv = pts[:, self.plane_axes]                          # [M, 3, 2] -> per plane (u, v)
        grid = uv.permute(1, 0, 2).unsqueeze(1)               # [3, 1, M, 2]
        feats = F.grid_sample(self.planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return feats.sum(0).squeeze(1).transpose(0, 1).reshape(*lead, self.grid_dim)  # [..., C]
