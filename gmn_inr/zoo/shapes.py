"""Procedural ShapeNet-like objects built from SDF primitives, and meshes a user brings.

Every shape maps points ``p [..., 3]`` (float32, in ``[-1,1]^3``) to

* ``sdf(p) [...]``   signed distance (negative inside): exact for hard unions of
  primitives placed by rigid motions and one uniform scale; a lower bound on the
  distance where parts are smoothly blended or carved (smooth union / subtraction),
* ``udf(p) = |sdf(p)|``, ``occupancy(p) = sdf(p) < 0``,
* ``color(p) [..., 3]`` in ``[0,1]``: the colour of the nearest part.

Shapes are normalised so that their (conservative) bounding box fits ``[-0.8, 0.8]^3``,
leaving a margin inside the ``[-1,1]^3`` domain every field covers. Classes are modelled
with ``y`` up and posed in a ``z``-up world (the convention of :mod:`gmn_inr.render`).

All evaluation is vectorised over points; loops run only over a shape's parts (a
dozen at most).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

#: half extent of the box every shape is normalised into
EXTENT = 0.8
#: world-from-model rotation: models are built y-up, the world is z-up (world z = model y)
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


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

    def value(self, p: torch.Tensor, function: str) -> torch.Tensor:
        """Ground truth of an implicit function (sdf / udf / occupancy as 0./1.) at ``p``."""
        if function == "sdf":
            return self.sdf(p)
        if function == "udf":
            return self.udf(p)
        if function == "occupancy":
            return self.occupancy(p).float()
        raise ValueError(f"unknown implicit function {function!r}")

    def sample_surface(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` points on the zero level set, ``[n, 3]``: uniform points pulled onto the
        surface by Newton steps ``p -= sdf(p) * grad/|grad|^2`` (vectorised, autograd grads)."""
        got = []
        total = 0
        for _ in range(8):
            p = torch.rand(max(4 * n, 4096), 3, generator=generator) * 2 * EXTENT - EXTENT
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
        return pts[idx]


class PartShape(Shape):
    """A union of :class:`Part` s (hard or smooth), optional carvings, normalised to
    ``[-EXTENT, EXTENT]^3`` by a uniform scale ``s`` and centre ``c``:
    ``sdf(p) = s * raw_sdf(p / s + c)`` (a uniform scale keeps distances exact)."""

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


# ---------------------------------------------------------------------------------------
# the classes
# ---------------------------------------------------------------------------------------
def _colour(rng: np.random.Generator, hue: Optional[float] = None) -> tuple:
    """A random saturated-ish colour (HSV sampled, so parts are distinguishable)."""
    import colorsys

    h = rng.uniform(0, 1) if hue is None else (hue + rng.uniform(-0.06, 0.06)) % 1.0
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, rng.uniform(0.35, 0.9), rng.uniform(0.45, 0.95)))


def _u(rng, a, b):
    return float(rng.uniform(a, b))


def _chair(rng):
    w, d = _u(rng, 0.35, 0.55), _u(rng, 0.35, 0.55)
    seat_h, seat_t = _u(rng, 0.4, 0.6), _u(rng, 0.04, 0.08)
    back_h = _u(rng, 0.4, 0.8)
    leg = _u(rng, 0.035, 0.055)
    c_seat, c_leg, c_back = _colour(rng), _colour(rng), _colour(rng)
    parts = [
        Part("round_box", dict(half=(w, seat_t, d), r=0.02), t=(0, seat_h, 0), color=c_seat),
        Part("round_box", dict(half=(w, back_h / 2, 0.035), r=0.02),
             t=(0, seat_h + back_h / 2, -d + 0.035), R=rotation(rx=_u(rng, -0.25, 0.0)), color=c_back),
    ]
    if rng.uniform() < 0.6:
        parts.append(Part("box", dict(half=(leg, seat_h / 2, leg)), t=(w - leg, seat_h / 2, d - leg),
                          color=c_leg, mirror=(0, 2)))
    else:   # swivel chair: column and star base
        parts += [Part("cylinder", dict(r=leg * 1.5, h=seat_h / 2), t=(0, seat_h / 2, 0), color=c_leg),
                  Part("cylinder", dict(r=w * 0.9, h=0.03), t=(0, 0.03, 0), color=c_leg)]
    if rng.uniform() < 0.4:   # armrests
        parts.append(Part("box", dict(half=(0.04, 0.04, d * 0.8)), t=(w - 0.03, seat_h + 0.2, 0),
                          color=c_back, mirror=(0,)))
    return parts


