"""The one MLP every field family ends in (ReLU or SIREN sine)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .spec import MLPSpec


class Sine(nn.Module):
    """``sin(w0 * x)``: SIREN's activation; ``w0`` is a constant, not a parameter."""

    gmn_activation = "sine"

    def __init__(self, w0: float = 30.0):
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"


class MLP(nn.Module):
    """``[..., in_dim] -> [..., out_dim]``: ``hidden_layers`` hidden layers of ``hidden_dim``
    with the spec's activation, then a linear output layer.

    ``layers`` is a ModuleList of ``nn.Linear`` (weights ``[out, in]``), so a graph converter
    reads weights in ``nn.Linear``'s row-major order.
    """

    def __init__(self, in_dim: int, out_dim: int, spec: MLPSpec | None = None):
        super().__init__()
        spec = spec or MLPSpec()
        spec.validate()
        self.spec = spec
        dims = [in_dim] + [spec.hidden_dim] * spec.hidden_layers + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=spec.bias) for a, b in zip(dims[:-1], dims[1:]))
        self.act = Sine(spec.w0) if spec.activation == "sine" else nn.ReLU()
        if spec.activation == "sine":
            self._siren_init()

    @torch.no_grad()
    def _siren_init(self) -> None:
        # Sitzmann et al.: first layer U(-1/n, 1/n), later U(-sqrt(6/n)/w0, sqrt(6/n)/w0)
        for i, lin in enumerate(self.layers):
            n = lin.in_features
            bound = 1.0 / n if i == 0 else math.sqrt(6.0 / n) / self.spec.w0
            lin.weight.uniform_(-bound, bound)

    @property
    def activation(self) -> str:
        return self.spec.activation

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for lin in self.layers[:-1]:
            h = self.act(lin(h))
        return self.layers[-1](h)
