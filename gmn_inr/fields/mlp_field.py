"""Plain MLP fields (nf2vec NeRFs, inr2vec SDF nets)."""
from __future__ import annotations

from .base import Field
from .spec import ArchSpec, default_spec


class MLPField(Field):
    """Frequency encoding of xyz -> MLP. Default: nf2vec's NeRF (24 frequencies, 144 inputs,
    ReLU 3 x 64, no biases, 4 outputs)."""

    family = "mlp"

    def __init__(self, spec: ArchSpec | None = None):
        super().__init__(spec or default_spec("mlp"))
