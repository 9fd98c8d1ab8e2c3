"""DeepSDF checkpoints (facebookresearch/DeepSDF, ``train_deep_sdf.py``) -> :class:`DeepSDFDecoder`.

Facts relied on (``docs/formats.md``): ``ModelParameters/<epoch>.pth`` is ``{"epoch": int,
"model_state_dict": decoder.state_dict()}``, the decoder wrapped in ``DataParallel`` (keys prefixed
``module.``); per layer ``lin{k}.weight_g [out, 1]`` / ``lin{k}.weight_v [out, in]`` (``nn.utils.weight_norm``)
or ``lin{k}.weight``, and ``lin{k}.bias``; without weight norm, ``bn{k}.weight/bias`` LayerNorms.
``LatentCodes/<epoch>.pth`` is ``{"epoch", "latent_codes": {"weight": [N, L]}}`` (an ``nn.Embedding``'s
state dict; older files hold the ``[N, L]`` tensor itself); a reconstruction's code is a ``[1, L]`` tensor.

The architecture is read from the shapes: ``L + 3`` inputs to ``lin0``; a layer whose input is the
previous output plus ``L + 3`` is a ``latent_in`` layer; ``xyz_in_all`` (previous output plus 3) and
``use_tanh`` (not visible in the weights) are not supported. Everything is read with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Union

import torch
from torch import nn

from .common import FormatError, read_torch_state
from .reference import DeepSDFDecoder, DeepSDFShape

_LIN = re.compile(r"^(?:module\.)?lin(\d+)\.(weight|weight_g|weight_v|bias)$")


def is_deepsdf_checkpoint(state: dict) -> bool:
    sd = state.get("model_state_dict")
    return isinstance(sd, dict) and any(_LIN.match(str(k)) for k in sd)


def _strip(sd: dict) -> dict:
    return {(k[7:] if str(k).startswith("module.") else str(k)): v for k, v in sd.items()}


def deepsdf_decoder_from_state(sd: dict, where: str = "state dict") -> DeepSDFDecoder:
    """A :class:`DeepSDFDecoder` holding a DeepSDF decoder state dict (``module.`` prefixes allowed)."""
    sd = _strip(sd)
    layers = sorted({int(m.group(1)) for m in map(_LIN.match, sd) if m})
    if not layers or layers != list(range(len(layers))):
        raise FormatError(f"{where}: DeepSDF layers must be lin0 .. linN, found {['lin%d' % k for k in layers]}")
    n = len(layers)
    w, wn = {}, []
    for k in layers:
        if f"lin{k}.weight_v" in sd and f"lin{k}.weight_g" in sd:
            w[k] = sd[f"lin{k}.weight_v"]
            wn.append(k)
        elif f"lin{k}.weight" in sd:
            w[k] = sd[f"lin{k}.weight"]
        else:
            raise FormatError(f"{where}: lin{k} has neither 'weight' nor 'weight_g'/'weight_v'")
        if not isinstance(w[k], torch.Tensor) or w[k].dim() != 2 or f"lin{k}.bias" not in sd:
            raise FormatError(f"{where}: lin{k} needs a 2-D weight and a bias")
    d0 = int(w[0].shape[1])
    latent = d0 - 3
    if latent < 0 or int(w[n - 1].shape[0]) != 1:
        raise FormatError(f"{where}: lin0 reads {d0} inputs (latent + 3 expected) and lin{n - 1} outputs "
                          f"{int(w[n - 1].shape[0])} (1 expected)")
    latent_in, dims = [], []
    for k in range(1, n):
        prev, inp = int(w[k - 1].shape[0]), int(w[k].shape[1])
        if inp == prev + d0:
            latent_in.append(k)
        elif inp == prev + 3:
            raise FormatError(f"{where}: lin{k} reads the previous {prev} outputs plus xyz (xyz_in_all), "
                              f"which gmn_inr's DeepSDFDecoder does not implement")
        elif inp != prev:
            raise FormatError(f"{where}: lin{k} reads {inp} inputs after lin{k - 1}'s {prev} outputs")
        dims.append(inp)
    bn = [k for k in range(n - 1) if f"bn{k}.weight" in sd]
    if wn and bn:
        raise FormatError(f"{where}: both weight norm (lin{wn[0]}) and LayerNorm (bn{bn[0]}) layers")
    if wn and n - 1 in wn:
        raise FormatError(f"{where}: the last layer lin{n - 1} has weight norm; DeepSDF's never does")
    dec = DeepSDFDecoder(latent_size=latent, dims=dims, latent_in=latent_in, norm_layers=wn or bn,
                         weight_norm=bool(wn))
    mapped = {}
    for k in layers:
        mapped[f"lin{k}.bias"] = sd[f"lin{k}.bias"]
        if k in wn:
            mapped[f"lin{k}.parametrizations.weight.original0"] = sd[f"lin{k}.weight_g"]
            mapped[f"lin{k}.parametrizations.weight.original1"] = sd[f"lin{k}.weight_v"]
        else:
            mapped[f"lin{k}.weight"] = sd[f"lin{k}.weight"]
    for k in bn:
        mapped[f"bn{k}.weight"], mapped[f"bn{k}.bias"] = sd[f"bn{k}.weight"], sd.get(f"bn{k}.bias")
    unknown = sorted(set(sd) - {k.replace(".parametrizations.weight.original0", ".weight_g")
                                .replace(".parametrizations.weight.original1", ".weight_v") for k in mapped})
    if unknown:
        raise FormatError(f"{where}: keys {unknown[:6]} are not part of a DeepSDF decoder")
    mapped = {k: v.detach().float() for k, v in mapped.items()}
    if not all(bool(torch.isfinite(v).all()) for v in mapped.values()):
        raise FormatError(f"{where}: NaN or inf among the decoder's parameters")
    try:
        dec.load_state_dict(mapped)
    except RuntimeError as exc:
        raise FormatError(f"{where}: the weights do not fit the decoder their shapes imply: {exc}") from None
    return dec.eval()


def load_deepsdf_latents(path: str | Path) -> torch.Tensor:
    """``[N, L]`` latent codes of a ``LatentCodes/<epoch>.pth`` file (or a reconstruction's ``[1, L]`` code)."""
    path = Path(path)
    try:
        obj = torch.load(str(path), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise FormatError(f"{path} is not a PyTorch file of tensors (read with weights_only=True): "
                          f"{type(exc).__name__}: {exc}") from None
    codes = obj.get("latent_codes") if isinstance(obj, dict) else obj
    if isinstance(codes, dict):
        codes = codes.get("weight")
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or not codes.is_floating_point():
        raise FormatError(f"{path} holds no DeepSDF latent codes ({{'latent_codes': {{'weight': [N, L]}}}}, "
                          f"{{'latent_codes': [N, L]}} or a [N, L] tensor)")
    return codes.detach().float()


def load_deepsdf(path: str | Path, latent: Union[None, str, Path, torch.Tensor] = None,
                 index: int = 0) -> nn.Module:
    """A DeepSDF ``ModelParameters/<epoch>.pth`` checkpoint -> :class:`DeepSDFDecoder` (input
    ``[..., L + 3]``, latent first), or with ``latent`` (a ``[L]`` / ``[N, L]`` tensor or a latent-code
    file, row ``index``) the :class:`DeepSDFShape` of that shape: ``xyz [..., 3] -> sdf [..., 1]``."""
    path = Path(path)
    state = read_torch_state(path)
    if not is_deepsdf_checkpoint(state):
        raise FormatError(f"{path} is not a DeepSDF checkpoint: it needs 'model_state_dict' holding lin<k> "
                          f"layers, its keys are {sorted(state)[:6]}")
    dec = deepsdf_decoder_from_state(state["model_state_dict"], str(path))
    if latent is None:
        return dec
    codes = latent if isinstance(latent, torch.Tensor) else load_deepsdf_latents(latent)
    codes = codes.detach().float().reshape(-1, codes.shape[-1])
    if not 0 <= index < codes.shape[0]:
        raise FormatError(f"latent index {index} out of range ({codes.shape[0]} codes)")
    if codes.shape[1] != dec.latent_size:
        raise FormatError(f"latent codes have {codes.shape[1]} values, {path}'s decoder takes {dec.latent_size}")
    return DeepSDFShape(dec, codes[index]).eval()


__all__ = ["deepsdf_decoder_from_state", "is_deepsdf_checkpoint", "load_deepsdf", "load_deepsdf_latents"]
