"""Training objectives: reconstruction (rendering / implicit function), SigLIP, L2 alignment.

* ``L_R``: the decoder, conditioned on an INR's embedding, must reproduce that INR — through
  volume rendering for radiance fields (nf2vec: smooth-L1 of pixel colours, foreground 0.8 and
  background 0.2) or through its values at query points near and away from the surface for
  sdf / udf / occupancy INRs (inr2vec / INRet).
* ``L_C``: SigLIP between embeddings of one object in two architectures (main paper eq. 3).
* ``L_2``: squared distance between the two embeddings of a pair (INRet's alignment).
* total ``L = w_R L_R + lambda L_C + mu L_2``; any weight 0 switches its term off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from gmn_inr.fields.activations import FUNCTIONS


# -- SigLIP --------------------------------------------------------------------------------
def siglip_loss(u: torch.Tensor, v: torch.Tensor, log_t: torch.Tensor, b: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP (Zhai et al.; open_clip / big_vision): ``u, v [N, D]`` (L2-normalised by the caller).

    ``logits = exp(log_t) * u @ v.T + b``; ``labels = 2 I - 1`` (pair ``j`` matches only ``j``)
    unless ``labels [N, N]`` (+1 / -1) is given, e.g. +1 wherever two pairs of a batch are the
    same object, so that an object is never pushed away from itself;
    ``loss = -sum(logsigmoid(labels * logits)) / N``. Returns a scalar.
    """
    if u.dim() != 2 or u.shape != v.shape:
        raise ValueError(f"siglip_loss needs u, v of equal shape [N, D], got {tuple(u.shape)} and {tuple(v.shape)}")
    n = u.shape[0]
    logits = torch.exp(log_t) * (u @ v.t()) + b
    if labels is None:
        labels = 2.0 * torch.eye(n, dtype=logits.dtype, device=logits.device) - 1.0
    elif labels.shape != (n, n):
        raise ValueError(f"siglip_loss labels must be [{n}, {n}], got {tuple(labels.shape)}")
    return -F.logsigmoid(labels.to(logits.dtype) * logits).sum() / n


def same_object_labels(object_ids) -> torch.Tensor:
    """``[N, N]`` SigLIP labels: +1 where pairs ``j`` and ``k`` show the same object, else -1."""
    ids = list(object_ids)
    codes = torch.tensor([ids.index(o) for o in ids])
    return 2.0 * (codes.unsqueeze(0) == codes.unsqueeze(1)).float() - 1.0


class SigLIP(nn.Module):
    """Learnable log-temperature ``log_t`` (init log 10) and bias ``b`` (init -10), as SigLIP."""

    def __init__(self, log_t_init: float = math.log(10.0), b_init: float = -10.0):
        super().__init__()
        self.log_t = nn.Parameter(torch.tensor(float(log_t_init)))
        self.b = nn.Parameter(torch.tensor(float(b_init)))

    def forward(self, u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Raw embeddings ``u, v [N, D]`` -> scalar loss (normalises them first)."""
        return siglip_loss(F.normalize(u, dim=-1), F.normalize(v, dim=-1), self.log_t, self.b, labels)


# -- L2 alignment ------------------------------------------------------------------------
def l2_alignment(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """INRet's alignment: mean over pairs of ``||u_j - v_j||^2``; ``u, v [N, D]`` -> scalar."""
    if u.shape != v.shape:
        raise ValueError(f"l2_alignment needs equal shapes, got {tuple(u.shape)} and {tuple(v.shape)}")
    return (u - v).pow(2).sum(dim=-1).mean()


# -- rendering ---------------------------------------------------------------------------
def rendering_loss(pred_rgb: torch.Tensor, target_rgb: torch.Tensor, target_acc: torch.Tensor,
                   fg_weight: float = 0.8, bg_weight: float = 0.2, fg_threshold: float = 0.5,
                   beta: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """nf2vec's rendering loss, per INR, averaged over INRs (``reduction="none"``: ``[B]``).

    ``pred_rgb, target_rgb [B, R, 3]`` (decoder's and input NeRF's colours of the same rays),
    ``target_acc [B, R]`` (input NeRF's opacity). A ray is foreground when the input NeRF's opacity
    exceeds ``fg_threshold``; each INR's loss is ``fg_weight * mean_fg smoothL1 + bg_weight *
    mean_bg smoothL1`` (a group with no rays contributes 0). Returns a scalar.
    """
    if pred_rgb.shape != target_rgb.shape or pred_rgb.shape[:-1] != target_acc.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred_rgb.shape)}, target {tuple(target_rgb.shape)}, "
                         f"acc {tuple(target_acc.shape)}")
    per_ray = F.smooth_l1_loss(pred_rgb, target_rgb, reduction="none", beta=beta).mean(dim=-1)   # [B, R]
    fg = (target_acc > fg_threshold).to(per_ray.dtype)
    bg = 1.0 - fg
    fg_term = (per_ray * fg).sum(-1) / fg.sum(-1).clamp_min(1.0)
    bg_term = (per_ray * bg).sum(-1) / bg.sum(-1).clamp_min(1.0)
    per_inr = fg_weight * fg_term + bg_weight * bg_term
    return _reduce(per_inr, reduction)


