"""What every INR file reader shares: the error type, safe readers of safetensors and PyTorch
files (tensors only, nothing unpickled), and tiny-cuda-nn's flat MLP layout."""
from __future__ import annotations

from pathlib import Path

import torch


class FormatError(ValueError):
    """A file that is not in the format asked for (or in none that gmn_inr reads)."""


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


def pad16(n: int) -> int:
    return (n + 15) // 16 * 16


def tcnn_mlp_weights(params, n_in: int, hidden_layers: int, hidden_dim: int, n_out: int,
                     what: str) -> list[torch.Tensor]:
    """The weight matrices ``[out, in]`` (float32) of a tiny-cuda-nn MLP from its flat ``params``
    (``FullyFusedMLP`` / ``CutlassMLP``: layers back to back, row-major, no biases; the input width
    padded to a multiple of 16, the output to a multiple of 16), the padding cut off.

    A tcnn ``Frequency`` or ``Identity`` input encoding fills its padding with **1** (a grid
    encoding with 0): weights on those columns would act as a bias, which a bias-free MLP cannot
    hold, so a file where they are not all zero is refused (:class:`FormatError`) rather than loaded
    as a different function. ``what`` names the tensor in errors."""
    params = torch.as_tensor(params).detach()
    if not params.is_floating_point():
        raise FormatError(f"{what} must be floating point, got {params.dtype}")
    params = params.float().reshape(-1)
    shapes = [(hidden_dim, pad16(n_in))] + [(hidden_dim, hidden_dim)] * (hidden_layers - 1) \
        + [(pad16(n_out), hidden_dim)]
    sizes = [a * b for a, b in shapes]
    if params.numel() != sum(sizes):
        raise FormatError(f"{what} has {params.numel()} values; the layout implies {sum(sizes)} "
                          f"(input {n_in} padded to {pad16(n_in)}, {hidden_layers} x {hidden_dim}, output {n_out} "
                          f"padded to {pad16(n_out)})")
    mats = [chunk.view(a, b) for chunk, (a, b) in zip(torch.split(params, sizes), shapes)]
    if bool((mats[0][:, n_in:] != 0).any()):
        raise FormatError(f"{what}: the first layer has non-zero weights on the {pad16(n_in) - n_in} padding "
                          f"inputs that tcnn sets to 1 (an implicit bias gmn_inr's bias-free tcnn MLP cannot hold)")
    if not bool(torch.isfinite(params).all()):
        raise FormatError(f"{what} holds NaN or inf values")
    outs = [hidden_dim] * hidden_layers + [n_out]
    ins = [n_in] + [hidden_dim] * hidden_layers
    return [m[:o, :i].clone() for m, o, i in zip(mats, outs, ins)]
