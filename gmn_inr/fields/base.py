"""What every reference field shares: a spec, an optional frequency encoding, one MLP."""
from __future__ import annotations

import torch
from torch import nn

from .encoding import FrequencyEncoding
from .mlp import MLP
from .spec import ArchSpec


class Field(nn.Module):
    """``xyz [..., 3] in [-1,1] -> raw [..., out_dim]``: ``mlp(cat(grid_features(xyz), encoding(xyz)))``.

    Subclasses implement :meth:`grid_features` (``[..., C]``) and set ``grid_dim``.
    """

    family: str = ""
    grid_dim: int = 0

    def __init__(self, spec: ArchSpec):
        super().__init__()
        if spec.family != self.family:
            raise ValueError(f"{type(self).__name__} needs an ArchSpec of family {self.family!r}, got {spec.family!r}")
        self.spec = spec
        self.encoding = FrequencyEncoding(spec.encoding) if spec.encoding is not None else None
        self.mlp = MLP(spec.mlp_in_dim, spec.out_dim, spec.mlp)

    def grid_features(self, xyz: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        if xyz.shape[-1] != 3:
            raise ValueError(f"{type(self).__name__} expects xyz [..., 3], got {tuple(xyz.shape)}")
        parts = []
        if self.grid_dim:
            parts.append(self.grid_features(xyz))
        if self.encoding is not None:
            parts.append(self.encoding(xyz))
        return self.mlp(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))

    def extra_repr(self) -> str:
        return f"arch={self.spec.name or '?'}, out_dim={self.spec.out_dim}"
