"""Per-object supervision, sampled once and shared by every INR of the object.

inr2vec-style sampling: near-surface points (surface + small and larger Gaussian offsets) and
uniform points in ``[-1,1]^3``, with the ground-truth sdf and part colour at each, plus the
points where the quality gate (:mod:`gmn_inr.zoo.gate`) measures. ``cfg`` is a
:class:`~gmn_inr.zoo.fit.FitConfig`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from gmn_inr.fields import ArchSpec, cell_centres
from gmn_inr.fields.octree import voxel_centres

from .primitives import Shape


@dataclass
class ObjectSamples:
    """Per-object supervision, shared by every INR of the object.

    ``points [P, 3]``, ``sdf [P]``, ``color [P, 3]``: the training pool;
    ``surface [S, 3]``, ``surface_color [S, 3]``: for the gate;
    ``gate_points [Q, 3]``, ``grid_occ [Q]`` (bool) and ``gate_sdf [Q]``: where the gate
    measures, and the true occupancy and sdf there (see :func:`gate_points`).
    """

    object_id: str
    points: torch.Tensor
    sdf: torch.Tensor
    color: torch.Tensor
    surface: torch.Tensor
    surface_color: torch.Tensor
    grid_occ: torch.Tensor
    gate_points: torch.Tensor = None
    gate_sdf: torch.Tensor = None
    shape: Shape = field(repr=False, default=None)


def _sdf_color(shape: Shape, p: torch.Tensor, chunk: int = 65536, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    ds, cs = [], []
    with torch.no_grad():
        for s in range(0, len(p), chunk):
            q = p[s:s + chunk] if device is None else p[s:s + chunk].to(device)
            if hasattr(shape, "sdf_and_color"):
                d, c = shape.sdf_and_color(q)
            else:
                d, c = shape.sdf(q), shape.color(q)
            ds.append(d.cpu())
            cs.append(c.cpu())
    return torch.cat(ds), torch.cat(cs)


def prepare_samples(shape: Shape, cfg, seed: int = 0, device=None) -> ObjectSamples:
    """inr2vec-style pool for one object: 50% surface + N(0, 0.01), 20% surface + N(0, 0.05),
    30% uniform in ``[-1,1]^3``; ground truth at each; surface points; gate-grid occupancy.

    ``device``: where a shape that can (``on_device``: the procedural ones) pulls points onto its
    surface and evaluates its sdf and colour; every random draw stays on the CPU and the samples
    come back there. Meshes are sampled on the CPU whatever ``device`` says."""
    g = torch.Generator().manual_seed(seed)
    device = device if getattr(shape, "on_device", False) and torch.device(device or "cpu").type != "cpu" else None
    surf = shape.sample_surface(max(cfg.surface, cfg.pool // 2), generator=g,
                                **({"device": device} if device is not None else {})).cpu()
    n1, n2 = cfg.pool // 2, cfg.pool // 5
    n3 = cfg.pool - n1 - n2
    i1 = torch.randint(len(surf), (n1,), generator=g)
    i2 = torch.randint(len(surf), (n2,), generator=g)
    pts = torch.cat([surf[i1] + 0.01 * torch.randn(n1, 3, generator=g),
                     surf[i2] + 0.05 * torch.randn(n2, 3, generator=g),
                     torch.rand(n3, 3, generator=g) * 2 - 1]).clamp(-1, 1)
    sdf, col = _sdf_color(shape, pts, device=device)
    gate_surf = surf[torch.randperm(len(surf), generator=g)[: cfg.surface]]
    _, scol = _sdf_color(shape, gate_surf, device=device)
    gate_pts = gate_points(cfg, gate_surf, g)
    gsdf, _ = _sdf_color(shape, gate_pts, device=device)
    return ObjectSamples(shape.object_id, pts, sdf, col, gate_surf, scol, gsdf < 0, gate_pts, gsdf, shape)


def gate_points(cfg, surface: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Where the gate measures occupancy IoU: the ``gate_res^3`` grid's cell centres plus two
    points near each surface point (``N(0, 0.02)`` offsets), so thin parts that a coarse grid
    misses still count (as Occupancy Networks' IoU mixes uniform and near-surface points).
    ``[gate_res^3 + 2 S, 3]``."""
    near = surface.repeat(2, 1)
    near = (near + 0.02 * torch.randn(near.shape, generator=g)).clamp(-1, 1)
    return torch.cat([cell_centres(cfg.gate_res), near])


def octree_occupancy(shape: Shape, spec: ArchSpec) -> torch.Tensor:
    """Voxels of the finest LOD that the object touches: ``sdf(centre) < half diagonal``
    (plus a sliver), bool ``[R, R, R]`` in ``[x, y, z]`` order."""
    R = 2 ** spec.grid.lods[-1]
    centres = voxel_centres(R)
    with torch.no_grad():
        d = shape.sdf(centres)
    return (d < math.sqrt(3) / R * 1.05).reshape(R, R, R)
