"""Reading any INR file a researcher holds: the known layouts (:mod:`gmn_inr.io.formats`) and three
forms that need no layout of their own (``docs/formats.md``, "Your own files"):

* **a module's state dict** (``.pth`` / ``.pt`` / ``.safetensors``, or a checkpoint with
  ``state_dict`` / ``model_state_dict``) with ``module="path/to/file.py:factory"`` (or several: each
  file goes to the module whose keys it holds): loaded strictly, floats as float32, read through its
  traced forward;
* **tiny-cuda-nn** ``params`` with their JSON config (safetensors metadata key ``config``,
  ``tcnn_config=FILE.json``, or a sidecar ``<file>.json`` / ``<stem>.json``): HashGrid, Frequency or
  Identity encodings (:func:`graphs.tcnn.tcnn_field`); the output width from the metadata key
  ``n_output_dims`` or ``outputs``;
* **a plain Linear stack** with no module given (``0.weight, 0.bias, 2.weight, ...`` or
  ``<prefix>.<i>.*``), ``activation`` between layers (relu, or sine: SIREN's ``sin(30 x)``).

Every INR is read on the zoo's [-1, 1]^3 cube: ``input_range="symmetric"`` (xyz in [-1, 1], the
default), ``"unit"`` (xyz in [0, 1], tcnn's convention and its default), or ``bbox`` (the box
``(xmin, ymin, zmin, xmax, ymax, zmax)`` the cube maps to). A module whose traced forward is a plain
MLP of xyz becomes the equal :class:`~gmn_inr.fields.MLPField`, any other module its
:class:`~gmn_inr.fields.user_module.ModuleField` (the module read on the cube, its output as one
tensor), which converts by tracing; a zoo store holds both.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from gmn_inr.fields import SpecError
from gmn_inr.fields.user_module import ModuleField, build_module, load_state_strict, unwrap_state
from gmn_inr.zoo.store import FILE_FORMAT, record_of_file
from graphs import TraceError, trace_to_graph
from graphs.tcnn import tcnn_field

from . import formats
from .common import FormatError, read_safetensors, read_torch_state
from .modules import as_mlp_field, linear_stack, mlp_field

INPUT_RANGES = ("symmetric", "unit")
ACTIVATIONS = ("relu", "sine")
#: SIREN's frequency factor for ``activation="sine"`` on a plain stack (Sitzmann et al.'s omega_0)
SIREN_W0 = 30.0


@dataclass(frozen=True)
class ReadOptions:
    """How to read the files no layout determines (the CLI's reader flags, :func:`add_reader_arguments`)."""

    fmt: Optional[str] = None
    module: Optional[str | Sequence[str]] = None
    tcnn_config: Optional[str] = None
    outputs: Optional[int] = None
    activation: str = "relu"
    input_range: Optional[str] = None
    bbox: Optional[Sequence[float]] = None

    @property
    def modules(self) -> tuple[str, ...]:
        return () if self.module is None else (self.module,) if isinstance(self.module, str) else tuple(self.module)

    def validate(self) -> "ReadOptions":
        if self.fmt is not None and self.fmt not in formats.FORMATS:
            raise FormatError(f"unknown INR format {self.fmt!r}; known: {', '.join(formats.FORMATS)}")
        if self.input_range is not None and self.input_range not in INPUT_RANGES:
            raise FormatError(f"--input-range must be one of {', '.join(INPUT_RANGES)}, got {self.input_range!r}")
        if self.activation not in ACTIVATIONS:
            raise FormatError(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.outputs is not None and (isinstance(self.outputs, bool) or not isinstance(self.outputs, int)
                                         or not 1 <= self.outputs <= 4096):
            raise FormatError(f"--outputs must be an integer in [1, 4096], got {self.outputs!r}")
        if self.bbox is not None:
            b = [float(v) for v in self.bbox]
            if len(b) != 6 or not all(lo < hi for lo, hi in zip(b[:3], b[3:])) or not all(map(_finite, b)):
                raise FormatError(f"--bbox takes xmin ymin zmin xmax ymax zmax with each min < max, got {self.bbox}")
            if self.input_range is not None:
                raise FormatError("give --bbox or --input-range, not both (the box says where the cube maps to)")
        return self

    def cube_map(self, default: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)``: the INR reads ``scale * xyz + shift`` for xyz on the cube."""
        if self.bbox is not None:
            lo, hi = torch.tensor(self.bbox[:3], dtype=torch.float32), torch.tensor(self.bbox[3:], dtype=torch.float32)
            return (hi - lo) / 2, (hi + lo) / 2
        if (self.input_range or default) == "unit":
            return torch.full((3,), 0.5), torch.full((3,), 0.5)
        return torch.ones(3), torch.zeros(3)


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def add_reader_arguments(p: argparse.ArgumentParser) -> None:
    """The flags every command that reads INR files takes (zoo import, embed, search query)."""
    g = p.add_argument_group("reading INR files (docs/formats.md)")
    g.add_argument("--format", default=None, help=f"force a known layout ({' | '.join(formats.FORMATS)}); default: "
                   "from the content")
    g.add_argument("--module", default=None, action="append", metavar="FILE.py:FACTORY",
                   help="state dicts of your own module: a function in FILE.py that returns it (repeat for several "
                   "modules: each file goes to the one whose keys it holds)")
    g.add_argument("--tcnn-config", default=None, metavar="FILE.json",
                   help="tiny-cuda-nn config for files of flat 'params' (else the metadata key 'config' or <file>.json)")
    g.add_argument("--outputs", type=int, default=None, help="output width of a tcnn network (else from the file)")
    g.add_argument("--activation", default="relu", choices=ACTIVATIONS,
                   help="activation of a plain Linear stack read with no module (sine: SIREN's sin(30 x))")
    g.add_argument("--input-range", default=None, choices=INPUT_RANGES,
                   help="the INRs' xyz range: symmetric [-1, 1] (default) or unit [0, 1] (default for tcnn)")
    g.add_argument("--bbox", type=float, nargs=6, default=None, metavar=("XMIN", "YMIN", "ZMIN", "XMAX", "YMAX", "ZMAX"),
                   help="the box in the INRs' coordinates read as the [-1, 1]^3 cube")


def reader_from_args(args: argparse.Namespace) -> ReadOptions:
    return ReadOptions(fmt=args.format, module=args.module, tcnn_config=args.tcnn_config, outputs=args.outputs,
                       activation=args.activation, input_range=args.input_range, bbox=args.bbox).validate()


#: file suffixes a folder of INRs is searched for
SUFFIXES = (".safetensors", ".pth", ".pt", ".msgpack", ".ingp", ".h5")


def inr_paths(path: str | Path) -> list[Path]:
    """An INR file, or the INR files under a folder (sorted; hidden files and sidecar JSON skipped)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FormatError(f"{path} is neither an INR file nor a folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))
    if not files:
        raise FormatError(f"no INR files ({', '.join(SUFFIXES)}) under {path}")
    return files


def load_inr(path: str | Path, fmt: Optional[str] = None, **options) -> nn.Module:
    """The INR in ``path`` as a module of xyz on the [-1, 1]^3 cube; ``options`` as in
    :class:`ReadOptions` (``module``, ``tcnn_config``, ``outputs``, ``activation``, ``input_range``, ``bbox``)."""
    return read_inr(path, ReadOptions(fmt=fmt, **options).validate())


def read_inr(path: str | Path, opts: ReadOptions = ReadOptions()) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path} does not exist or is not a file")
    if opts.fmt is not None:
        return formats.load_inr(path, opts.fmt)
    with open(path, "rb") as f:
        head = f.read(16)
    meta: dict = {}
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{" and path.suffix not in (".pth", ".pt")):
        state, meta = read_safetensors(path)
        if "module" in meta and meta.get("format") == FILE_FORMAT:       # a store's user module
            return record_of_file(path).field()
        if "arch_spec" in meta:
            return formats.load_gmn_field(path)
    elif head[:2] == b"PK" or path.suffix in (".pth", ".pt"):
        state = read_torch_state(path)
    else:
        return formats.load_inr(path)                    # HDF5, msgpack: layouts of their own
    if opts.modules:
        inner = unwrap_state(state)
        shapes = {k: tuple(v.shape) for k, v in inner.items() if isinstance(v, torch.Tensor)}
        candidates = [build_module(spec) for spec in opts.modules]
        fits = [[{k: tuple(v.shape) for k, v in m.state_dict().items()} == shapes for m in candidates],
                [set(inner) == set(m.state_dict()) for m in candidates]]
        for fit in fits:                   # its keys and shapes, else its keys (the shape that differs is named)
            for spec, module, ok in zip(opts.modules, candidates, fit):
                if ok:
                    return _module_form(path, module, state, opts, spec)
        try:                                             # a file of another form in a mixed folder
            return _detect(path, state, meta, opts)
        except FormatError as exc:
            if len(candidates) == 1:                     # the first key that does not fit, then the other reading
                try:
                    load_state_strict(candidates[0], unwrap_state(state), str(path))
                except FormatError as fit:
                    raise FormatError(f"{fit}; read on its own: {exc}") from None
            raise FormatError(f"{path}: its keys fit none of the modules given ({', '.join(opts.modules)}), and "
                              f"read on its own: {exc}") from None
    return _detect(path, state, meta, opts)


def _detect(path: Path, state: dict, meta: dict, opts: ReadOptions) -> nn.Module:
    """A state dict read by its keys: a known layout, tcnn params with a config, or a Linear stack."""
    if formats.torch_format(state) is not None:
        return formats.LOADERS[formats.torch_format(state)](path)
    config = _tcnn_config(path, meta, opts)
    if config is not None or set(state) == {"params"}:
        return _tcnn_form(path, state, meta, config, opts)
    layers = linear_stack(unwrap_state(state), str(path))
    scale, shift = opts.cube_map("symmetric")
    H, W = len(layers) - 1, layers[0][0].shape[0]
    return mlp_field(layers, opts.activation, SIREN_W0, scale, shift, f"{opts.activation}-mlp{H}x{W}")


def _module_form(path: Path, module: nn.Module, state: dict, opts: ReadOptions, factory: str) -> nn.Module:
    load_state_strict(module, unwrap_state(state), str(path))
    scale, shift = opts.cube_map("symmetric")
    try:
        field = ModuleField(module, scale, shift, factory=factory).eval()
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
    mlp = as_mlp_field(field, type(module).__name__.lower())
    if mlp is not None:
        return mlp
    try:                                   # refused now, by name, rather than when it is embedded
        trace_to_graph(field)
    except TraceError as exc:
        raise FormatError(f"{path}: {type(module).__name__} cannot be traced into a parameter graph: "
                          f"{' '.join(str(exc).split())}") from None
    return field


def _tcnn_config(path: Path, meta: dict, opts: ReadOptions) -> Optional[dict]:
    """The tcnn config from ``--tcnn-config``, the metadata key ``config`` or a sidecar JSON file."""
    sources = ([Path(opts.tcnn_config)] if opts.tcnn_config else []) + (["meta"] if "config" in meta else []) + \
        [p for p in (Path(str(path) + ".json"), path.with_suffix(".json")) if p.is_file()]
    if not sources:
        return None
    src = sources[0]
    try:
        text = meta["config"] if src == "meta" else src.read_text()
        config = json.loads(text)
    except (OSError, ValueError) as exc:
        raise FormatError(f"tcnn config for {path} ({'metadata key config' if src == 'meta' else src}) is not "
                          f"readable JSON: {exc}") from None
    if not isinstance(config, dict):
        raise FormatError(f"tcnn config for {path} is a JSON {type(config).__name__}, not an object")
    return config


def _tcnn_form(path: Path, state: dict, meta: dict, config: Optional[dict], opts: ReadOptions) -> nn.Module:
    if config is None:
        raise FormatError(f"{path} holds tiny-cuda-nn 'params' but no config: pass --tcnn-config FILE.json, or put "
                          "the config in the safetensors metadata key 'config' or a sidecar <file>.json")
    params = state.get("params", next(iter(state.values())) if len(state) == 1 else None)
    if not isinstance(params, torch.Tensor):
        raise FormatError(f"{path}: a tcnn file needs one tensor 'params', has keys {sorted(state)[:6]}")
    config = dict(config)
    n_out = opts.outputs or meta.get("n_output_dims") or config.pop("n_output_dims", None)
    config.pop("n_output_dims", None)
    if n_out is None:
        raise FormatError(f"{path}: the tcnn network's output width is not in the file: pass --outputs N")
    if opts.bbox is not None:
        raise FormatError("--bbox is not read for tcnn networks: they read their box normalised to [0, 1] "
                          "(--input-range unit, the default) or xyz itself (--input-range symmetric)")
    try:
        return tcnn_field(params, config, int(n_out), opts.input_range or "unit")
    except (SpecError, ValueError) as exc:
        raise FormatError(f"{path}: {exc}") from None


__all__ = ["INPUT_RANGES", "SUFFIXES", "ReadOptions", "add_reader_arguments", "inr_paths", "load_inr", "read_inr",
           "reader_from_args"]
