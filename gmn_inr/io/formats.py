"""Loaders for INR files researchers hold; each returns a field and refuses a foreign file by name.

============  ====================================================  ===========================================
format        file                                                  returns
============  ====================================================  ===========================================
``gmn_inr``   safetensors with ``arch_spec`` metadata               the field (any family)
              (:func:`save_field`, or a zoo INR file)
``nf2vec``    ``{'mlp_base.params'}``: tcnn Frequency(24) + ReLU    ``MLPField`` (tcnn order, ``input_range="unit"``)
              3 x 64 NeRF (nf2vec's ``nerf_weights.pth``)
``gmnerf``    ``{'triplane' [3,R,R,C], 'mlp_base.params'}``: the    ``TriplaneField`` (``align_corners``,
              main paper's tri-plane NeRF (``gmnerf.py``)           encoding first, tcnn Sine MLP)
``cardace``   HDF5 ``triplane [3,C,R,R]`` + SIREN ``params``        ``TriplaneField`` (gmn_inr's TRI conventions)
              (Cardace et al.; ``cardace.py``, needs h5py)
``ingp``      instant-ngp NeRF snapshot ``.msgpack`` / ``.ingp``    ``HashGridField`` of the density model
              (``ingp.py``, needs msgpack)
``deepsdf``   ``{'epoch', 'model_state_dict'}`` (``deepsdf.py``)    ``DeepSDFDecoder`` (``DeepSDFShape`` with a code)
``nglod``     NGLOD ``OctreeSDF`` state dict (``nglod.py``)         ``OctreeField`` (all voxels occupied)
============  ====================================================  ===========================================

The layouts are written down in ``docs/formats.md``. PyTorch files are read with
``torch.load(weights_only=True)``: nothing is unpickled beyond tensors and plain containers; msgpack
and HDF5 hold no code. The optional readers install with ``pip install 'gmn_inr[formats]'``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from gmn_inr.fields import ArchSpec, FrequencySpec, MLPSpec, SpecError, load_field

from .common import FormatError, read_safetensors, read_torch_state, tcnn_mlp_weights
from .deepsdf import is_deepsdf_checkpoint
from .nglod import is_nglod_state

FIELD_FORMAT = "gmn_inr.field/1"
FORMATS = ("gmn_inr", "nf2vec", "gmnerf", "cardace", "ingp", "deepsdf", "nglod")


def save_field(field: nn.Module, path: str | Path, **meta: str) -> Path:
    """Write a field's ``state_dict`` and ``arch_spec`` (plus string ``meta``) to a safetensors file
    that :func:`load_inr` reads back (atomically)."""
    from gmn_inr.zoo.store import write_inr_file

    spec = getattr(field, "spec", None)
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"save_field needs a gmn_inr field with an ArchSpec, got {type(field).__name__}")
    path = Path(path)
    write_inr_file(path, field.state_dict(), {"format": FIELD_FORMAT, "arch_spec": spec.to_json(), **meta})
    return path


def load_gmn_field(path: str | Path) -> nn.Module:
    """A field saved by :func:`save_field` or stored in a zoo (``arch_spec`` in the metadata)."""
    path = Path(path)
    tensors, meta = read_safetensors(path)
    if "arch_spec" not in meta:
        raise FormatError(f"{path} is a safetensors file without 'arch_spec' metadata: not a gmn_inr field")
    try:
        return load_field(ArchSpec.from_json(meta["arch_spec"]), tensors).eval()
    except (SpecError, ValueError) as exc:
        raise FormatError(f"{path}: {exc}") from None


def nf2vec_spec(n_freqs: int = 24, hidden_layers: int = 3, hidden_dim: int = 64, out_dim: int = 4) -> ArchSpec:
    """The ArchSpec of an nf2vec NeRF: tcnn Frequency encoding of the aabb-normalised [0, 1] input,
    FullyFusedMLP (ReLU, no biases), 4 raw outputs (r, g, b, density before activation)."""
    return ArchSpec(family="mlp", out_dim=out_dim, name="nf2vec",
                    mlp=MLPSpec(hidden_layers=hidden_layers, hidden_dim=hidden_dim, activation="relu", bias=False),
                    encoding=FrequencySpec(n_freqs=n_freqs, include_input=False, style="tcnn", input_range="unit"))


def load_nf2vec(path: str | Path, n_freqs: int = 24, hidden_layers: int = 3, hidden_dim: int = 64) -> nn.Module:
    """An nf2vec NeRF (``nerf_weights.pth``): ``{'mlp_base.params': flat tcnn parameters}`` -> ``MLPField``.

    tcnn's FullyFusedMLP stores its layers' weights one after another, each row-major ``[out, in]``,
    the input width padded to a multiple of 16 and the last layer's output to a multiple of 16 (the
    padding holds values the network never uses); a Frequency encoding has no parameters. The field
    maps xyz in [-1, 1] (the NeRF's aabb) to the same raw outputs as the tcnn network on [0, 1]."""
    path = Path(path)
    state = read_torch_state(path)
    if "mlp_base.params" not in state:
        raise FormatError(f"{path} is not an nf2vec NeRF: no 'mlp_base.params' among its keys "
                          f"{sorted(state)[:6]}")
    spec = nf2vec_spec(n_freqs, hidden_layers, hidden_dim)
    mats = tcnn_mlp_weights(state["mlp_base.params"], spec.encoding.out_dim, hidden_layers, hidden_dim, 4,
                            f"{path}: 'mlp_base.params' (an nf2vec NeRF with {n_freqs} frequencies and "
                            f"{hidden_layers} x {hidden_dim} ReLU layers)")
    from gmn_inr.fields import build_field

    field = build_field(spec)
    with torch.no_grad():
        for lin, w in zip(field.mlp.layers, mats):
            lin.weight.copy_(w)
    return field.eval()


def _lazy(module: str, name: str):
    """A loader defined in ``gmn_inr.io.<module>`` (imported when first used: those modules import this one)."""
    def load(path, **kw):
        import importlib

        return getattr(importlib.import_module(f"gmn_inr.io.{module}"), name)(path, **kw)

    load.__name__ = name
    return load


def torch_format(state: dict) -> Optional[str]:
    """Which PyTorch-file format a loaded state dict is in, by its keys (None: none)."""
    if "triplane" in state and "mlp_base.params" in state:
        return "gmnerf"
    if "mlp_base.params" in state:
        return "nf2vec"
    if is_deepsdf_checkpoint(state):
        return "deepsdf"
    if is_nglod_state(state):
        return "nglod"
    return None


def sniff_format(path: str | Path) -> str:
    """Which of :data:`FORMATS` a file is in (by its content, not its name; instant-ngp snapshots by
    their ``.msgpack`` / ``.ingp`` suffix or a msgpack map / zlib / gzip header)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path} does not exist or is not a file")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix in (".msgpack", ".ingp"):
        return "ingp"
    if path.suffix in (".h5", ".hdf5") or head[:8] == b"\x89HDF\r\n\x1a\n":
        return "cardace"
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        return "gmn_inr"
    if head[:2] == b"PK" or path.suffix in (".pth", ".pt"):
        state = read_torch_state(path)
        fmt = torch_format(state)
        if fmt is not None:
            return fmt
        raise FormatError(f"{path}: a PyTorch state dict with keys {sorted(state)[:6]} is in no format gmn_inr reads "
                          f"({', '.join(FORMATS)}); build the module and call graphs.to_graph on it")
    if head[:1] in (b"\xde", b"\xdf") or 0x80 <= (head[:1] or b"\0")[0] <= 0x8f or head[:2] == b"\x1f\x8b" \
            or (len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0):
        return "ingp"
    raise FormatError(f"{path} is in no format gmn_inr reads ({', '.join(FORMATS)})")


LOADERS = {"gmn_inr": load_gmn_field, "nf2vec": load_nf2vec,
           "gmnerf": _lazy("gmnerf", "load_gmnerf_triplane"), "cardace": _lazy("cardace", "load_cardace_triplane"),
           "ingp": _lazy("ingp", "load_ingp"),
           "deepsdf": _lazy("deepsdf", "load_deepsdf"), "nglod": _lazy("nglod", "load_nglod")}


def load_inr(path: str | Path, fmt: Optional[str] = None) -> nn.Module:
    """The field of an INR file; ``fmt`` one of :data:`FORMATS` (default: recognised from the content)."""
    fmt = fmt or sniff_format(path)
    if fmt not in LOADERS:
        raise FormatError(f"unknown INR format {fmt!r}; known: {', '.join(FORMATS)}")
    return LOADERS[fmt](path)


__all__ = ["FIELD_FORMAT", "FORMATS", "FormatError", "load_gmn_field", "load_inr", "load_nf2vec", "nf2vec_spec",
           "save_field", "sniff_format", "tcnn_mlp_weights"]