def _table(rng):
    w, d = _u(rng, 0.6, 1.0), _u(rng, 0.4, 0.7)
    h, top_t = _u(rng, 0.5, 0.8), _u(rng, 0.03, 0.06)
    c_top, c_leg = _colour(rng), _colour(rng)
    if rng.uniform() < 0.6:
        leg = _u(rng, 0.03, 0.06)
        return [Part("box", dict(half=(w, top_t, d)), t=(0, h, 0), color=c_top),
                Part("box", dict(half=(leg, h / 2, leg)), t=(w * 0.9 - leg, h / 2, d * 0.9 - leg),
                     color=c_leg, mirror=(0, 2))]
    r = _u(rng, 0.5, 0.8)   # round table on a pedestal
    return [Part("cylinder", dict(r=r, h=top_t), t=(0, h, 0), color=c_top),
            Part("cylinder", dict(r=_u(rng, 0.04, 0.08), h=h / 2), t=(0, h / 2, 0), color=c_leg),
            Part("cylinder", dict(r=r * 0.5, h=0.03), t=(0, 0.03, 0), color=c_leg)]


def _lamp(rng):
    base_r, pole_h = _u(rng, 0.15, 0.3), _u(rng, 0.8, 1.4)
    c_base, c_shade = _colour(rng), _colour(rng, hue=_u(rng, 0.05, 0.18))
    tilt = _u(rng, -0.5, 0.5)
    top = (math.sin(tilt) * pole_h * 0.3, pole_h, 0.0)
    sh = _u(rng, 0.12, 0.25)
    return [Part("cylinder", dict(r=base_r, h=0.03), t=(0, 0.03, 0), color=c_base),
            Part("capsule", dict(a=(0, 0.05, 0), b=top, r=0.04), color=c_base),
            Part("cone", dict(h=sh, r1=_u(rng, 0.2, 0.35), r2=_u(rng, 0.08, 0.16)),
                 t=(top[0], top[1] - sh * 0.6, 0), R=rotation(rz=tilt * 0.5), color=c_shade)]


def _airplane(rng):
    L, fr = _u(rng, 0.9, 1.3), _u(rng, 0.07, 0.12)
    span, chord = _u(rng, 0.8, 1.3), _u(rng, 0.15, 0.3)
    sweep = _u(rng, 0.0, 0.5)
    c_body, c_wing = _colour(rng), _colour(rng)
    parts = [Part("capsule", dict(a=(0, 0, -L), b=(0, 0, L), r=fr), color=c_body),
             Part("box", dict(half=(span / 2, 0.03, chord / 2)), t=(span / 2, 0, _u(rng, -0.1, 0.2)),
                  R=rotation(ry=sweep), color=c_wing, mirror=(0,)),
             Part("box", dict(half=(0.03, _u(rng, 0.12, 0.25), 0.1)), t=(0, fr + 0.12, -L + 0.08),
                  R=rotation(rx=0.3), color=c_wing),
             Part("box", dict(half=(_u(rng, 0.15, 0.3), 0.025, 0.07)), t=(0.15, 0.02, -L + 0.05),
                  color=c_wing, mirror=(0,))]
    if rng.uniform() < 0.6:   # engines under the wings
        parts.append(Part("cylinder", dict(r=0.05, h=0.12), t=(span * 0.35, -0.07, 0.1),
                          R=rotation(rx=math.pi / 2), color=c_body, mirror=(0,)))
    return parts


def _car(rng):
    L, W, H = _u(rng, 0.8, 1.1), _u(rng, 0.35, 0.5), _u(rng, 0.12, 0.2)
    wr = _u(rng, 0.1, 0.16)
    c_body, c_cab = _colour(rng), _colour(rng)
    cab_l = _u(rng, 0.3, 0.6) * L
    return [Part("round_box", dict(half=(W, H, L), r=0.05), t=(0, wr + H * 0.6, 0), color=c_body),
            Part("round_box", dict(half=(W * 0.85, _u(rng, 0.1, 0.18), cab_l), r=0.06),
                 t=(0, wr + H * 1.6 + 0.08, _u(rng, -0.2, 0.1) * L), color=c_cab, blend=0.04),
            Part("torus", dict(R=wr * 0.6, r=wr * 0.4), t=(W - 0.02, wr, L * 0.65),
                 R=rotation(rz=math.pi / 2), color=(0.1, 0.1, 0.1), mirror=(0, 2))]


