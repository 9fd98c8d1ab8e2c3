"""instant-ngp NeRF snapshots (``.msgpack``, ``.ingp``) -> ``HashGridField`` (the density model).

Facts relied on (NVlabs/instant-ngp ``src/testbed.cu`` ``save_snapshot`` / ``reset_network``,
``include/neural-graphics-primitives/nerf_network.h``; tiny-cuda-nn ``trainer.h``; ``docs/formats.md``):

* The file is the network config serialised as msgpack (``.ingp``: the same bytes through zlib/gzip;
  an uncompressed ``.ingp`` is still wrapped). Top level: ``encoding``, ``network`` (the density MLP),
  ``dir_encoding``, ``rgb_network``, ... and ``snapshot`` = ``{"version", "mode": "nerf", "n_params",
  "params_type": "__half" | "float", "params_binary": bytes, "aabb", "nerf": {"aabb_scale", ...},
  "density_grid_binary", ...}``.
* ``params_binary`` (little-endian) is ``[density MLP | colour MLP | hash grid | direction encoding]``.
  The density MLP reads the hash grid's ``n_levels * F`` features (padded with zeros to 16 for a
  ``FullyFusedMLP``, 8 otherwise) and has 16 outputs unless ``network.n_output_dims`` says otherwise;
  output 0 is the density before instant-ngp's ``exp``, the rest feed the colour MLP with the
  view direction's encoding. tcnn MLP layout as in :func:`gmn_inr.io.formats.tcnn_mlp_weights`.
* The saved config is the one the user gave, not the completed one: a missing ``base_resolution``
  is ``2^(log2_hashmap_size // 3)`` with instant-ngp's own default ``log2_hashmap_size`` 15 for this
  rule (tcnn's 19 for the table), and a missing ``per_level_scale`` is
  ``exp(log(2048 aabb_scale / base_resolution) / (n_levels - 1))`` (float32).
* The grid reads the position relative to the snapshot's ``aabb``, in [0, 1]^3.

The field maps xyz in [-1, 1] (the aabb) to the density MLP's outputs -- all of them
(``outputs="all"``), or output 0 only (``outputs="density"``). The colour depends on the view
direction, which a field of xyz does not take: its MLP is not part of the field (its size is checked).
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gmn_inr.fields import HashGridField, HashGridSpec, SpecError
from gmn_inr.fields.hashgrid import hash_levels

from graphs.tcnn import pad16

from .common import FormatError

#: encodings without parameters a NeRF's direction encoding may use
PARAM_FREE = ("sphericalharmonics", "identity", "frequency", "oneblob", "trianglewave", "composite")


def _read(path: Path) -> dict:
    try:
        import msgpack
    except ImportError:
        raise ImportError("reading instant-ngp snapshots needs the 'msgpack' package: "
                          "pip install 'gmn_inr[formats]' (or pip install msgpack)") from None
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b" or (len(data) >= 2 and data[0] == 0x78 and (data[0] * 256 + data[1]) % 31 == 0):
        try:
            data = zlib.decompress(data, wbits=47)                     # zlib or gzip, as zstr writes
        except zlib.error as exc:
            raise FormatError(f"{path}: a compressed .ingp that does not decompress: {exc}") from None
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise FormatError(f"{path} is not a msgpack file: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("snapshot"), dict):
        raise FormatError(f"{path} is not an instant-ngp snapshot: no 'snapshot' map at the top level "
                          f"(keys {sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__})")
    return obj


def _params(path: Path, snap: dict) -> torch.Tensor:
    ptype = snap.get("params_type", "__half")
    dtype = {"__half": "<f2", "float": "<f4"}.get(ptype)
    if dtype is None:
        raise FormatError(f"{path}: snapshot params_type {ptype!r} is not supported ('__half', 'float')")
    blob = snap.get("params_binary")
    if not isinstance(blob, (bytes, bytearray)) or len(blob) % np.dtype(dtype).itemsize:
        raise FormatError(f"{path}: snapshot 'params_binary' must be bytes of {ptype} values")
    params = torch.from_numpy(np.frombuffer(bytes(blob), dtype=dtype).astype(np.float32))
    n = snap.get("n_params", params.numel())
    if n != params.numel():
        raise FormatError(f"{path}: snapshot says n_params = {n} but 'params_binary' holds {params.numel()} values")
    return params


def _complete_encoding(path: Path, enc, aabb_scale: float) -> dict:
    """The hash grid config as instant-ngp completed it before building the network."""
    if not isinstance(enc, dict) or "grid" not in str(enc.get("otype", "")).lower():
        raise FormatError(f"{path}: the position encoding {str(enc)[:120]!r} is not a hash grid (only HashGrid "
                          f"NeRFs load as a HashGridField)")
    enc = dict(enc)
    if not enc.get("base_resolution"):
        enc["base_resolution"] = 1 << (int(enc.get("log2_hashmap_size", 15)) // 3)
    n_levels = int(enc.get("n_levels", 16))
    if enc.get("per_level_scale", 0.0) <= 0.0 and n_levels > 1:
        f32 = np.float32
        enc["per_level_scale"] = float(np.exp(np.log(f32(2048.0) * f32(aabb_scale) / f32(enc["base_resolution"]))
                                              / f32(n_levels - 1)))
    return enc


def _check_dir_encoding(path: Path, cfg) -> None:
    stack = [cfg]
    while stack:
        c = stack.pop()
        if not isinstance(c, dict) or str(c.get("otype", "")).lower() not in PARAM_FREE:
            raise FormatError(f"{path}: direction encoding {str(c)[:120]!r} is not one without parameters "
                              f"({', '.join(PARAM_FREE)})")
        stack.extend(c.get("nested", []))


def load_ingp(path: str | Path, outputs: str = "all") -> nn.Module:
    """An instant-ngp NeRF snapshot -> ``HashGridField`` of its density model (see the module
    docstring): ``outputs="all"`` keeps the density MLP's outputs (16), ``"density"`` output 0 only."""
    path = Path(path)
    if outputs not in ("all", "density"):
        raise ValueError(f"outputs must be 'all' or 'density', got {outputs!r}")
    cfg = _read(path)
    snap = cfg["snapshot"]
    mode = str(snap.get("mode", "nerf" if "nerf" in snap else "?")).lower()
    if mode != "nerf":
        raise FormatError(f"{path}: an instant-ngp {mode!r} snapshot; only NeRF snapshots are supported")
    params = _params(path, snap)
    try:
        return _density_field(path, cfg, params, outputs)
    except (TypeError, ValueError, KeyError) as exc:       # a config value of the wrong type or shape
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{path}: malformed instant-ngp config: {type(exc).__name__}: {exc}") from None


