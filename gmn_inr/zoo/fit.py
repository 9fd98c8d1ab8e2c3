"""Fit many INRs at once: stacked parameters, ``torch.func.functional_call`` + ``vmap``.

One :func:`fit_batch` call fits ``B`` INRs of ONE architecture (an :class:`ArchSpec`) and
one implicit function to ``B`` objects together: the parameters of the ``B`` fields are
stacked along a new leading dimension, the reference module from :mod:`gmn_inr.fields`
runs under ``vmap`` over that dimension, and one Adam steps all of them. Adam is
element-wise and the loss is a sum of per-INR losses, so this is exactly ``B``
independent fits, just batched; the stacked tensors split back into ordinary
``state_dict`` s that :func:`gmn_inr.fields.load_field` rebuilds.

Octrees are sparse per object; :class:`~gmn_inr.zoo.batch.FieldStack` stacks them by padding.
The grid's parameters (the field's ``grid_parameters()``, whatever the family calls them) get
the grid learning rate, the MLP's the MLP rate.

Supervision (:mod:`gmn_inr.zoo.samples`, inr2vec-style, per object once, shared by all its INRs):
near-surface points (surface + small and larger Gaussian offsets) and uniform points in
``[-1,1]^3``, with the ground-truth sdf and part colour at each.

* ``sdf`` / ``udf``: L1 to the value; ``occupancy``: BCE on the logit;
* ``radiance``: ``radiance_from_raw(raw) = (rgb, sigma)`` is fitted to
  ``sigma* = SIGMA_MAX * sigmoid(-sdf / eps)`` (a smooth step of the sdf: high inside,
  ~0 outside) and to the part colour near and inside the surface.

Every fitted INR then goes through the quality gate (:mod:`gmn_inr.zoo.gate`): IoU of the
occupancy it implies on a grid, mean |sdf| error at surface points, colour PSNR at
surface points. Failures are refitted once with a new seed and more steps, then dropped.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from gmn_inr.fields import ArchSpec, get_family, radiance_from_raw

from .batch import FieldStack, _Batch  # noqa: F401  (_Batch: the old name)
from .gate import (DT, SIGMA_MAX, gate_metrics, gate_view_truth, ground_truth_radiance, passes,  # noqa: F401
                   render_gate_views)
from .samples import ObjectSamples, gate_points, octree_occupancy, prepare_samples  # noqa: F401

#: a refit's seed is the first fit's plus this (a prime, so refits of neighbouring seeds differ)
REFIT_SEED_OFFSET = 7919


def inr_seed(base: int, object_id: str) -> int:
    """The seed of one INR: a stable function of ``base`` (the zoo seed, function and architecture)
    and its object, never of the batch it is fitted in (sha256, not the salted ``hash``)."""
    import hashlib

    h = hashlib.sha256(f"{int(base)}/{object_id}".encode()).digest()
    return int.from_bytes(h[:7], "little")          # < 2^56: room for REFIT_SEED_OFFSET and + 1


@dataclass(frozen=True)
class FitConfig:
    """How long and on what to fit, and what a fit must reach to be kept.

    Gate thresholds: ``min_iou`` (occupancy implied by the INR vs the truth on a
    ``gate_res^3`` grid plus near-surface points), ``max_sdf_err`` (mean |error| near the
    surface, sdf/udf), ``min_psnr`` (colour at surface points, radiance), ``min_view_psnr``
    (a rendered ``gate_view^2`` view against the ground-truth field, radiance).
    """

    steps: int = 300
    points: int = 1024            # query points per INR per step
    lr_mlp: float = 3e-3
    lr_grid: float = 2e-2
    pool: int = 32768             # supervision points per object
    surface: int = 4096           # surface points per object (gate and near-surface pool)
    eps: float = 0.01             # width of the sdf -> density step
    gate_res: int = 48
    min_iou: float = 0.5
    max_sdf_err: float = 0.008     # a constant 0 scores ~0.016 (the near points' offsets)
    min_psnr: float = 18.0
    refit_steps_factor: float = 1.5
    lr_sine: float = 3e-3         # MLP step size of sine (SIREN) MLPs, any function
    lr_relu_radiance: float = 2e-2  # MLP step size of ReLU MLPs fitting radiance
    radiance_out_lr_factor: float = 2.0
    radiance_out_lr_factor_sine: float = 10.0
    empty_weight: float = 2.0     # radiance: weight of the density loss where the truth is empty
    gate_view: int = 32           # radiance: side of the rendered gate view (0 = no view gate)
    gate_view_samples: int = 48
    min_view_psnr: float = 18.0
    max_freq: float = 110.0       # frequency-encoding inputs above this (rad/unit) are held at 0


def _loss(raw: torch.Tensor, sdf: torch.Tensor, col: torch.Tensor, function: str, eps: float,
          empty_weight: float = 1.0) -> torch.Tensor:
    """Per-INR loss ``[B]`` from ``raw [B, N, D]``, ``sdf [B, N]``, ``col [B, N, 3]``."""
    if function == "sdf":
        return (raw[..., 0] - sdf).abs().mean(-1)
    if function == "udf":
        return (raw[..., 0] - sdf.abs()).abs().mean(-1)
    if function == "occupancy":
        return F.binary_cross_entropy_with_logits(raw[..., 0], (sdf < 0).float(), reduction="none").mean(-1)
    if function == "radiance":
        rgb, sigma = radiance_from_raw(raw)
        target = SIGMA_MAX * torch.sigmoid(-sdf / eps)
        # L1 on the optical depth of one render sample (sigma * DT): a slight density in empty
        # space piles up along a ray into fog, so it must be pushed to ~0, which an L1 (constant
        # gradient near 0) does and an L2 in sigma does not
        wd = torch.where(sdf > eps * 3, empty_weight, 1.0)
        dens = (wd * (sigma - target).abs() * DT).mean(-1)
        # colour matters where the surface is visible: inside and within a few eps of it
        w = (sdf < 3 * eps).float()
        colour = (w * ((rgb - col) ** 2).sum(-1)).sum(-1) / w.sum(-1).clamp_min(1)
        return dens + colour
    raise ValueError(f"unknown implicit function {function!r}")


@dataclass
class FitResult:
    """One fitted INR: its ``state_dict``, gate ``metrics``, ``passed``, ``attempts``."""

    object_id: str
    state_dict: dict
    metrics: dict
    passed: bool
    attempts: int = 1
    seconds: float = 0.0


def fit_batch(spec: ArchSpec, function: str, samples: Sequence[ObjectSamples], cfg: FitConfig,
              seed: int = 0, steps: Optional[int] = None, seeds: Optional[Sequence[int]] = None,
              device: "torch.device | str | None" = None, init_seed: Optional[int] = None) -> list[FitResult]:
    """Fit ``len(samples)`` INRs of ``spec`` for ``function`` at once and gate each.

    ``spec.out_dim`` must match the function (4 for radiance, 1 otherwise). ``seeds``: one per INR
    (default ``inr_seed(seed, object_id)``); INR ``b``'s initial parameters and the points it is
    trained on each step come from ``seeds[b]`` alone, so an INR fitted in a batch of any size, at
    any position, is the same INR (the stacked fit is ``B`` independent fits). ``init_seed``: every
    INR's initial parameters come from this one seed instead (a shared initialisation); the points
    each is trained on still come from its own seed.

    ``device`` (default CPU): where the fit, the gate's evaluations and the gate view run. The
    initial weights and each step's points are drawn from CPU generators whatever the device, so an
    INR is a function of its own key on any device (equal to float tolerance across devices);
    the returned state dicts are on the CPU.
    """
    want = 4 if function == "radiance" else 1
    if spec.out_dim != want:
        raise ValueError(f"{function} INRs need out_dim {want}, spec {spec.name} has {spec.out_dim}")
    B = len(samples)
    if B == 0:
        return []
    if B == 1 and torch.get_num_threads() > 1:
        # measured: with several threads a batch of ONE octree takes other (reduction-splitting)
        # kernels than a batch of two or more, so its result differed in the last bits from the same
        # INR fitted beside others; one thread gives the batched result exactly (and costs little)
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fit_batch(spec, function, samples, cfg, seed, steps, seeds, device, init_seed)
        finally:
            torch.set_num_threads(n)
    t0 = time.perf_counter()
    sparse = getattr(get_family(spec.family).field, "sparse", False)
    occs = [octree_occupancy(s.shape, spec) for s in samples] if sparse else None
    seeds = [inr_seed(seed, s.object_id) for s in samples] if seeds is None else [int(x) for x in seeds]
    dev = torch.device("cpu") if device is None else torch.device(device)
    batch = FieldStack(spec, occs, B, seeds if init_seed is None else [int(init_seed)] * B, device=dev)
    batch.mask_frequencies(cfg.max_freq)
    out_bias = f"mlp.layers.{spec.mlp.hidden_layers}.bias"
    if function == "radiance" and out_bias in batch.params:
        with torch.no_grad():   # start from empty space (softplus(-4) ~ 0.02) where a bias allows it
            batch.params[out_bias][:, 3] = -4.0
    # the output layer of a radiance field must reach raw ~ SIGMA_MAX (softplus) from a tiny
    # (SIREN) init within a few hundred steps: give it a larger step size
    last = f"mlp.layers.{spec.mlp.hidden_layers}."
    sine = spec.mlp.activation == "sine"
    if sine:             # SIREN diverges at the step sizes a ReLU net takes
        lr, factor = cfg.lr_sine, cfg.radiance_out_lr_factor_sine
    elif function == "radiance":
        lr, factor = cfg.lr_relu_radiance, cfg.radiance_out_lr_factor
    else:
        lr, factor = cfg.lr_mlp, 1.0
    out_lr = lr * (factor if function == "radiance" else 1.0)
    groups = [
        {"params": [p for n, p in batch.params.items() if n not in batch.grid_names and not n.startswith(last)],
         "lr": lr},
        {"params": [p for n, p in batch.params.items() if n.startswith(last)], "lr": out_lr},
        {"params": [p for n, p in batch.params.items() if n in batch.grid_names], "lr": cfg.lr_grid},
    ]
    opt = torch.optim.Adam([g for g in groups if g["params"]], betas=(0.9, 0.99), eps=1e-10)
    steps = cfg.steps if steps is None else steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                total_steps=steps, pct_start=0.1)
    pool_pts = torch.stack([s.points for s in samples]).to(dev)    # [B, P, 3]
    pool_sdf = torch.stack([s.sdf for s in samples]).to(dev)       # [B, P]
    pool_col = torch.stack([s.color for s in samples]).to(dev)     # [B, P, 3]
    P = pool_pts.shape[1]
    gens = [torch.Generator().manual_seed(s + 1) for s in seeds]     # each INR's own points
    for idx in point_indices(gens, P, cfg.points, steps, dev, prefetch=dev.type != "cpu"):
        x = torch.gather(pool_pts, 1, idx[..., None].expand(-1, -1, 3))
        d = torch.gather(pool_sdf, 1, idx)
        c = torch.gather(pool_col, 1, idx[..., None].expand(-1, -1, 3))
        loss = _loss(batch.forward(x), d, c, function, cfg.eps, cfg.empty_weight).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        grid = torch.stack([s.gate_points for s in samples]).to(dev)
        raw_grid = torch.cat([batch.forward(grid[:, i:i + 16384]) for i in range(0, grid.shape[1], 16384)], 1).cpu()
        raw_surf = batch.forward(torch.stack([s.surface for s in samples]).to(dev)).cpu()
        views = None
        if function == "radiance" and cfg.gate_view:
            views = render_gate_views(lambda p: batch.forward(p.reshape(B, -1, 3)).reshape(*p.shape[:-1], 4),
                                      B, cfg, device=dev).cpu()
    secs = (time.perf_counter() - t0) / B
    out = []
    for b, (sd, s) in enumerate(zip(batch.state_dicts(), samples)):
        m = gate_metrics(raw_grid[b], raw_surf[b], s, function)
        if views is not None:
            mse = ((views[b] - gate_view_truth(s, cfg)) ** 2).mean().item()
            m["view_psnr"] = -10 * math.log10(max(mse, 1e-10))
        out.append(FitResult(s.object_id, sd, m, passes(m, cfg), 1, secs))
    return out


def point_indices(gens: Sequence[torch.Generator], pool: int, points: int, steps: int, device: torch.device,
                  prefetch: bool = False, block: int = 8):
    """Each step's ``[B, points]`` indices into the INRs' pools, INR ``b``'s from ``gens[b]`` (CPU),
    on ``device``. Inline, one draw per INR per step (the CPU build); with ``prefetch`` a thread
    draws ``block`` steps per INR at once (the same numbers: a ``[k, n]`` draw from a CPU generator
    equals ``k`` draws of ``[n]``) into pinned memory and copies them without blocking, so on a GPU
    the draws overlap the fit's steps instead of adding to them."""
    if not prefetch:
        for _ in range(steps):
            yield torch.stack([torch.randint(pool, (points,), generator=g) for g in gens]).to(device)
        return
    import queue
    import threading

    q: "queue.Queue" = queue.Queue(maxsize=2)
    pin = device.type == "cuda"

    def draw() -> None:
        try:
            for s0 in range(0, steps, block):
                k = min(block, steps - s0)
                blk = torch.stack([torch.randint(pool, (k, points), generator=g) for g in gens], 1)   # [k, B, n]
                q.put(blk.pin_memory() if pin else blk)
        except BaseException as exc:        # handed to the fitting thread, which raises it
            q.put(exc)

    threading.Thread(target=draw, daemon=True).start()
    for s0 in range(0, steps, block):
        blk = q.get()
        if isinstance(blk, BaseException):
            raise blk
        blk = blk.to(device, non_blocking=True)
        yield from blk


