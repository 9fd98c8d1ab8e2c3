"""nf2vec's conditional decoder: (embedding, xyz) -> field values.

Input ``[z; PE(xyz)]`` (``PE`` = tcnn-style frequency encoding, 24 frequencies = 144 values in the
paper) -> 4 hidden layers of width ``W`` with ReLU; a skip maps the input through one
``Linear + ReLU`` and adds it to the output of the second hidden layer (main paper appendix B)
-> ``out_dim`` (4 = r,g,b,sigma raw for radiance; 1 for sdf / udf / occupancy logit).

CPU saving that changes nothing numerically: the first layer and the skip see the input
``[z; PE(x)]``, and ``W [z; p] = W_z z + W_p p``. ``W_z z`` is the same for every query point of a
shape, so it is computed once per shape (``[B, W]``) and broadcast over its points instead of once
per point (docs/reference.md, "Decoder cost": 434 -> 293 ms at width 1024, 65 -> 22 ms at 256).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from gmn_inr.fields import FrequencyEncoding, FrequencySpec
from gmn_inr.fields.activations import FUNCTIONS, out_dim_of


@dataclass(frozen=True)
class DecoderConfig:
    width: int = 1024       #: hidden width
    n_freqs: int = 24       #: frequencies of the xyz encoding (3 * 2 * n_freqs inputs)


PRESETS: dict[str, DecoderConfig] = {
    "paper": DecoderConfig(width=1024, n_freqs=24),
    # measured on 2 cores: a width-256 decoder costs ~4x a width-128 one per query point, and the
    # rendering term dominates a CPU step; 8 frequencies as the cpu INR presets (24 alias there)
    "cpu": DecoderConfig(width=128, n_freqs=8),
    "tiny": DecoderConfig(width=64, n_freqs=6),
}


class ConditionalDecoder(nn.Module):
    """``forward(z [B, D], xyz [B, P, 3]) -> [B, P, out_dim]`` (also ``xyz [B, ..., 3]``)."""

    def __init__(self, embed_dim: int, out_dim: int, width: int = 1024, n_freqs: int = 24):
        super().__init__()
        self.embed_dim, self.out_dim, self.width = embed_dim, out_dim, width
        self.encoding = FrequencyEncoding(FrequencySpec(n_freqs, False, "tcnn"))
        p = self.encoding.out_dim
        # the first layer and the skip are split into their embedding and coordinate columns
        # (same function as one Linear on the concatenation, see the module docstring)
        self.first_z = nn.Linear(embed_dim, width)
        self.first_p = nn.Linear(p, width, bias=False)
        self.skip_z = nn.Linear(embed_dim, width)
        self.skip_p = nn.Linear(p, width, bias=False)
        self.hidden2 = nn.Linear(width, width)
        self.hidden3 = nn.Linear(width, width)
        self.hidden4 = nn.Linear(width, width)
        self.out = nn.Linear(width, out_dim)

    def forward(self, z: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must be [B, {self.embed_dim}], got {tuple(z.shape)}")
        if xyz.shape[0] != z.shape[0] or xyz.shape[-1] != 3 or xyz.dim() < 3:
            raise ValueError(f"xyz must be [B={z.shape[0]}, ..., 3], got {tuple(xyz.shape)}")
        lead = xyz.shape
        pts = xyz.reshape(lead[0], -1, 3)                              # [B, P, 3]
        pe = self.encoding(pts)                                        # [B, P, 144]
        # once per shape: [B, 1, W], broadcast over the P points
        h = torch.relu(self.first_p(pe) + self.first_z(z).unsqueeze(1))
        skip = torch.relu(self.skip_p(pe) + self.skip_z(z).unsqueeze(1))
        h = torch.relu(self.hidden2(h)) + skip
        h = torch.relu(self.hidden3(h))
        h = torch.relu(self.hidden4(h))
        return self.out(h).reshape(*lead[:-1], self.out_dim)


def make_decoders(embed_dim: int, functions, preset: str = "cpu", unified: str | None = None,
                  **overrides) -> nn.ModuleDict:
    """One decoder per implicit function of the training data.

    ``unified=None``: each function gets its own head (radiance -> 4 outputs, others -> 1).
    ``unified="udf"`` (INRet's unified decoder): every *implicit* function (sdf / udf / occupancy)
    is decoded as that one function, so SDF, UDF and occupancy INRs of one shape must produce
    embeddings that decode to the same surface; radiance keeps its own head.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown decoder preset {preset!r}; known: {', '.join(PRESETS)}")
    cfg = {**asdict(PRESETS[preset]), **overrides}
    heads = {}
    for f in functions:
        out_dim_of(f)                                                  # validates the name
        target = f if (unified is None or f == "radiance") else unified
        if target not in heads:
            heads[target] = ConditionalDecoder(embed_dim, out_dim_of(target), **cfg)
    if unified is not None and unified not in FUNCTIONS[1:]:
        raise ValueError(f"unified decoding must target an implicit function {FUNCTIONS[1:]}, got {unified!r}")
    return nn.ModuleDict(heads)
