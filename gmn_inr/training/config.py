"""What defines a training run (:class:`TrainConfig`), its learning-rate schedule and its seeds.

Everything random in training is a pure function of ``(seed, step)`` through :func:`seed_of`,
and the learning rate is a closed-form function of the step (:func:`one_cycle_lr`), so a
checkpoint needs only the model, the optimizer state and the step.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from gmn_inr.decoder import PRESETS as DECODER_PRESETS
from gmn_inr.encoder import PRESETS as ENCODER_PRESETS
from gmn_inr.fields.activations import FUNCTIONS
from gmn_inr.losses import LossWeights

#: the model's initial weights come from ``seed_of(config.seed, INIT_SEED_SALT)`` (the same in
#: every process of a distributed run; a salt keeps them apart from the step seeds ``(seed, step)``)
INIT_SEED_SALT = 7
#: :func:`~gmn_inr.training.loop.evaluate` draws its fixed rays and points from this seed
EVAL_SEED = 12345
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in every checkpoint)."""

    preset: str = "cpu"                 #: encoder and decoder sizes: paper | cpu | tiny
    encoder: dict = field(default_factory=dict)    #: overrides of the encoder preset
    decoder: dict = field(default_factory=dict)    #: overrides of the decoder preset (width, n_freqs)
    loss: str = "R+C"                   #: R | R+C | C | R+C+L2 | R+L2 (LossWeights.named)
    recon_weight: Optional[float] = None         #: override the named combination's weights
    contrastive_weight: Optional[float] = None
    l2_weight: Optional[float] = None
    functions: Optional[list] = None    #: decoder heads; None = the functions found in the data
    unified: Optional[str] = None       #: INRet unified decoder: decode every implicit INR as this
    steps: int = 200
    batch_pairs: int = 8                #: pairs per (global) batch (the paper: 8)
    lr: float = 1e-3                    #: one-cycle maximum learning rate (paper 1e-4 over 250 epochs)
    weight_decay: float = 1e-2
    pct_start: float = 0.3              #: one-cycle warm-up fraction
    grad_clip: float = 0.0              #: max gradient norm; 0 = off
    seed: int = 0
    rays_per_inr: int = 64              #: rendering loss: rays per radiance INR per step
    samples_per_ray: int = 24
    points_per_inr: int = 512           #: implicit loss: query points per INR per step
    near_fraction: float = 0.5          #: share of query points near the surface
    background: float = 1.0             #: background colour (white, as ShapeNet renders)
    ckpt_every: int = 100
    log_every: int = 10
    device: str = "auto"                #: auto (cuda:LOCAL_RANK when available, else cpu) | cpu | cuda[:i]
    precision: str = "auto"             #: auto (bf16 autocast on cuda, fp32 on cpu) | fp32 | bf16

    @classmethod
    def for_preset(cls, preset: str, **overrides: Any) -> "TrainConfig":
        """Sensible run settings per preset: ``paper`` (the paper's lr 1e-4 and batch 8, more rays
        per INR for a GPU), ``cpu`` (a step of 8 pairs in about a second on 2 cores), ``tiny``
        (tests)."""
        table = {
            "paper": dict(lr=1e-4, batch_pairs=8, rays_per_inr=1024, samples_per_ray=64, points_per_inr=4096),
            "cpu": dict(lr=1e-3, batch_pairs=8, rays_per_inr=64, samples_per_ray=24, points_per_inr=512),
            "tiny": dict(lr=3e-3, batch_pairs=4, rays_per_inr=32, samples_per_ray=12, points_per_inr=128),
        }
        if preset not in table:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(table)}")
        return cls(**{"preset": preset, **table[preset], **overrides})

    def weights(self) -> LossWeights:
        w = LossWeights.named(self.loss)
        return LossWeights(recon=w.recon if self.recon_weight is None else self.recon_weight,
                           contrastive=w.contrastive if self.contrastive_weight is None else self.contrastive_weight,
                           l2=w.l2 if self.l2_weight is None else self.l2_weight)

    def validate(self) -> None:
        if self.preset not in ENCODER_PRESETS or self.preset not in DECODER_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(ENCODER_PRESETS)}")
        if self.steps < 1 or self.batch_pairs < 1:
            raise ValueError("steps and batch_pairs must be >= 1")
        if self.weights().contrastive > 0 and self.batch_pairs < 2:
            raise ValueError("the contrastive loss needs batch_pairs >= 2 (negatives)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.unified is not None and self.unified not in FUNCTIONS[1:]:
            raise ValueError(f"unified must be one of {FUNCTIONS[1:]}, got {self.unified!r}")
        self.weights()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {sorted(unknown)}")
        return cls(**d)

    #: fields that shape the model: a checkpoint can only be resumed with the same values
    SHAPING = ("preset", "encoder", "decoder", "functions", "unified", "loss", "recon_weight",
               "contrastive_weight", "l2_weight")


def one_cycle_lr(step: int, total: int, max_lr: float, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4) -> float:
    """The learning rate of ``torch.optim.lr_scheduler.OneCycleLR`` (cosine annealing) at ``step``,
    in closed form so that resuming needs no scheduler state."""
    initial = max_lr / div_factor
    final = initial / final_div_factor
    peak = float(pct_start * total) - 1
    end = float(total - 1)

    def cos(a: float, b: float, pct: float) -> float:
        return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)

    if peak > 0 and step <= peak:
        return cos(initial, max_lr, step / peak)
    span = max(end - max(peak, 0.0), 1.0)
    return cos(max_lr, final, min(1.0, (step - max(peak, 0.0)) / span))


def seed_of(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (so every process derives the same one)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h