def fit_inrs(spec: ArchSpec, function: str, samples: Sequence[ObjectSamples], cfg: FitConfig,
             seed: int = 0, refit: bool = True, seeds: Optional[Sequence[int]] = None,
             device: "torch.device | str | None" = None, init_seed: Optional[int] = None) -> list[FitResult]:
    """:func:`fit_batch`, then refit the INRs that fail the gate once (seed + REFIT_SEED_OFFSET,
    ``refit_steps_factor`` more steps, batched too). Results keep ``passed=False`` if the
    refit fails as well; the caller drops (and counts) them. ``seeds``: one per INR (default
    ``inr_seed(seed, object_id)``), so each result depends on its own INR only. ``init_seed``: one
    shared initialisation for every INR, the refit's too (:func:`fit_batch`)."""
    seeds = [inr_seed(seed, s.object_id) for s in samples] if seeds is None else [int(x) for x in seeds]
    res = fit_batch(spec, function, samples, cfg, seeds=seeds, device=device, init_seed=init_seed)
    bad = [i for i, r in enumerate(res) if not r.passed]
    if refit and bad:
        again = fit_batch(spec, function, [samples[i] for i in bad], cfg,
                          seeds=[seeds[i] + REFIT_SEED_OFFSET for i in bad],
                          steps=int(cfg.steps * cfg.refit_steps_factor), device=device, init_seed=init_seed)
        for i, r in zip(bad, again):
            r.attempts = 2
            r.seconds += res[i].seconds
            # the first try failed the gate: the refit (longer, passed or not) replaces it
            res[i] = r
    return res


def fit_one_at_a_time(spec: ArchSpec, function: str, samples: Sequence[ObjectSamples], cfg: FitConfig,
                      seed: int = 0) -> list[FitResult]:
    """The unbatched baseline (for benchmarks): one :func:`fit_batch` of size 1 per object."""
    return [fit_batch(spec, function, [s], cfg, seed)[0] for s in samples]
