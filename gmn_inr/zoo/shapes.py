"""Procedural ShapeNet-like objects built from SDF primitives, and meshes a user brings.

One import for the zoo's shapes, kept in three modules: :mod:`~gmn_inr.zoo.primitives` (SDF
primitives, parts, the :class:`Shape` protocol: ``sdf``, ``udf``, ``occupancy``, ``color``
over ``p [..., 3]``, normalised to ``[-0.8, 0.8]^3``), :mod:`~gmn_inr.zoo.recipes` (the twelve
classes, ``make_shape``; modelled y-up, posed z-up) and :mod:`~gmn_inr.zoo.meshes`
(``MeshShape``, never assumed watertight).
"""
from __future__ import annotations

import torch

from gmn_inr.fields.base import cell_centres

from .meshes import MESH_SUFFIXES, MeshShape, load_mesh, mesh_objects, winding_number  # noqa: F401
from .primitives import (EXTENT, PRIMITIVES, Part, PartShape, Shape, rotation, sd_box, sd_capsule,  # noqa: F401
                         sd_cone, sd_cylinder, sd_round_box, sd_sphere, sd_torus, smooth_min)
from .recipes import CLASSES, Y_UP_TO_Z_UP, make_shape  # noqa: F401


def grid_points(res: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """Cell centres of a ``res^3`` grid over ``[lo, hi]^3``: ``[res^3, 3]``, index order x, y, z."""
    return cell_centres(res, lo, hi)


def occupancy_grid(shape: Shape, res: int = 32) -> torch.Tensor:
    """Bool occupancy at cell centres ``[res, res, res]`` (index order x, y, z)."""
    with torch.no_grad():
        return shape.occupancy(grid_points(res)).reshape(res, res, res)
