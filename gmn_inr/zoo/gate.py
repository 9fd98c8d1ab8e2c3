"""The zoo's quality gate and the radiance target every radiance INR is fitted to.

Every fitted INR goes through :func:`gate_metrics`: IoU of the occupancy it implies on a grid
plus near-surface points, mean |sdf| error near the surface (sdf / udf), colour PSNR at surface
points and, for radiance, the PSNR of one rendered view against :func:`ground_truth_radiance`
(:func:`gate_view_truth`). :func:`passes` compares them with a
:class:`~gmn_inr.zoo.fit.FitConfig`'s thresholds. Fitting (:mod:`gmn_inr.zoo.fit`) and the
zoo's pictures (:mod:`gmn_inr.zoo.show`) both read the radiance target from here.
"""
from __future__ import annotations

import math

import torch

from gmn_inr.fields import radiance_from_raw

from .samples import ObjectSamples

#: density inside a radiance field's object (per unit length; the cube is 2 wide)
SIGMA_MAX = 30.0
#: a typical volume-rendering step (64 samples across the cube): density errors are weighed
#: as the optical depth they add per sample
DT = 2.0 / 64


def ground_truth_radiance(shape, eps: float = 0.01):
    """The radiance field a zoo INR is fitted to, as ``xyz [..., 3] -> raw [..., 4]``: raw
    values whose ``radiance_from_raw`` give the part colour and ``SIGMA_MAX * sigmoid(-sdf/eps)``."""

    def fn(xyz: torch.Tensor) -> torch.Tensor:
        flat = xyz.reshape(-1, 3)
        d, c = shape.sdf_and_color(flat)
        sigma = SIGMA_MAX * torch.sigmoid(-d / eps)
        raw_s = torch.where(sigma > 20, sigma, torch.log(torch.expm1(sigma.clamp_min(1e-6))))  # inverse softplus
        raw_c = torch.logit(c.clamp(1e-4, 1 - 1e-4))
        return torch.cat([raw_c, raw_s[:, None]], -1).reshape(*xyz.shape[:-1], 4)

    return fn


@torch.no_grad()
def gate_metrics(raw_grid: torch.Tensor, raw_surf: torch.Tensor, s: ObjectSamples, function: str) -> dict:
    """Quality of one fitted INR.

    ``raw_grid [Q, D]`` at the gate points, ``raw_surf [S, D]`` at surface points. Returns
    ``iou`` (occupancy implied by the INR: sdf < 0, udf/occupancy/radiance thresholds below),
    and ``sdf_err`` (sdf/udf: mean |error| at points within ~0.02 of the surface) or
    ``psnr`` (radiance: colour at surface points).
    """
    if function == "sdf":
        occ = raw_grid[:, 0] < 0
    elif function == "udf":
        # a udf has no sign: the INR's "occupied" set is its thin shell, compared with the true
        # shell at the same half-cell threshold; the distance error is the real test
        occ = None
    elif function == "occupancy":
        occ = raw_grid[:, 0] > 0
    else:
        occ = radiance_from_raw(raw_grid)[1] > SIGMA_MAX / 2
    out = {}
    if occ is not None:
        inter = (occ & s.grid_occ).sum().item()
        union = (occ | s.grid_occ).sum().item()
        out["iou"] = inter / max(union, 1)
    if function in ("sdf", "udf"):
        # mean |error| at the near-surface gate points (the grid's cells come first); at the
        # surface itself a constant 0 would look perfect
        n_grid = len(s.grid_occ) - 2 * len(s.surface)
        truth = s.gate_sdf[n_grid:]
        truth = truth.abs() if function == "udf" else truth
        out["sdf_err"] = (raw_grid[n_grid:, 0] - truth).abs().mean().item()
    if function == "radiance":
        rgb = radiance_from_raw(raw_surf)[0]
        mse = ((rgb - s.surface_color) ** 2).mean().item()
        out["psnr"] = -10 * math.log10(max(mse, 1e-10))
    return out


def _gate_rays(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed orbit view (elevation 25 deg, azimuth 45 deg): rays ``[R, 3]`` each."""
    from gmn_inr.render import camera_rays, orbit_cameras

    c2w = orbit_cameras(8, elevation=25.0)[1]
    return camera_rays(c2w, cfg.gate_view, cfg.gate_view)


@torch.no_grad()
def render_gate_views(fn, B: int, cfg, device=None) -> torch.Tensor:
    """The gate view through ``B`` radiance fields at once: ``fn(xyz [B, R, S, 3]) -> raw
    [B, R, S, 4]``; returns ``[B, R, 3]`` (white background), rendered on ``device`` (default CPU)."""
    from gmn_inr.render import volume_render

    o, d = _gate_rays(cfg)
    if device is not None:
        o, d = o.to(device), d.to(device)
    rgb, _ = volume_render(fn, o.expand(B, -1, -1), d.expand(B, -1, -1), n_samples=cfg.gate_view_samples, bg=1.0)
    return rgb


def gate_view_truth(s: ObjectSamples, cfg) -> torch.Tensor:
    """The ground-truth gate view of an object (cached on ``s``): ``[R, 3]``."""
    if getattr(s, "_view", None) is None or s._view[0] != (cfg.gate_view, cfg.gate_view_samples, cfg.eps):
        gt = ground_truth_radiance(s.shape, cfg.eps)
        img = render_gate_views(lambda p: gt(p.reshape(-1, 3)).reshape(*p.shape[:-1], 4), 1, cfg)[0]
        s._view = ((cfg.gate_view, cfg.gate_view_samples, cfg.eps), img)
    return s._view[1]


def passes(metrics: dict, cfg) -> bool:
    """Whether ``metrics`` (from :func:`gate_metrics`) clear ``cfg``'s thresholds."""
    ok = True
    if "iou" in metrics:
        ok &= metrics["iou"] >= cfg.min_iou
    if "sdf_err" in metrics:
        ok &= metrics["sdf_err"] <= cfg.max_sdf_err
    if "psnr" in metrics:
        ok &= metrics["psnr"] >= cfg.min_psnr
    if "view_psnr" in metrics:
        ok &= metrics["view_psnr"] >= cfg.min_view_psnr
    return bool(ok)
