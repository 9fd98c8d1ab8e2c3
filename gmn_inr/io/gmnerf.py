"""The main paper's tri-plane NeRFs (CVLAB-Unibo/gmnerf, ``nf2vec/nerf/triplane.py``) -> ``TriplaneField``.

Facts relied on (``docs/formats.md``): ``nerf_weights.pth`` is a PyTorch state dict with

* ``triplane`` ``[3, R, R, C]`` (channels last; R = 32, C = 16 released), plane ``p`` sampled at the
  box-normalised ``[-1, 1]`` coordinates (x,y), (x,z), (y,z) by ``grid_sample(planes.permute(0, 3, 1,
  2), align_corners=True)`` (bilinear, zero padding), the three samples **summed**;
* ``mlp_base.params``: a tcnn ``Network`` (``CutlassMLP``, ``Sine`` = ``sin(x)``, 3 x 64, 4 outputs,
  no biases) reading ``cat(encoding(u), features)`` -- the encoding **first** -- where ``u`` is the
  [0, 1] box coordinate and the encoding a tcnn ``Frequency`` with 48 frequencies (or ``Identity``);
* ``encoding.params``: absent or empty (the frequency encoding has no parameters).

The field maps xyz in [-1, 1] (the box) to the network's 4 raw outputs (r, g, b before sigmoid,
density before gmnerf's ``trunc_exp(x - 1)``; gmnerf zeroes the density outside the box).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gmn_inr.fields import ArchSpec, FrequencySpec, MLPSpec, SpecError, TriplaneSpec, build_field

from .common import FormatError, read_torch_state, tcnn_mlp_weights

#: gmnerf's ``TRIPLANE_CONF`` (nf2vec/config.py): the defaults of :func:`load_gmnerf_triplane`
GMNERF_TRIPLANE = dict(n_freqs=48, hidden_layers=3, hidden_dim=64, activation="Sine", encoding="Frequency")


def gmnerf_triplane_spec(resolution: int = 32, channels: int = 16, n_freqs: int = 48, hidden_layers: int = 3,
                         hidden_dim: int = 64, activation: str = "Sine", encoding: str = "Frequency") -> ArchSpec:
    """The ArchSpec of a gmnerf tri-plane NeRF: ``TriplaneSpec(align_corners=True, aggregate="sum",
    encoding_first=True)``, a tcnn Frequency encoding of the [0, 1] input (``encoding="Identity"``:
    the [0, 1] coordinates themselves), a bias-free tcnn MLP (``Sine``: ``sin(x)``, or ``ReLU``)."""
    act = {"sine": "sine", "relu": "relu"}.get(str(activation).lower())
    if act is None:
        raise FormatError(f"gmnerf tri-plane activation {activation!r} is not supported (Sine, ReLU)")
    if encoding == "Frequency":
        enc = FrequencySpec(n_freqs=n_freqs, include_input=False, style="tcnn", input_range="unit")
    elif encoding == "Identity":
        enc = FrequencySpec(n_freqs=0, include_input=True, style="tcnn", input_range="unit")
    else:
        raise FormatError(f"gmnerf tri-plane encoding {encoding!r} is not supported (Frequency, Identity)")
    mlp = MLPSpec(hidden_layers=hidden_layers, hidden_dim=hidden_dim, activation=act, bias=False,
                  **({"w0": 1.0} if act == "sine" else {}))
    grid = TriplaneSpec(resolution=resolution, channels=channels, align_corners=True, aggregate="sum",
                        encoding_first=True)
    return ArchSpec(family="triplane", out_dim=4, mlp=mlp, encoding=enc, grid=grid, name="gmnerf-TRI")


def is_gmnerf_triplane(state: dict) -> bool:
    return "triplane" in state and "mlp_base.params" in state


def load_gmnerf_triplane(path: str | Path, n_freqs: int = 48, hidden_layers: int = 3, hidden_dim: int = 64,
                         activation: str = "Sine", encoding: str = "Frequency") -> nn.Module:
    """A gmnerf tri-plane NeRF (``nerf_weights.pth`` with ``triplane`` and ``mlp_base.params``) ->
    ``TriplaneField`` computing the same raw outputs on xyz in [-1, 1]. The resolution and channels
    are read from ``triplane``'s shape; the encoding and MLP sizes (not in the file) default to
    gmnerf's released configuration and are checked against the parameter count."""
    path = Path(path)
    state = read_torch_state(path)
    if not is_gmnerf_triplane(state):
        raise FormatError(f"{path} is not a gmnerf tri-plane NeRF: it needs 'triplane' and 'mlp_base.params', "
                          f"its keys are {sorted(state)[:6]}")
    planes = state["triplane"]
    if not isinstance(planes, torch.Tensor) or planes.dim() != 4 or planes.shape[0] != 3 \
            or planes.shape[1] != planes.shape[2] or not planes.is_floating_point():
        raise FormatError(f"{path}: 'triplane' must be a float tensor [3, R, R, C], got "
                          f"{getattr(planes, 'dtype', type(planes).__name__)} {tuple(getattr(planes, 'shape', ()))}")
    extra = state.get("encoding.params")
    if extra is not None and torch.as_tensor(extra).numel() != 0:
        raise FormatError(f"{path}: 'encoding.params' holds {torch.as_tensor(extra).numel()} values; a gmnerf "
                          f"tri-plane's frequency encoding has none (a hash-grid NeRF is not a tri-plane)")
    R, C = int(planes.shape[1]), int(planes.shape[3])
    try:
        spec = gmnerf_triplane_spec(R, C, n_freqs, hidden_layers, hidden_dim, activation, encoding)
    except SpecError as exc:
        raise FormatError(f"{path}: {exc}") from None
    mats = tcnn_mlp_weights(state["mlp_base.params"], spec.mlp_in_dim, hidden_layers, hidden_dim, 4,
                            f"{path}: 'mlp_base.params' (a gmnerf tri-plane MLP reading {spec.encoding.out_dim} "
                            f"encoded + {C} plane features, {hidden_layers} x {hidden_dim})")
    values = planes.detach().float().permute(0, 3, 1, 2)              # [3, C, R(v: height), R(u: width)]
    if not bool(torch.isfinite(values).all()):
        raise FormatError(f"{path}: 'triplane' holds NaN or inf values")
    field = build_field(spec)
    with torch.no_grad():
        field.planes.copy_(values)
        for lin, w in zip(field.mlp.layers, mats):
            lin.weight.copy_(w)
    return field.eval()


__all__ = ["GMNERF_TRIPLANE", "gmnerf_triplane_spec", "is_gmnerf_triplane", "load_gmnerf_triplane"]
