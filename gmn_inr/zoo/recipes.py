"""The twelve procedural ShapeNet-like classes: a recipe of parts per class, and ``make_shape``.

Classes are modelled with ``y`` up and posed in a ``z``-up world (the convention of
:mod:`gmn_inr.render`); each object gets the class's random proportions and a random yaw.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from .primitives import EXTENT, Part, PartShape, rotation

#: world-from-model rotation: models are built y-up, the world is z-up (world z = model y)
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


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