def _bench(rng):
    L, d = _u(rng, 0.9, 1.4), _u(rng, 0.18, 0.3)
    h = _u(rng, 0.3, 0.45)
    c_seat, c_leg = _colour(rng), _colour(rng)
    parts = [Part("box", dict(half=(L, 0.045, d)), t=(0, h, 0), color=c_seat),
             Part("box", dict(half=(0.04, h / 2, d * 0.9)), t=(L * 0.85, h / 2, 0), color=c_leg, mirror=(0,))]
    if rng.uniform() < 0.6:   # backrest on posts
        bh = _u(rng, 0.2, 0.4)
        parts += [Part("box", dict(half=(L, bh / 4, 0.035)), t=(0, h + bh * 0.75, -d), color=c_seat),
                  Part("box", dict(half=(0.04, bh / 2, 0.035)), t=(L * 0.85, h + bh / 2, -d), color=c_leg,
                       mirror=(0,))]
    return parts


def _sofa(rng):
    W, D, H = _u(rng, 0.8, 1.3), _u(rng, 0.35, 0.5), _u(rng, 0.12, 0.2)
    c = _colour(rng)
    c2 = _colour(rng, hue=None)
    arm_h = _u(rng, 0.15, 0.3)
    k = _u(rng, 0.03, 0.08)
    return [Part("round_box", dict(half=(W, H, D), r=0.08), t=(0, H + 0.05, 0), color=c),
            Part("round_box", dict(half=(W, _u(rng, 0.25, 0.4), 0.1), r=0.08), t=(0, 2 * H + 0.25, -D + 0.1),
                 color=c2, blend=k),
            Part("round_box", dict(half=(0.1, arm_h, D), r=0.07), t=(W - 0.05, H + arm_h * 0.8, 0),
                 color=c2, mirror=(0,), blend=k)]


def _cabinet(rng):
    W, H, D = _u(rng, 0.35, 0.6), _u(rng, 0.6, 1.0), _u(rng, 0.25, 0.4)
    c, ch = _colour(rng), _colour(rng)
    n = int(rng.integers(2, 5))    # drawers: carved grooves and handles
    parts = [Part("box", dict(half=(W, H, D)), t=(0, H, 0), color=c),
             Part("box", dict(half=(W * 1.05, 0.03, D * 1.05)), t=(0, 2 * H + 0.03, 0), color=ch)]
    for i in range(n):
        y = 2 * H * (i + 0.5) / n
        parts.append(Part("capsule", dict(a=(-W * 0.3, y, D + 0.03), b=(W * 0.3, y, D + 0.03), r=0.02), color=ch))
    return parts


def _rifle(rng):
    L = _u(rng, 0.9, 1.3)
    c_metal, c_wood = _colour(rng, hue=0.6), _colour(rng, hue=0.08)
    parts = [Part("cylinder", dict(r=_u(rng, 0.035, 0.05), h=L / 2), t=(L / 2, 0.05, 0),
                  R=rotation(rz=math.pi / 2), color=c_metal),
             Part("box", dict(half=(0.3, 0.07, 0.05)), t=(-0.05, 0.03, 0), color=c_metal),
             Part("box", dict(half=(_u(rng, 0.2, 0.35), _u(rng, 0.06, 0.1), 0.05)), t=(-0.5, -0.03, 0),
                  R=rotation(rz=_u(rng, 0.05, 0.25)), color=c_wood),
             Part("box", dict(half=(0.04, 0.09, 0.045)), t=(-0.15, -0.1, 0), R=rotation(rz=-0.3), color=c_wood)]
    if rng.uniform() < 0.6:
        parts.append(Part("box", dict(half=(0.04, _u(rng, 0.08, 0.15), 0.03)), t=(0.05, -0.1, 0), color=c_metal))
    if rng.uniform() < 0.5:
        parts.append(Part("cylinder", dict(r=0.03, h=0.15), t=(-0.05, 0.15, 0), R=rotation(rz=math.pi / 2),
                          color=c_metal))
    return parts