def _density_field(path: Path, cfg: dict, params: torch.Tensor, outputs: str) -> nn.Module:
    snap = cfg["snapshot"]
    nerf = snap.get("nerf") if isinstance(snap.get("nerf"), dict) else {}
    enc = _complete_encoding(path, cfg.get("encoding"), float(nerf.get("aabb_scale", 1)))
    net = dict(cfg.get("network") or {})
    n_out = net.pop("n_output_dims", 16)
    net.pop("n_input_dims", None)
    rgb = cfg.get("rgb_network")
    if not isinstance(rgb, dict):
        raise FormatError(f"{path}: no 'rgb_network' config: not an instant-ngp NeRF snapshot")
    _check_dir_encoding(path, cfg.get("dir_encoding"))
    try:
        grid = HashGridSpec.from_tcnn(enc)
    except SpecError as exc:
        raise FormatError(f"{path}: {exc}") from None
    n_in = grid.n_levels * grid.features_per_level
    fused = str(net.get("otype", "FullyFusedMLP")).lower() in ("fullyfusedmlp", "megakernelmlp")
    if not fused and n_in % 16:
        raise FormatError(f"{path}: a {net.get('otype')} density MLP reads {n_in} grid features padded to a multiple "
                          f"of 8, a layout not supported (only 16-aligned)")
    W, H = int(net.get("n_neurons", 128)), int(net.get("n_hidden_layers", 5))
    n_net = W * pad16(n_in) + (H - 1) * W * W + pad16(int(n_out)) * W
    n_grid = hash_levels(grid).n_entries * grid.features_per_level
    Wr, Hr = int(rgb.get("n_neurons", 128)), int(rgb.get("n_hidden_layers", 5))
    n_rgb = params.numel() - n_net - n_grid                          # the direction encoding has no parameters
    rgb_in = (n_rgb - (Hr - 1) * Wr * Wr - 16 * Wr) / Wr
    if n_rgb <= 0 or rgb_in != int(rgb_in) or rgb_in < pad16(int(n_out)):
        raise FormatError(f"{path}: {params.numel()} parameters do not split into a density MLP ({n_net}), a hash grid "
                          f"({n_grid}) and a {Hr} x {Wr} colour MLP (the remaining {n_rgb})")
    flat = torch.cat([params[:n_net], params[n_net + n_rgb:n_net + n_rgb + n_grid]])
    tcnn_cfg = {"encoding": enc, "network": net, "name": "ingp-nerf"}
    try:
        field = HashGridField.from_tcnn(flat, tcnn_cfg, int(n_out))
    except SpecError as exc:
        raise FormatError(f"{path}: {exc}") from None
    if not all(bool(torch.isfinite(p).all()) for p in field.parameters()):
        raise FormatError(f"{path}: NaN or inf among the snapshot's parameters")
    if outputs == "density":
        from gmn_inr.fields import build_field

        small = build_field(field.spec.replace(out_dim=1))
        state = field.state_dict()
        last = f"mlp.layers.{len(field.mlp.layers) - 1}.weight"
        state[last] = state[last][:1]
        small.load_state_dict(state)
        field = small
    return field.eval()


__all__ = ["load_ingp"]