def _reduce(per_inr: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_inr
    if reduction == "mean":
        return per_inr.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


# -- implicit functions ------------------------------------------------------------------
#: sdf / udf errors are clamped (DeepSDF) so the loss concentrates on the surface's vicinity
SDF_CLAMP = 0.1
#: when an SDF teacher is decoded as occupancy, logit = -sdf / OCC_TEMPERATURE
OCC_TEMPERATURE = 0.01


def convert_target(values: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """Express a teacher's outputs ``values [...]`` of function ``source`` as function ``target``.

    Used by the unified decoder (INRet). Exact conversions only: sdf -> udf (``|sdf|``),
    sdf -> occupancy (logit ``-sdf / OCC_TEMPERATURE``), identity. Anything else (e.g. udf -> sdf,
    which would need the sign) raises ``ValueError``.
    """
    if source not in FUNCTIONS or target not in FUNCTIONS:
        raise ValueError(f"unknown function {source!r} or {target!r}; known: {FUNCTIONS}")
    if source == target:
        return values
    if source == "sdf" and target == "udf":
        return values.abs()
    if source == "sdf" and target == "occupancy":
        return -values / OCC_TEMPERATURE
    raise ValueError(f"cannot express a {source!r} INR as {target!r}: the unified decoder needs sdf "
                     f"teachers for {target!r} (or teachers of that function)")


def implicit_loss(pred: torch.Tensor, target: torch.Tensor, function: str, reduction: str = "mean") -> torch.Tensor:
    """Reconstruction of an implicit function at query points: ``pred, target [B, P]`` -> scalar
    (``reduction="none"``: per INR, ``[B]``).

    sdf / udf: L1 between values clamped to ``±SDF_CLAMP`` (DeepSDF); the prediction is clamped
    only where the clamped target sits on the same bound, so a prediction beyond the band keeps a
    gradient towards a target inside it (clamping both always would leave a decoder whose
    initial outputs all lie beyond the band with no gradient at all). Occupancy: binary
    cross-entropy of the decoder's logit against the teacher's probability ``sigmoid(target logit)``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if function in ("sdf", "udf"):
        t = target.clamp(-SDF_CLAMP, SDF_CLAMP)
        pc = pred.clamp(-SDF_CLAMP, SDF_CLAMP)
        err = torch.where(pc == t, torch.zeros_like(pred), (pred - t).abs())
        return _reduce(err.mean(dim=-1), reduction)
    if function == "occupancy":
        err = F.binary_cross_entropy_with_logits(pred, torch.sigmoid(target), reduction="none")
        return _reduce(err.mean(dim=-1), reduction)
    raise ValueError(f"implicit_loss handles sdf / udf / occupancy, got {function!r}")


@torch.no_grad()
def implicit_query_points(teacher: Callable[[torch.Tensor], torch.Tensor], n_points: int,
                          generator: Optional[torch.Generator] = None, near_fraction: float = 0.5,
                          pool_factor: int = 16, jitter: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Query points near and away from a teacher's surface, and the teacher's values there.

    ``n_points * (1 - near_fraction)`` points are uniform in [-1, 1]^3. The rest are found from
    the teacher itself: among ``pool_factor`` times as many uniform candidates, keep those with
    the smallest ``|f|`` (distance value or logit: the surface is where it is 0) and jitter them
    slightly. Returns ``(xyz [P, 3], values [P])``; ``teacher`` maps ``[M, 3] -> [M, 1]``.
    """
    n_near = int(round(n_points * near_fraction))
    n_far = n_points - n_near
    far = torch.rand(n_far, 3, generator=generator) * 2 - 1
    parts = [far]
    if n_near > 0:
        pool = torch.rand(n_near * pool_factor, 3, generator=generator) * 2 - 1
        score = teacher(pool).reshape(-1).abs()
        idx = torch.topk(score, n_near, largest=False).indices
        near = pool[idx] + jitter * torch.randn(n_near, 3, generator=generator)
        parts.append(near.clamp(-1, 1))
    xyz = torch.cat(parts, dim=0)
    return xyz, teacher(xyz).reshape(-1)


# -- combination -------------------------------------------------------------------------
@dataclass(frozen=True)
class LossWeights:
    """``L = recon * L_R + contrastive * L_C + l2 * L_2``; 0 switches a term off.

    The paper's three models: ``L_R`` = (1, 0, 0), ``L_R+C`` = (1, 2e-2, 0), ``L_C`` = (0, 1, 0).
    """

    recon: float = 1.0
    contrastive: float = 2e-2
    l2: float = 0.0

    @classmethod
    def named(cls, name: str) -> "LossWeights":
        table = {"R": cls(1.0, 0.0, 0.0), "R+C": cls(1.0, 2e-2, 0.0), "C": cls(0.0, 1.0, 0.0),
                 "R+C+L2": cls(1.0, 2e-2, 1e-2), "R+L2": cls(1.0, 0.0, 1e-2)}
        if name not in table:
            raise ValueError(f"unknown loss combination {name!r}; known: {', '.join(table)}")
        return table[name]


def combine(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """Weighted sum of the terms present: ``render`` and ``implicit`` (both L_R), ``contrastive``,
    ``l2``. A term whose weight is 0 is skipped (it need not be computed)."""
    w = {"render": weights.recon, "implicit": weights.recon, "contrastive": weights.contrastive,
         "l2": weights.l2}
    unknown = set(terms) - set(w)
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}")
    total = None
    for k, v in terms.items():
        if w[k] != 0:
            total = w[k] * v if total is None else total + w[k] * v
    if total is None:
        raise ValueError("every loss term is switched off (all weights 0 or no terms given)")
    return total
