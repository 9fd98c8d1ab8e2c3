"""Cardace et al.'s tri-planes (CVLAB-Unibo/triplane_processing, ``trainers/fit_triplane_*.py``) -> ``TriplaneField``.

Facts relied on (``docs/formats.md``): one HDF5 file per shape (``<split>/<i>.h5``) with datasets

* ``triplane`` ``[3, C, R, R]`` float32 (saved channels-first; R = 32, C = 16 in the released configs):
  exactly the ``grid_sample`` input, sampled at (x,y), (x,z), (y,z) of xyz in [-1, 1] with PyTorch's
  default ``align_corners=False``, zero padding, the three samples **summed**;
* ``params``: the SIREN's parameters flattened in ``parameters()`` order (per layer ``weight [out, in]``
  then ``bias``), read as ``sin(30 (W h + b))`` for every layer but the last (linear, 1 output);
* ``class_id`` and the shape's data (``pcd`` / ``vertices`` ... ), not part of the function.

The MLP reads ``cat(features, PE(xyz))`` -- the features **first** -- with the NeRF positional encoding
``[xyz, sin(2^k xyz), cos(2^k xyz)]_{k=0..9}`` (63 values). These are gmn_inr's own tri-plane
conventions (``TriplaneSpec()`` defaults, ``CARDACE_ENCODING``); the number of SIREN layers is read
from the parameter count (the SIREN class lives in a package not indexed here), the width (64 in the
configs) and output count (1) are arguments. Reading HDF5 needs ``h5py`` (``pip install 'gmn_inr[formats]'``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from gmn_inr.fields import ArchSpec, MLPSpec, SpecError, TriplaneSpec, build_field
from gmn_inr.fields.spec import CARDACE_ENCODING

from .common import FormatError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _read_h5(path: Path) -> dict:
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Cardace et al.'s tri-plane files (HDF5) needs the 'h5py' package: "
                          "pip install 'gmn_inr[formats]' (or pip install h5py)") from None
    try:
        with h5py.File(path, "r") as f:
            out = {}
            for k in ("triplane", "params"):
                ds = f.get(k)
                if ds is None or not isinstance(ds, h5py.Dataset):
                    raise FormatError(f"{path} is not a Cardace et al. tri-plane file: no '{k}' dataset "
                                      f"(its datasets are {sorted(f.keys())[:6]})")
                out[k] = np.asarray(ds[()])
            return out
    except OSError as exc:
        raise FormatError(f"{path} is not a readable HDF5 file: {exc}") from None


def load_cardace_triplane(path: str | Path, hidden_dim: int = 64, out_dim: int = 1) -> nn.Module:
    """A Cardace et al. tri-plane ``.h5`` -> ``TriplaneField`` computing the same output on xyz in [-1, 1]
    (the raw logit / distance before any sigmoid). ``hidden_dim``: the SIREN's width; the number
    of its layers follows from the length of ``params``."""
    path = Path(path)
    data = _read_h5(path)
    planes, params = data["triplane"], data["params"]
    if planes.ndim != 4 or planes.shape[0] != 3 or planes.shape[2] != planes.shape[3] \
            or not np.issubdtype(planes.dtype, np.floating):
        raise FormatError(f"{path}: 'triplane' must be a float [3, C, R, R] array, got {planes.dtype} {planes.shape}")
    if params.ndim != 1 or not np.issubdtype(params.dtype, np.floating):
        raise FormatError(f"{path}: 'params' must be a flat float array, got {params.dtype} {params.shape}")
    C, R = int(planes.shape[1]), int(planes.shape[2])
    W, n_in = int(hidden_dim), C + CARDACE_ENCODING.out_dim
    fixed = (n_in + 1) * W + (W + 1) * out_dim                          # first and last layer
    k, rem = divmod(params.size - fixed, (W + 1) * W)                    # hidden -> hidden layers
    if params.size < fixed or rem:
        raise FormatError(f"{path}: 'params' has {params.size} values; a SIREN reading {C} plane features + "
                          f"{CARDACE_ENCODING.out_dim} encoded xyz with width {W} and {out_dim} output(s) has "
                          f"{fixed} + k x {(W + 1) * W} (wrong width, output count or file?)")
    try:
        spec = ArchSpec(family="triplane", out_dim=out_dim, name="cardace-TRI", encoding=CARDACE_ENCODING,
                        mlp=MLPSpec(hidden_layers=k + 1, hidden_dim=W, activation="sine", bias=True, w0=30.0),
                        grid=TriplaneSpec(resolution=R, channels=C))
    except SpecError as exc:
        raise FormatError(f"{path}: {exc}") from None
    values = torch.from_numpy(params.astype(np.float32))
    planes = torch.from_numpy(planes.astype(np.float32))
    if not (bool(torch.isfinite(values).all()) and bool(torch.isfinite(planes).all())):
        raise FormatError(f"{path}: NaN or inf among the tri-plane's values")
    field = build_field(spec)
    tensors = [t for lin in field.mlp.layers for t in (lin.weight, lin.bias)]
    with torch.no_grad():
        field.planes.copy_(planes)
        for t, chunk in zip(tensors, torch.split(values, [t.numel() for t in tensors])):
            t.copy_(chunk.view_as(t))
    return field.eval()


__all__ = ["HDF5_SIGNATURE", "load_cardace_triplane"]