def _watercraft(rng):
    L, W, H = _u(rng, 0.9, 1.3), _u(rng, 0.2, 0.35), _u(rng, 0.1, 0.18)
    c_hull, c_top = _colour(rng), _colour(rng)
    parts = [Part("round_box", dict(half=(W, H, L), r=min(W, H) * 0.9), t=(0, H, 0), color=c_hull),
             Part("box", dict(half=(W * 2, H, L * 2)), t=(0, 3 * H, 0), op="subtract")]   # open deck
    if rng.uniform() < 0.5:   # sailing boat: mast and sail
        mh = _u(rng, 0.6, 1.0)
        parts += [Part("cylinder", dict(r=0.035, h=mh / 2), t=(0, H + mh / 2, 0.1), color=c_top),
                  Part("box", dict(half=(0.025, mh * 0.4, L * 0.35)), t=(0, H + mh * 0.5, -0.2), color=c_top)]
    else:                     # motor boat: cabin
        parts.append(Part("round_box", dict(half=(W * 0.7, _u(rng, 0.1, 0.2), L * 0.3), r=0.04),
                          t=(0, 2 * H, _u(rng, -0.3, 0.2)), color=c_top))
    return parts


def _mug(rng):
    r, h = _u(rng, 0.3, 0.45), _u(rng, 0.35, 0.55)
    wall = _u(rng, 0.03, 0.06)
    c = _colour(rng)
    hr = _u(rng, 0.15, 0.25)
    return [Part("cylinder", dict(r=r, h=h), t=(0, h, 0), color=c),
            Part("torus", dict(R=hr, r=_u(rng, 0.03, 0.05)), t=(r + hr * 0.6, h, 0), R=rotation(rx=math.pi / 2),
                 color=_colour(rng)),
            Part("cylinder", dict(r=r - wall, h=h), t=(0, 2 * h - h + wall * 2 + 0.01, 0), op="subtract")]


def _bottle(rng):
    r, h = _u(rng, 0.18, 0.3), _u(rng, 0.4, 0.7)
    nr, nh = _u(rng, 0.05, 0.09), _u(rng, 0.15, 0.3)
    c, cc = _colour(rng), _colour(rng)
    sh = _u(rng, 0.08, 0.18)
    return [Part("cylinder", dict(r=r, h=h), t=(0, h, 0), color=c),
            Part("cone", dict(h=sh, r1=r, r2=nr), t=(0, 2 * h + sh, 0), color=c, blend=0.03),
            Part("cylinder", dict(r=nr, h=nh / 2), t=(0, 2 * h + 2 * sh + nh / 2, 0), color=c, blend=0.02),
            Part("cylinder", dict(r=nr * 1.2, h=0.04), t=(0, 2 * h + 2 * sh + nh, 0), color=cc)]


_CLASSES: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "airplane": _airplane, "bench": _bench, "bottle": _bottle, "cabinet": _cabinet, "car": _car,
    "chair": _chair, "lamp": _lamp, "mug": _mug, "rifle": _rifle, "sofa": _sofa, "table": _table,
    "watercraft": _watercraft,
}
#: the procedural classes, in label order
CLASSES = tuple(_CLASSES)


def make_shape(class_name: str, seed: int, object_id: str = "", label: Optional[int] = None) -> PartShape:
    """A random object of ``class_name``; the same ``seed`` always gives the same object.

    A random pose within the class's range (a yaw of up to +-30 degrees) is applied on top
    of the class's own random proportions."""
    if class_name not in _CLASSES:
        raise ValueError(f"unknown shape class {class_name!r}; known: {', '.join(CLASSES)}")
    rng = np.random.default_rng([seed, CLASSES.index(class_name)])
    parts = _CLASSES[class_name](rng)
    yaw = rotation(ry=_u(rng, -math.pi / 6, math.pi / 6))
    shape = PartShape(parts, class_name, CLASSES.index(class_name) if label is None else label,
                      object_id or f"{class_name}-{seed:05d}")
    # classes are modelled y-up; the world (gmn_inr.render's cameras) is z-up
    return _Posed(shape, Y_UP_TO_Z_UP @ yaw)


class _Posed(PartShape):
    """A :class:`PartShape` under a rigid rotation about its centre (keeps sdf exact)."""

    def __init__(self, inner: PartShape, R: np.ndarray):
        self.__dict__.update(inner.__dict__)
        self.R = torch.as_tensor(R, dtype=torch.float32)
        # the rotated bounding box may grow up to sqrt(2) in xz: shrink to stay in [-0.8, 0.8]
        lo = np.full(3, np.inf)
        hi = -lo
        for part in self.parts:
            if part.op == "union":
                a, b = part.bounds()
                lo, hi = np.minimum(lo, a), np.maximum(hi, b)
        corners = (np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T - self.center) * self.scale
        ext = np.abs(corners @ R.T).max()
        self.post = float(EXTENT / ext)

    def _raw(self, p):
        # world -> unposed: rotate by R^T and undo the post-scale; distances scale back by post
        q = (p / self.post) @ self.R.to(p.dtype)
        d, dists = PartShape._raw(self, q)
        return d * self.post, dists


