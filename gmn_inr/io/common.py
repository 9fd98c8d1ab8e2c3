"""What every INR file reader shares: the error type, safe readers of safetensors and PyTorch
files (tensors only, nothing unpickled), and tiny-cuda-nn's flat MLP layout."""
from __future__ import annotations

from pathlib import Path

import torch

from gmn_inr.fields.user_module import FormatError  # noqa: F401  (every reader raises it)


def read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:
        raise FormatError(f"{path} is not a readable safetensors file: {exc}") from None


def read_torch_state(path: Path) -> dict:
    try:
        obj = torch.load(str(path), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise FormatError(f"{path} is not a PyTorch file of tensors (read with weights_only=True): "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def tcnn_mlp_weights(params, n_in: int, hidden_layers: int, hidden_dim: int, n_out: int,
                     what: str) -> list[torch.Tensor]:
    """The weight matrices of a bias-free tiny-cuda-nn MLP (:func:`graphs.tcnn.split_tcnn_mlp`: a file
    with non-zero weights on a Frequency / Identity encoding's padding is refused), as
    :class:`FormatError` for a file that does not fit."""
    from gmn_inr.fields import SpecError
    from graphs.tcnn import split_tcnn_mlp

    try:
        return split_tcnn_mlp(params, n_in, hidden_layers, hidden_dim, n_out, what)[0]
    except SpecError as exc:
        raise FormatError(str(exc)) from None
