"""Plain MLP fields (nf2vec NeRFs, inr2vec SDF nets)."""
from __future__ import annotations

from .base import Field
from .registry import register_family
from .spec import NF2VEC_ENCODING, ArchSpec, default_spec, relu_mlp

#: Table 7's MLP and its unseen variants
ARCHS = {
    "MLP": dict(mlp=relu_mlp(), encoding=NF2VEC_ENCODING),
    "MLP-2L": dict(mlp=relu_mlp(hidden_layers=2), encoding=NF2VEC_ENCODING),
    "MLP-32H": dict(mlp=relu_mlp(hidden_dim=32), encoding=NF2VEC_ENCODING),
}


@register_family("mlp", grid=None, archs=ARCHS, training=("MLP",))
class MLPField(Field):
    """Frequency encoding of xyz -> MLP. Default: nf2vec's NeRF (24 frequencies, 144 inputs,
    ReLU 3 x 64, no biases, 4 outputs)."""

    family = "mlp"

    def __init__(self, spec: ArchSpec | None = None):
        super().__init__(spec or default_spec("mlp"))
