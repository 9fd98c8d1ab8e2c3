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
    ``grid_sample`` (bilinear, zero padding, ``align_corners`` from the spec, False by default):
    ``u`` indexes the last (width) dimension, ``v`` the height. The three features are summed
    (``[..., C]``) or concatenated plane after plane (``aggregate="concat"``: ``[..., 3C]``), then
    ``MLP(cat(features, PE(xyz)))`` (``cat(PE(xyz), features)`` with ``encoding_first``).
    Default: Cardace et al.'s R=32, C=16, sine 3 x 64."""

    family = "triplane"

    def __init__(self, spec: ArchSpec | None = None):
        spec = spec or default_spec("triplane")
        super().__init__(spec)
        g = spec.grid
        self.grid_dim = g.feature_dim
        self.align_corners = g.align_corners
        self.concat = g.aggregate == "concat"
        self.planes = nn.Parameter(torch.randn(3, g.channels, g.resolution, g.resolution) * 0.1)
        self.register_buffer("plane_axes", torch.tensor(PLANE_AXES), persistent=False)

    def sample_grid(self, pts: torch.Tensor) -> torch.Tensor:
        """``grid_sample``'s grid ``[3, 1, M, 2]`` of points ``[M, 3]``: per plane its (u, v)."""
        uv = pts[:, self.plane_axes]                          # [M, 3, 2] -> per plane (u, v)
        return uv.permute(1, 0, 2).unsqueeze(1)               # [3, 1, M, 2]

    def plane_features(self, grid: torch.Tensor) -> torch.Tensor:
        """``[3, C, M]``: each plane sampled at :meth:`sample_grid`'s ``grid``."""
        return F.grid_sample(self.planes, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=self.align_corners).squeeze(2)

    def grid_features(self, xyz: torch.Tensor) -> torch.Tensor:
        lead = xyz.shape[:-1]
        feats = self.plane_features(self.sample_grid(xyz.reshape(-1, 3)))                # [3, C, M]
        if self.concat:
            return feats.permute(2, 0, 1).reshape(*lead, self.grid_dim)               # [..., 3C], plane-major
        return feats.sum(0).transpose(0, 1).reshape(*lead, self.grid_dim)             # [..., C]
