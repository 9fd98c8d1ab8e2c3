"""Add an architecture family gmn_inr does not know: a dense voxel grid, in this one file.

``@register_family`` below is all the package needs: ``ArchSpec(family="voxel")`` validates and
scales for the presets, ``build_field`` / ``load_field`` build it, ``to_graph`` converts it, the
zoo fits it (its grid at the grid learning rate, through ``Field.grid_parameters()``), and its
architectures ``VOX`` (training) and ``VOX-2L``, ``VOX-32R`` (unseen variants) can be named
anywhere an architecture can::

    gmn-inr --plugin examples/voxel_grid.py zoo build --preset tiny --out zoo_vox
    gmn-inr --plugin examples/voxel_grid.py train zoo_vox --preset tiny --archs MLP,TRI,HASH,OCT,VOX --out runs/vox
    python benchmarks/unseen_arch.py --plugin examples/voxel_grid.py --preset tiny --zoo zoo_vox

The converter describes the grid in the generic roles every family shares (``graphs.cells``:
a storage cell per voxel, with its position and level, feeding the channel nodes), so an
encoder trained without this family already has trained weights for every node and edge of
its graphs. The shared MLP part (``add_field_mlp``) adds the neurons and their probe features.
Run ``python examples/voxel_grid.py`` to convert one.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gmn_inr.fields import ArchSpec, Field, MLPSpec, SpecError, register_family
from gmn_inr.fields.spec import PRESET_FACTOR
from graphs import GraphBuilder, add_field_mlp, add_grid_channels, add_storage_cells, to_graph


@dataclass(frozen=True)
class VoxelSpec:
    """A dense ``[C, R, R, R]`` grid, trilinear with ``align_corners=True`` (values at the corners)."""

    resolution: int = 64
    channels: int = 4

    def validate(self) -> None:
        if self.resolution < 2 or self.channels < 1:
            raise SpecError(f"VoxelSpec needs resolution >= 2 and channels >= 1, got {self}")

    @property
    def feature_dim(self) -> int:           # what the grid hands the MLP
        return self.channels

    def scaled(self, preset: str) -> "VoxelSpec":
        # a grid alone (no coordinate input) needs cells finer than the objects' parts: 16^3 at tiny
        return dataclasses.replace(self, resolution=max(4, self.resolution // PRESET_FACTOR[preset]))


def _mlp(**kw) -> MLPSpec:
    return MLPSpec(**{"hidden_layers": 2, "hidden_dim": 32, "bias": True, **kw})


def voxel_grid_to_graph(field: "VoxelGridField"):
    """A storage cell per voxel (its position and level), a node per channel, one edge per value."""
    C, R = field.grid.shape[:2]
    b = GraphBuilder()
    ax = torch.linspace(-1, 1, R)
    d, h, w = torch.meshgrid(ax, ax, ax, indexing="ij")      # grid[c, d, h, w] sits at (x, y, z) = (w, h, d)
    pos = torch.stack([w, h, d], -1).reshape(-1, 3)
    chans = add_grid_channels(b, C)
    add_storage_cells(b, chans, field.grid.reshape(C, -1).t(), pos, level=math.log2(R - 1))
    add_field_mlp(b, field, chans)
    return b.build(field.spec, field.spec.name or "VoxelGrid")


@register_family("voxel", grid=VoxelSpec, converter=voxel_grid_to_graph, training=("VOX",), archs={
    "VOX": dict(mlp=_mlp(), grid=VoxelSpec()),
    "VOX-2L": dict(mlp=_mlp(hidden_layers=1), grid=VoxelSpec()),
    "VOX-32R": dict(mlp=_mlp(), grid=VoxelSpec(resolution=32)),
})
class VoxelGridField(Field):
    """``xyz [..., 3] -> [..., out_dim]``: trilinear features from ``grid [C, R, R, R]``, then the MLP."""

    def __init__(self, spec: ArchSpec | None = None, resolution: int = 64, channels: int = 4, out_dim: int = 1):
        spec = spec or ArchSpec(family="voxel", out_dim=out_dim, mlp=_mlp(),
                                grid=VoxelSpec(resolution, channels), name="VOX")
        super().__init__(spec)
        g = spec.grid
        self.grid_dim = g.channels
        self.grid = nn.Parameter(torch.randn(g.channels, g.resolution, g.resolution, g.resolution) * 0.1)

    def grid_features(self, xyz: torch.Tensor) -> torch.Tensor:
        """``xyz [..., 3] -> [..., C]``."""
        pts = xyz.reshape(1, -1, 1, 1, 3)                     # grid_sample reads (x, y, z) as (W, H, D)
        feats = F.grid_sample(self.grid[None], pts, align_corners=True)[0, :, :, 0, 0].t()
        return feats.reshape(*xyz.shape[:-1], -1)


if __name__ == "__main__":
    field = VoxelGridField()
    graph = to_graph(field)
    n_params = sum(p.numel() for p in field.parameters())
    print(f"{graph}: {n_params} parameters, one edge each: {graph.num_edges == n_params}")