def make_objects(classes: Sequence[str] = CLASSES, per_class: int = 5, seed: int = 0) -> list[PartShape]:
    """``per_class`` objects of each class, ids ``<class>-<seed>`` and labels by ``classes`` order."""
    out = []
    for ci, name in enumerate(classes):
        for k in range(per_class):
            s = seed * 100003 + k
            out.append(make_shape(name, s, object_id=f"{name}-{s:05d}", label=ci))
    return out


# ---------------------------------------------------------------------------------------
# grids
# ---------------------------------------------------------------------------------------
def grid_points(res: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """Cell centres of a ``res^3`` grid over ``[lo, hi]^3``: ``[res^3, 3]``, index order x, y, z."""
    c = (torch.arange(res, dtype=torch.float32) + 0.5) / res * (hi - lo) + lo
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1).reshape(-1, 3)


def occupancy_grid(shape: Shape, res: int = 32) -> torch.Tensor:
    """Bool occupancy at cell centres ``[res, res, res]`` (index order x, y, z)."""
    with torch.no_grad():
        return shape.occupancy(grid_points(res)).reshape(res, res, res)


# ---------------------------------------------------------------------------------------
# meshes a user brings
# ---------------------------------------------------------------------------------------
MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")


class MeshShape(Shape):
    """A mesh, normalised to ``[-EXTENT, EXTENT]^3``, never assumed watertight.

    * unsigned distance: nearest of ``n_samples`` points sampled on the triangles
      (a k-d tree; error about half the sample spacing, ~3e-3 for 200k samples),
    * sign: generalised winding number (Jacobson et al.) of the triangles, exact for
      closed meshes and graceful on open ones, computed on a ``sign_res^3`` grid and
      interpolated; within a grid cell of the surface the sign comes from the nearest
      samples' face normals instead (a vote of 8), where the coarse grid cannot resolve it,
    * colour: the nearest face's colour if the mesh has colours, else one colour per mesh.
    """

    def __init__(self, mesh, class_name: str = "mesh", label: int = 0, object_id: str = "",
                 n_samples: int = 200_000, sign_res: int = 32, seed: int = 0):
        import trimesh
        from scipy.spatial import cKDTree

        if isinstance(mesh, (str, Path)):
            mesh = load_mesh(mesh)
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            raise ValueError(f"not a triangle mesh with faces: {object_id or mesh!r}")
        self.class_name, self.label, self.object_id = class_name, label, object_id
        v = np.asarray(mesh.vertices, dtype=np.float64)
        lo, hi = v.min(0), v.max(0)
        if not np.all(np.isfinite(v)) or (hi - lo).max() <= 0:
            raise ValueError(f"degenerate mesh {object_id!r}")
        v = (v - (lo + hi) / 2) * (EXTENT / ((hi - lo).max() / 2))
        f = np.asarray(mesh.faces, dtype=np.int64)
        self.tris = torch.as_tensor(v[f], dtype=torch.float32)            # [F, 3, 3]
        rng = np.random.default_rng(seed)
        pts, fid = _sample_triangles(v[f], n_samples, rng)
        self.samples = torch.as_tensor(pts, dtype=torch.float32)
        fn = np.cross(v[f][:, 1] - v[f][:, 0], v[f][:, 2] - v[f][:, 0])
        fn /= np.linalg.norm(fn, axis=1, keepdims=True).clip(1e-12)
        self.sample_normals = fn[fid]
        self.tree = cKDTree(pts)
        try:
            fc = np.asarray(mesh.visual.to_color().face_colors, dtype=np.float64)[:, :3] / 255.0
            if len(fc) != len(f) or np.ptp(fc, axis=0).max() < 1e-3:
                raise ValueError
            self.sample_colors = torch.as_tensor(fc[fid], dtype=torch.float32)
        except Exception:   # no usable colours: a per-mesh colour
            self.sample_colors = torch.tensor(_colour(rng), dtype=torch.float32).expand(len(pts), 3)
        self.sign_res = sign_res
        with torch.no_grad():
            wn = winding_number(grid_points(sign_res), self.tris)
        self.wn_grid = wn.reshape(1, 1, sign_res, sign_res, sign_res)   # [x, y, z]

    def _nearest(self, p: torch.Tensor, k: int = 1):
        # workers=-1: the k-d tree query is the cost of a mesh's ground truth; use every core
        d, i = self.tree.query(p.detach().reshape(-1, 3).cpu().numpy().astype(np.float64), k=k, workers=-1)
        return d, i

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        """``p [..., 3] -> [...]`` (not differentiable: a k-d tree lookup)."""
        return self.sdf_and_color(p)[0]

    def sdf_and_color(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``p [..., 3] -> ([...], [..., 3])`` from one k-d tree query."""
        lead = p.shape[:-1]
        flat = p.detach().reshape(-1, 3).float()
        d, idx = self._nearest(flat, k=8)
        dist = torch.as_tensor(d[:, 0], dtype=torch.float32)
        # winding number, trilinear from the grid; grid_sample wants (z, y, x) order in its last dim
        g = flat.flip(-1).reshape(1, -1, 1, 1, 3)
        wn = torch.nn.functional.grid_sample(self.wn_grid, g, align_corners=False, padding_mode="border")
        inside = wn.reshape(-1) > 0.5
        # near the surface: vote of the nearest samples' normals
        off = flat.numpy()[:, None, :] - self.samples.numpy()[idx]                      # [M, 8, 3]
        vote = (np.einsum("mkc,mkc->mk", off, self.sample_normals[idx]) < 0).mean(1) > 0.5
        cell = 2.0 / self.sign_res
        near = dist < 1.5 * cell
        inside = torch.where(near, torch.as_tensor(vote), inside)
        colour = self.sample_colors[torch.as_tensor(idx[:, 0])].reshape(*lead, 3)
        return torch.where(inside, -dist, dist).reshape(lead).to(p.dtype), colour

    def color(self, p: torch.Tensor) -> torch.Tensor:
        """``p [..., 3] -> [..., 3]``: colour of the nearest surface sample."""
        _, i = self._nearest(p)
        return self.sample_colors[torch.as_tensor(i)].reshape(*p.shape[:-1], 3)

    def sample_surface(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        idx = torch.randint(len(self.samples), (n,), generator=generator)
        return self.samples[idx]


def _sample_triangles(tris: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-weighted uniform points on triangles ``[F, 3, 3]``: ``([n, 3], face ids [n])``."""
    area = np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    if area.sum() <= 0:
        raise ValueError("mesh has zero surface area")
    fid = rng.choice(len(tris), size=n, p=area / area.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tris[fid]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0]), fid


