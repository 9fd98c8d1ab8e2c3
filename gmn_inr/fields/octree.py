"""NGLOD-style sparse octree fields: features only at the corners of occupied voxels."""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .base import Field, cell_centres
from .hashgrid import CORNERS
from .registry import register_family
from .spec import RAW_XYZ, ArchSpec, OctreeSpec, default_spec, relu_bias_mlp

Occupancy = Union[None, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def voxel_centres(res: int) -> torch.Tensor:
    """Centres ``[res^3, 3]`` in [-1,1] of a ``res^3`` voxel grid, index order ``[x, y, z]``."""
    return cell_centres(res)


def occupancy_pyramid(occupancy: Occupancy, lods: tuple[int, ...]) -> list[torch.Tensor]:
    """Boolean occupancy ``[2^lod]^3`` for every LOD, coarser ones max-pooled from the finest
    so that an occupied child always has an occupied parent (an octree)."""
    finest = 2 ** lods[-1]
    if occupancy is None:
        occ = torch.ones(finest, finest, finest, dtype=torch.bool)
    elif callable(occupancy):
        occ = torch.as_tensor(occupancy(voxel_centres(finest))).reshape(finest, finest, finest).bool()
    else:
        occ = torch.as_tensor(occupancy).bool()
        if occ.shape != (finest,) * 3:
            raise ValueError(f"octree occupancy must be [{finest}, {finest}, {finest}] at the finest LOD, got {tuple(occ.shape)}")
    out = []
    for lod in lods:
        k = finest // 2 ** lod
        out.append(F.max_pool3d(occ[None, None].float(), k)[0, 0].bool() if k > 1 else occ)
    return out


def corner_vertices(occ: torch.Tensor) -> torch.Tensor:
    """Integer coordinates ``[V, 3]`` (in ``0..res``) of every corner of an occupied voxel, sorted
    by linear index ``x + y*(res+1) + z*(res+1)^2``."""
    res = occ.shape[0]
    vox = occ.nonzero()                                                  # [M, 3]
    corners = (vox.unsqueeze(1) + CORNERS).reshape(-1, 3)
    n = res + 1
    lin = torch.unique(corners[:, 0] + corners[:, 1] * n + corners[:, 2] * n * n)
    return torch.stack([lin % n, (lin // n) % n, lin // (n * n)], -1)


#: the octree family (ours, NGLOD-style) and its unseen variants
ARCHS = {
    "OCT": dict(mlp=relu_bias_mlp(), encoding=RAW_XYZ, grid=OctreeSpec()),
    "OCT-2L": dict(mlp=relu_bias_mlp(hidden_layers=2), encoding=RAW_XYZ, grid=OctreeSpec()),
    "OCT-32H": dict(mlp=relu_bias_mlp(hidden_dim=32), encoding=RAW_XYZ, grid=OctreeSpec()),
    "OCT-2LOD": dict(mlp=relu_bias_mlp(), encoding=RAW_XYZ, grid=OctreeSpec(n_lods=2)),
    "OCT-4C": dict(mlp=relu_bias_mlp(), encoding=RAW_XYZ, grid=OctreeSpec(channels=4)),
}


@register_family("octree", grid=OctreeSpec, archs=ARCHS, training=("OCT",))
class OctreeField(Field):
    """Sparse octree of LODs ``base_lod .. base_lod + n_lods - 1`` (``2^lod`` voxels per axis).

    LOD ``i`` stores ``features_i [V_i, C]`` at the voxel-corner vertices ``vertices_i [V_i, 3]``
    (integers in ``0..2^lod``; position ``2 v / 2^lod - 1``) of its occupied voxels. A query is
    trilinearly interpolated from its cell's 8 corners (NGLOD's ``align_corners=True``; corners
    that are not stored read zero), features are summed over LODs, then
    ``MLP(cat(features, xyz))``. Empty space stores nothing.

    ``occupancy``: bool ``[R, R, R]`` at the finest LOD (``R = 2^(base_lod+n_lods-1)``, index
    ``[x, y, z]``), a callable ``xyz [M,3] -> bool [M]`` evaluated at voxel centres, or None
    (all occupied). The vertex buffers are in the state dict, so :func:`load_field` rebuilds a
    stored octree of any sparsity.
    """

    family = "octree"
    #: sparse per object: built from an occupancy, fitted by padding (gmn_inr.zoo.batch)
    sparse = True

    def __init__(self, spec: ArchSpec | None = None, occupancy: Occupancy = None,
                 vertices: Optional[list[torch.Tensor]] = None):
        spec = spec or default_spec("octree")
        super().__init__(spec)
        g = spec.grid
        self.grid_dim = g.channels
        self.lods = g.lods
        if vertices is None:
            vertices = [corner_vertices(o) for o in occupancy_pyramid(occupancy, self.lods)]
        if len(vertices) != len(self.lods):
            raise ValueError(f"octree needs vertices for {len(self.lods)} LODs, got {len(vertices)}")
        self.features = nn.ParameterList()
        for i, (lod, v) in enumerate(zip(self.lods, vertices)):
            v = torch.as_tensor(v).long()
            n = 2 ** lod + 1
            if v.ndim != 2 or v.shape[1] != 3 or (v.numel() and (v.min() < 0 or v.max() >= n)):
                raise ValueError(f"octree LOD {lod}: vertices must be integers [V, 3] in 0..{n - 1}")
            self.register_buffer(f"vertices_{i}", v)
            # dense map vertex -> row, V_i (a zero row) where nothing is stored; derived, not saved
            lookup = torch.full((n ** 3,), v.shape[0], dtype=torch.long)
            lookup[v[:, 0] + v[:, 1] * n + v[:, 2] * n * n] = torch.arange(v.shape[0])
            self.register_buffer(f"lookup_{i}", lookup, persistent=False)
            self.features.append(nn.Parameter(torch.randn(v.shape[0], g.channels) * 0.01))
        self.register_buffer("corners", CORNERS.clone(), persistent=False)

    def vertices(self, i: int) -> torch.Tensor:
        return getattr(self, f"vertices_{i}")

    @classmethod
    def from_state_dict(cls, spec: ArchSpec, state_dict: dict) -> "OctreeField":
        try:
            verts = [state_dict[f"vertices_{i}"] for i in range(spec.grid.n_lods)]
        except KeyError as exc:
            raise ValueError(f"octree state dict lacks {exc}: not an OctreeField of {spec.grid}") from None
        field = cls(spec, vertices=verts)
        field.load_state_dict(state_dict)
        return field

    def grid_features(self, xyz: torch.Tensor) -> torch.Tensor:
        lead = xyz.shape[:-1]
        pts = xyz.reshape(-1, 3)
        out = pts.new_zeros(pts.shape[0], self.grid_dim)
        for i, lod in enumerate(self.lods):  # a handful of LODs, each fully vectorised
            res = 2 ** lod
            n = res + 1
            p = ((pts + 1) * 0.5 * res).clamp(0, res)
            cell = p.floor().clamp(max=res - 1)
            frac = p - cell
            c = cell.long().unsqueeze(1) + self.corners                     # [M, 8, 3]
            w = torch.where(self.corners.bool(), frac.unsqueeze(1), 1 - frac.unsqueeze(1)).prod(-1)  # [M, 8]
            rows = getattr(self, f"lookup_{i}")[c[..., 0] + c[..., 1] * n + c[..., 2] * n * n]
            table = torch.cat([self.features[i], self.features[i].new_zeros(1, self.grid_dim)])
            out = out + (w.unsqueeze(-1) * table.index_select(0, rows.reshape(-1)).view(*w.shape, -1)).sum(1)
        return out.reshape(*lead, self.grid_dim)
