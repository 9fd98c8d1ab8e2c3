"""What every reference field shares: a spec, an optional frequency encoding, one MLP."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from .encoding import FrequencyEncoding
from .mlp import MLP
from .spec import ArchSpec


def cell_centres(res: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """Centres of the cells of a ``res^3`` grid over ``[lo, hi]^3``: ``[res^3, 3]``, index order
    ``[x, y, z]`` (x slowest). The one such grid of the package (octree voxels, the zoo's gate,
    the conversion baseline)."""
    c = (torch.arange(res, dtype=torch.float32) + 0.5) / res * (hi - lo) + lo
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1).reshape(-1, 3)


class Field(nn.Module):
    """``xyz [..., 3] in [-1,1] -> raw [..., out_dim]``: ``mlp(cat(grid_features(xyz), encoding(xyz)))``,
    or ``mlp(cat(encoding(xyz), grid_features(xyz)))`` when the grid spec says ``encoding_first``.

    Subclasses implement :meth:`grid_features` (``[..., C]``) and set ``grid_dim``; the
    family registry (:func:`~gmn_inr.fields.registry.register_family`) sets ``family``.
    """

    family: str = ""
    grid_dim: int = 0
    #: True when a field's storage depends on the object (an octree's occupied voxels): built
    #: with ``occupancy=``, reloaded with ``from_state_dict``
    sparse: bool = False

    def __init__(self, spec: ArchSpec):
        super().__init__()
        if spec.family != self.family:
            raise ValueError(f"{type(self).__name__} needs an ArchSpec of family {self.family!r}, got {spec.family!r}")
        self.spec = spec
        self.encoding = FrequencyEncoding(spec.encoding) if spec.encoding is not None else None
        self.mlp = MLP(spec.mlp_in_dim, spec.out_dim, spec.mlp)
        #: the MLP input order: ``cat(encoding, grid features)`` instead of the reverse
        self.encoding_first = bool(getattr(spec.grid, "encoding_first", False))

    def grid_features(self, xyz: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grid_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of the grid's storage: every parameter outside the MLP and the
        encoding. The zoo fits these at the grid learning rate, the rest at the MLP's."""
        skip = ("mlp.", "encoding.")
        return ((n, p) for n, p in self.named_parameters() if not n.startswith(skip))

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        if xyz.shape[-1] != 3:
            raise ValueError(f"{type(self).__name__} expects xyz [..., 3], got {tuple(xyz.shape)}")
        parts = []
        if self.grid_dim:
            parts.append(self.grid_features(xyz))
        if self.encoding is not None:
            parts.append(self.encoding(xyz))
        if self.encoding_first:
            parts.reverse()
        return self.mlp(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))

    def extra_repr(self) -> str:
        return f"arch={self.spec.name or '?'}, out_dim={self.spec.out_dim}"
