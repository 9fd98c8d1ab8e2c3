"""Shapes from SDF primitives: the primitives, rigid parts, and the ``Shape`` every object is.

Every shape maps points ``p [..., 3]`` (float32, in ``[-1,1]^3``) to

* ``sdf(p) [...]``   signed distance (negative inside): exact for hard unions of
  primitives placed by rigid motions and one uniform scale; a lower bound on the
  distance where parts are smoothly blended or carved (smooth union / subtraction),
* ``udf(p) = |sdf(p)|``, ``occupancy(p) = sdf(p) < 0``,
* ``color(p) [..., 3]`` in ``[0,1]``: the colour of the nearest part.

Shapes are normalised so that their (conservative) bounding box fits ``[-0.8, 0.8]^3``,
leaving a margin inside the ``[-1,1]^3`` domain every field covers. All evaluation is
vectorised over points; loops run only over a shape's parts (a dozen at most).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

#: half extent of the box every shape is normalised into
EXTENT = 0.8


# ---------------------------------------------------------------------------------------
# primitives: ``p [..., 3] -> [...]``, each in its own local frame (y up, centred at 0)
# ---------------------------------------------------------------------------------------
def _length(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=-1)


def sd_sphere(p: torch.Tensor, r: float) -> torch.Tensor:
    """Sphere of radius ``r``: ``|p| - r``. ``p [..., 3] -> [...]``."""
    return _length(p) - r


def sd_box(p: torch.Tensor, half: Sequence[float]) -> torch.Tensor:
    """Axis-aligned box with half extents ``half (3,)``, exact inside and out."""
    q = p.abs() - torch.as_tensor(half, dtype=p.dtype, device=p.device)
    return _length(q.clamp_min(0)) + q.max(dim=-1).values.clamp_max(0)


def sd_round_box(p: torch.Tensor, half: Sequence[float], r: float) -> torch.Tensor:
    """Box of outer half extents ``half`` with edges rounded by ``r`` (exact)."""
    inner = [max(h - r, 1e-6) for h in half]
    return sd_box(p, inner) - r


def sd_cylinder(p: torch.Tensor, r: float, h: float) -> torch.Tensor:
    """Capped cylinder around the y axis, radius ``r``, half height ``h`` (exact)."""
    d = torch.stack([_length(p[..., [0, 2]]) - r, p[..., 1].abs() - h], dim=-1)
    return _length(d.clamp_min(0)) + d.max(dim=-1).values.clamp_max(0)


def sd_capsule(p: torch.Tensor, a: Sequence[float], b: Sequence[float], r: float) -> torch.Tensor:
    """Segment ``a``-``b`` swept by a ball of radius ``r`` (exact)."""
    a = torch.as_tensor(a, dtype=p.dtype, device=p.device)
    b = torch.as_tensor(b, dtype=p.dtype, device=p.device)
    pa, ba = p - a, b - a
    h = ((pa * ba).sum(-1) / (ba * ba).sum()).clamp(0, 1)
    return _length(pa - h[..., None] * ba) - r


def sd_torus(p: torch.Tensor, R: float, r: float) -> torch.Tensor:
    """Torus in the xz plane around the y axis: ring radius ``R``, tube radius ``r`` (exact)."""
    q = torch.stack([_length(p[..., [0, 2]]) - R, p[..., 1]], dim=-1)
    return _length(q) - r


def sd_cone(p: torch.Tensor, h: float, r1: float, r2: float) -> torch.Tensor:
    """Capped cone around the y axis: half height ``h``, radius ``r1`` at ``y=-h`` and ``r2``
    at ``y=+h`` (exact; Inigo Quilez's formulation)."""
    qx = _length(p[..., [0, 2]])
    qy = p[..., 1]
    k2x, k2y = r2 - r1, 2.0 * h
    rad = torch.where(qy < 0, torch.full_like(qy, r1), torch.full_like(qy, r2))
    cax = qx - torch.minimum(qx, rad)
    cay = qy.abs() - h
    t = (((r2 - qx) * k2x + (h - qy) * k2y) / (k2x * k2x + k2y * k2y)).clamp(0, 1)
    cbx = qx - r2 + k2x * t
    cby = qy - h + k2y * t
    s = torch.where((cbx < 0) & (cay < 0), -1.0, 1.0)
    return s * torch.sqrt(torch.minimum(cax * cax + cay * cay, cbx * cbx + cby * cby))


def smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Polynomial smooth minimum (blend radius ``k``); ``<= min(a, b)``, equal when ``|a-b| >= k``."""
    if k <= 0:
        return torch.minimum(a, b)
    h = (k - (a - b).abs()).clamp_min(0) / k
    return torch.minimum(a, b) - h * h * k * 0.25


# local axis-aligned bounding half-extents of each primitive, for normalisation
def _local_bounds(kind: str, prm: dict) -> tuple[np.ndarray, np.ndarray]:
    if kind == "sphere":
        r = prm["r"]
        return -np.full(3, r), np.full(3, r)
    if kind in ("box", "round_box"):
        h = np.asarray(prm["half"], dtype=np.float64)
        return -h, h
    if kind == "cylinder":
        r, h = prm["r"], prm["h"]
        return np.array([-r, -h, -r]), np.array([r, h, r])
    if kind == "cone":
        r = max(prm["r1"], prm["r2"])
        return np.array([-r, -prm["h"], -r]), np.array([r, prm["h"], r])
    if kind == "torus":
        R = prm["R"] + prm["r"]
        return np.array([-R, -prm["r"], -R]), np.array([R, prm["r"], R])
    if kind == "capsule":
        a, b, r = np.asarray(prm["a"]), np.asarray(prm["b"]), prm["r"]
        return np.minimum(a, b) - r, np.maximum(a, b) + r
    raise ValueError(f"unknown primitive {kind!r}")


_PRIMITIVES: dict[str, Callable[..., torch.Tensor]] = {
    "sphere": sd_sphere, "box": sd_box, "round_box": sd_round_box, "cylinder": sd_cylinder,
    "capsule": sd_capsule, "torus": sd_torus, "cone": sd_cone,
}
PRIMITIVES = tuple(_PRIMITIVES)


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation matrix ``Rz @ Ry @ Rx`` (radians), ``[3, 3]``; columns are the local axes in world."""
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


@dataclass
class Part:
    """One primitive placed in the object's frame.

    ``world = R @ local + t``; ``mirror`` lists axes (0=x, 2=z) about whose plane the part is
    mirrored (the part should sit on the positive side so the mirrored union stays exact).
    ``op="subtract"`` carves the part out of everything before it.
    """

    kind: str
    params: dict
    t: tuple = (0.0, 0.0, 0.0)
    R: Optional[np.ndarray] = None
    color: tuple = (0.5, 0.5, 0.5)
    mirror: tuple = ()
    op: str = "union"
    blend: float = 0.0

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        """``p [..., 3]`` in the object's raw frame ``-> [...]``."""
        if self.mirror:
            m = torch.zeros(3, dtype=torch.bool, device=p.device)
            m[list(self.mirror)] = True
            p = torch.where(m, p.abs(), p)     # fold space: one evaluation covers both copies
        q = p - torch.as_tensor(self.t, dtype=p.dtype, device=p.device)
        if self.R is not None:
            # local = R^T (world - t), written row-wise as (world - t) @ R
            q = q @ torch.as_tensor(self.R, dtype=p.dtype, device=p.device)
        return _PRIMITIVES[self.kind](q, **self.params)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = _local_bounds(self.kind, self.params)
        corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T   # [8, 3]
        R = np.eye(3) if self.R is None else self.R
        w = corners @ R.T + np.asarray(self.t)
        lo, hi = w.min(0), w.max(0)
        for ax in self.mirror:
            lo[ax], hi[ax] = min(lo[ax], -hi[ax]), max(hi[ax], -lo[ax])
        return lo, hi


class Shape:
    """Base class: a solid with ``sdf``, ``udf``, ``occupancy``, ``color`` over ``p [..., 3]``."""

    class_name: str = ""
    label: int = -1
    object_id: str = ""

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def color(self, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def udf(self, p: torch.Tensor) -> torch.Tensor:
        """Unsigned distance ``|sdf|``: ``[..., 3] -> [...]``."""
        return self.sdf(p).abs()

    def occupancy(self, p: torch.Tensor) -> torch.Tensor:
        """``sdf < 0`` as bool: ``[..., 3] -> [...]``."""
        return self.sdf(p) < 0

    def sample_surface(self, n: int, generator: Optional[torch.Generator] = None,
                       device: "torch.device | str | None" = None) -> torch.Tensor:
        """``n`` points on the zero level set, ``[n, 3]``: uniform points pulled onto the
        surface by Newton steps ``p -= sdf(p) * grad/|grad|^2`` (vectorised, autograd grads).
        ``device``: where the Newton steps run (the points are drawn from ``generator`` on the CPU
        and moved; the result is on ``device``)."""
        got = []
        total = 0
        for _ in range(8):
            p = torch.rand(max(4 * n, 4096), 3, generator=generator) * 2 * EXTENT - EXTENT
            if device is not None:
                p = p.to(device)
            for _ in range(6):
                p = p.detach().requires_grad_(True)
                d = self.sdf(p)
                (g,) = torch.autograd.grad(d.sum(), p)
                p = p - d[:, None] * g / (g * g).sum(-1, keepdim=True).clamp_min(1e-8)
            p = p.detach()
            with torch.no_grad():
                ok = (self.sdf(p).abs() < 2e-3) & (p.abs() <= 1).all(-1)
            got.append(p[ok])
            total += int(ok.sum())
            if total >= n:
                break
        pts = torch.cat(got)
        if len(pts) == 0:
            raise RuntimeError(f"could not sample the surface of {self.object_id or self.class_name}")
        idx = torch.randperm(len(pts), generator=generator)[:n]
        if len(idx) < n:       # rare: pad by repetition rather than fail
            idx = idx[torch.randint(len(idx), (n,), generator=generator)]
        return pts[idx.to(pts.device)]


class PartShape(Shape):
    """A union of :class:`Part` s (hard or smooth), optional carvings, normalised to
    ``[-EXTENT, EXTENT]^3`` by a uniform scale ``s`` and centre ``c``:
    ``sdf(p) = s * raw_sdf(p / s + c)`` (a uniform scale keeps distances exact)."""

    #: sdf, colour and surface sampling run on the device of their points (the zoo samples there)
    on_device = True

    def __init__(self, parts: list[Part], class_name: str = "", label: int = -1, object_id: str = ""):
        if not any(p.op == "union" for p in parts):
            raise ValueError("a shape needs at least one union part")
        self.parts = parts
        self.class_name, self.label, self.object_id = class_name, label, object_id
        lo = np.full(3, np.inf)
        hi = np.full(3, -np.inf)
        for part in parts:
            if part.op == "union":
                a, b = part.bounds()
                lo, hi = np.minimum(lo, a), np.maximum(hi, b)
        self.center = (lo + hi) / 2
        self.scale = float(EXTENT / ((hi - lo).max() / 2))
        self.colors = torch.tensor([p.color for p in parts if p.op == "union"], dtype=torch.float32)

    def _raw(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = p / self.scale + torch.as_tensor(self.center, dtype=p.dtype, device=p.device)
        d = None
        dists = []
        for part in self.parts:
            di = part.sdf(q)
            if part.op == "union":
                dists.append(di)
                d = di if d is None else smooth_min(d, di, part.blend)
            else:                                  # carve: max(d, -di), a bound near the cut
                d = torch.maximum(d, -di)
        return d * self.scale, torch.stack(dists, dim=-1)

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        """``p [..., 3] -> [...]``."""
        return self._raw(p)[0]

    def color(self, p: torch.Tensor) -> torch.Tensor:
        """``p [..., 3] -> [..., 3]``: colour of the nearest union part."""
        _, dists = self._raw(p)
        return self.colors.to(p.device)[dists.argmin(-1)]

    def sdf_and_color(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both at once (one pass over the parts): ``([...], [..., 3])``."""
        d, dists = self._raw(p)
        return d, self.colors.to(p.device)[dists.argmin(-1)]
