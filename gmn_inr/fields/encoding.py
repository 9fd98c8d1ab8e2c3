"""Frequency (positional) encoding of xyz, with a description of every output for graphs."""
from __future__ import annotations

import math

import torch
from torch import nn

from .spec import FrequencySpec

#: phase codes of an encoded input: the raw coordinate, its sine, its cosine
PHASE_RAW, PHASE_SIN, PHASE_COS = 0, 1, 2


class FrequencyEncoding(nn.Module):
    """``xyz [..., 3] -> [..., spec.out_dim]``.

    ``style="tcnn"`` (nf2vec / tiny-cuda-nn): output ``i`` is axis ``i // (2F)``, frequency
    ``2^((i % 2F) // 2) * pi``, sine then cosine (a phase shift of pi/2).
    ``style="nerf"`` (Cardace): ``[xyz, sin(2^0 xyz), cos(2^0 xyz), sin(2^1 xyz), ...]``.

    The buffers ``axis [D]``, ``freq [D]`` and ``phase [D]`` say what each output is, so a
    graph converter can give its input neuron a meaning without knowing the order.
    """

    def __init__(self, spec: FrequencySpec | None = None):
        super().__init__()
        spec = spec or FrequencySpec()
        spec.validate()
        self.spec = spec
        f = spec.n_freqs
        k = torch.arange(f, dtype=torch.float32)
        if spec.style == "tcnn":
            # [axis, freq, sin|cos], axis-major
            axis = torch.arange(3).repeat_interleave(2 * f)
            freq = (2.0 ** k * math.pi).repeat_interleave(2).repeat(3)
            phase = torch.tensor([PHASE_SIN, PHASE_COS]).repeat(3 * f)
            if spec.include_input:
                axis = torch.cat([torch.arange(3), axis])
                freq = torch.cat([torch.ones(3), freq])
                phase = torch.cat([torch.zeros(3, dtype=torch.long), phase])
        else:
            # [raw xyz], then per frequency [sin xyz, cos xyz]
            axis = torch.arange(3).repeat(2 * f)
            freq = (2.0 ** k).repeat_interleave(6)
            phase = torch.tensor([PHASE_SIN] * 3 + [PHASE_COS] * 3).repeat(f)
            if spec.include_input:
                axis = torch.cat([torch.arange(3), axis])
                freq = torch.cat([torch.ones(3), freq])
                phase = torch.cat([torch.zeros(3, dtype=torch.long), phase])
        if getattr(spec, "input_range", "signed") == "unit":
            # sin(f (x + 1) / 2 + s) = sin((f / 2) x + s + f / 2): the same function of xyz in [-1, 1]
            base_shift = torch.where(phase == PHASE_COS, math.pi / 2, 0.0) + freq / 2
            freq = freq / 2
        else:
            base_shift = None
        self.register_buffer("axis", axis.long(), persistent=False)
        self.register_buffer("freq", freq.float(), persistent=False)
        self.register_buffer("phase", phase.long(), persistent=False)
        # sin(f x + pi/2) = cos(f x); the raw coordinate is selected by a mask, not a phase
        shift = torch.where(self.phase == PHASE_COS, math.pi / 2, 0.0) if base_shift is None else base_shift
        self.register_buffer("shift", shift, persistent=False)
        self.register_buffer("is_raw", self.phase == PHASE_RAW, persistent=False)
        self.unit_input = getattr(spec, "input_range", "signed") == "unit"

    @property
    def out_dim(self) -> int:
        return self.spec.out_dim

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        if xyz.shape[-1] != 3:
            raise ValueError(f"FrequencyEncoding expects xyz [..., 3], got {tuple(xyz.shape)}")
        x = xyz[..., self.axis]                      # [..., D]
        enc = torch.sin(x * self.freq + self.shift)
        return torch.where(self.is_raw, (x + 1.0) * 0.5 if self.unit_input else x, enc)