def winding_number(p: torch.Tensor, tris: torch.Tensor, chunk: int = 2 ** 22) -> torch.Tensor:
    """Generalised winding number of triangles ``[F, 3, 3]`` at ``p [M, 3]`` -> ``[M]``:
    sum of signed solid angles / 4 pi (Van Oosterom & Strackee), chunked over points so the
    ``[m, F]`` temporaries stay under ``chunk`` entries."""
    out = []
    step = max(1, chunk // max(1, len(tris)))
    for s in range(0, len(p), step):
        a = tris[None, :, 0] - p[s:s + step, None]         # [m, F, 3]
        b = tris[None, :, 1] - p[s:s + step, None]
        c = tris[None, :, 2] - p[s:s + step, None]
        la, lb, lc = _length(a), _length(b), _length(c)
        det = (a * torch.cross(b, c, dim=-1)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append((2 * torch.atan2(det, den)).sum(-1) / (4 * math.pi))
    return torch.cat(out)


def load_mesh(path):
    """Load one mesh file with trimesh (scenes are concatenated); clear error if it is not one."""
    import trimesh

    try:
        m = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types
        raise ValueError(f"cannot read mesh {path}: {exc}") from exc
    if not isinstance(m, trimesh.Trimesh) or len(m.faces) == 0:
        raise ValueError(f"{path} holds no triangles")
    return m


def mesh_objects(directory, n_samples: int = 200_000) -> list[MeshShape]:
    """Every mesh under ``directory``. Meshes in sub-folders take the folder name as class
    (``DIR/chair/a.obj``); meshes directly in ``DIR`` get class ``"mesh"``. Object ids are
    ``mesh-<class>-<stem>``; labels follow the sorted class names."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"mesh directory {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no meshes ({', '.join(MESH_SUFFIXES)}) under {root}")
    cls_of = {f: (f.parent.name if f.parent != root else "mesh") for f in files}
    classes = sorted(set(cls_of.values()))
    out = []
    for i, f in enumerate(files):
        c = cls_of[f]
        out.append(MeshShape(f, class_name=c, label=classes.index(c), object_id=f"mesh-{c}-{f.stem}",
                             n_samples=n_samples, seed=i))
    return out
