"""A researcher's own INR module as a field: the factory in their Python file (``file.py:factory``),
its state dict loaded strictly, read on the [-1, 1]^3 cube by :class:`ModuleField`.

Lives with the fields (not with the file readers of :mod:`gmn_inr.io`) because a zoo store
rebuilds such a field from the module file it keeps, and the zoo sits below the readers.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils import _pytree as pytree

#: the family name of a stored field that is a user's module read through its traced forward
TRACED_FAMILY = "traced"


class FormatError(ValueError):
    """A file that is not in the format asked for (or in none that gmn_inr reads)."""


_FACTORIES: dict[str, tuple[float, Callable[[], nn.Module]]] = {}


def load_factory(spec: str, flag: str = "--module") -> Callable[[], nn.Module]:
    """``path/to/file.py:factory`` -> the factory. The file is imported once per process and again
    when it changed on disk since (its modification time), so a file rewritten in place is never
    read from a stale import."""
    file, _, name = str(spec).rpartition(":")
    if not file or not name.isidentifier():
        raise FormatError(f"{flag} must be path/to/file.py:factory (a function returning the module), got {spec!r}")
    path = Path(file).resolve()
    if not path.is_file():
        raise FormatError(f"{flag} file {file} does not exist")
    key = f"{path}:{name}"
    mtime = path.stat().st_mtime_ns
    if key not in _FACTORIES or _FACTORIES[key][0] != mtime:
        modname = "gmn_inr_user_" + hashlib.sha1(f"{path}:{mtime}".encode()).hexdigest()[:12]
        if modname not in sys.modules:
            loader = importlib.util.spec_from_file_location(modname, path)
            mod = importlib.util.module_from_spec(loader)
            sys.modules[modname] = mod           # so classes defined there pickle-free resolve by name
            try:
                loader.loader.exec_module(mod)
            except Exception as exc:
                del sys.modules[modname]
                raise FormatError(f"{flag} {file}: importing it failed: {type(exc).__name__}: {exc}") from None
        factory = getattr(sys.modules[modname], name, None)
        if not callable(factory):
            raise FormatError(f"{flag} {file} has no function {name!r}")
        _FACTORIES[key] = (mtime, factory)
    return _FACTORIES[key][1]


def build_module(spec: str, flag: str = "--module") -> nn.Module:
    """A fresh module from the factory ``spec`` names."""
    factory = load_factory(spec, flag)
    try:
        module = factory()
    except Exception as exc:
        raise FormatError(f"{flag} {spec}: calling the factory failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise FormatError(f"{flag} {spec} returned a {type(module).__name__}, not an nn.Module")
    return module


def unwrap_state(state: dict) -> dict:
    """The state dict inside a checkpoint (``state_dict`` / ``model_state_dict``), ``module.``
    prefixes (DataParallel) removed when every key has one."""
    for key in ("state_dict", "model_state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_state_strict(module: nn.Module, state: dict, what: str) -> nn.Module:
    """Load ``state`` into ``module`` strictly, floats as float32; the first key that does not fit
    is named with both shapes."""
    want = module.state_dict()
    cls = type(module).__name__
    for k, v in want.items():
        if k not in state:
            raise FormatError(f"{what} does not fit {cls}: key {k!r} {tuple(v.shape)} is missing from the file")
        got = state[k]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(v.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise FormatError(f"{what} does not fit {cls}: key {k!r} is {shape} in the file, {tuple(v.shape)} "
                              "in the module")
    extra = [k for k in state if k not in want]
    if extra:
        raise FormatError(f"{what} does not fit {cls}: key {extra[0]!r} {tuple(state[extra[0]].shape)} is in the file "
                          "but not in the module")
    module.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}, strict=True)
    return module.float().eval()


def _tensor_leaves(out) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


class ModuleField(nn.Module):
    """``module(scale * xyz + shift)`` for xyz on the [-1, 1]^3 cube (the map skipped when it is the
    identity; points ``[..., 3]`` go to the module as ``[N, 3]``, or as siren's ``{"coords": x}``
    when it takes a dict), its output tensors -- every one the module returns except a returned copy
    of its input (SIREN's ``(output, coords)``) -- as one ``[..., out_dim]`` tensor (several joined
    on the last axis). How it is called and which tensors are the output is found on a few points
    unless given (``outputs``: None for a module returning one tensor). ``factory``: the
    ``file.py:factory`` that built the module, when it was read with ``--module`` (what a zoo
    import keeps with it)."""

    def __init__(self, module: nn.Module, scale: Optional[torch.Tensor] = None,
                 shift: Optional[torch.Tensor] = None, outputs: "Optional[Sequence[int]] | str" = "find",
                 coords_dict: bool = False, factory: Optional[str] = None):
        super().__init__()
        self.module = module
        self.factory = factory
        scale = torch.ones(3) if scale is None else torch.as_tensor(scale, dtype=torch.float32)
        shift = torch.zeros(3) if shift is None else torch.as_tensor(shift, dtype=torch.float32)
        self.identity = bool(torch.equal(scale, torch.ones(3)) and torch.equal(shift, torch.zeros(3)))
        self.register_buffer("scale", scale.float(), persistent=False)
        self.register_buffer("shift", shift.float(), persistent=False)
        self.coords_dict = bool(coords_dict)
        if isinstance(outputs, str):
            self.outputs, self.coords_dict = self._find_outputs()
        else:
            self.outputs = None if outputs is None else tuple(int(i) for i in outputs)

    def _find_outputs(self) -> tuple[Optional[tuple[int, ...]], bool]:
        """``(outputs, coords_dict)``: outputs None when the module returns one tensor, else the
        indices of its output tensors; coords_dict when it takes siren's ``{"coords": x}``."""
        x = torch.rand(64, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
        inp = x if self.identity else x * self.scale + self.shift
        errors = []
        for coords_dict in (False, True):
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")        # a dict module indexed by a string on a tensor
                    out = self.module({"coords": inp} if coords_dict else inp)
                break
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300])
        else:
            raise FormatError(f"{type(self.module).__name__} does not run on xyz points [N, 3] ({errors[0]}) nor on "
                              f"{{'coords': xyz}} ({errors[1]})")
        if isinstance(out, torch.Tensor):
            return None, coords_dict
        leaves = _tensor_leaves(out)
        keep = tuple(i for i, t in enumerate(leaves) if not (t.shape == inp.shape and torch.equal(t, inp)))
        if not keep or any(leaves[i].dim() != 2 or leaves[i].shape[0] != len(inp) for i in keep):
            raise FormatError(f"{type(self.module).__name__} returns {[tuple(t.shape) for t in leaves]} on "
                              f"{tuple(inp.shape)} points: no [N, k] output tensor per point")
        return keep, coords_dict

    @property
    def out_dim(self) -> int:
        with torch.no_grad():
            return int(self(torch.zeros(1, 3, device=self.scale.device)).shape[-1])

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        if xyz.dim() != 2:       # modules are written for [N, 3]; renders and teachers pass [..., 3]
            return self(xyz.reshape(-1, xyz.shape[-1])).reshape(*xyz.shape[:-1], -1)
        x = xyz if self.identity else xyz * self.scale + self.shift
        out = self.module({"coords": x} if self.coords_dict else x)
        if self.outputs is None:
            return out
        leaves = _tensor_leaves(out)
        ys = [leaves[i] for i in self.outputs]
        return ys[0] if len(ys) == 1 else torch.cat(ys, -1)


def file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def copy_problem(path) -> Optional[str]:
    """What is wrong with a store's copy of a module file (named ``<sha256>.py`` by its content),
    or None when it is there with that content."""
    path = Path(path)
    if not path.is_file():
        return "is missing"
    if file_sha256(path) != path.stem:
        return f"was changed: its sha256 is not the one it was stored with ({path.stem[:12]}...)"
    return None


@dataclass(frozen=True)
class ModuleSpec:
    """What rebuilds a stored user module: its file (relative to the store, named by its sha256),
    the factory in it, the cube map and which returned tensors are the output -- the counterpart of
    an :class:`~gmn_inr.fields.ArchSpec` for a field of the ``traced`` family."""

    name: str
    file: str
    factory: str
    class_name: str
    out_dim: int
    scale: tuple = (1.0, 1.0, 1.0)
    shift: tuple = (0.0, 0.0, 0.0)
    outputs: Optional[tuple] = None
    coords_dict: bool = False

    family = TRACED_FAMILY

    @property
    def sha256(self) -> str:
        return Path(self.file).stem

    def to_json(self) -> str:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return json.dumps({**d, "scale": list(d["scale"]), "shift": list(d["shift"]),
                           "outputs": None if d["outputs"] is None else list(d["outputs"])}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModuleSpec":
        try:
            d = json.loads(text)
            spec = cls(name=str(d["name"]), file=str(d["file"]), factory=str(d["factory"]),
                       class_name=str(d["class_name"]), out_dim=int(d["out_dim"]),
                       scale=tuple(float(v) for v in d["scale"]), shift=tuple(float(v) for v in d["shift"]),
                       outputs=None if d["outputs"] is None else tuple(int(i) for i in d["outputs"]),
                       coords_dict=bool(d.get("coords_dict", False)))
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"not a stored module's description ({type(exc).__name__}: {exc}): {text[:200]!r}") \
                from None
        p = Path(spec.file)
        if p.is_absolute() or ".." in p.parts or p.suffix != ".py" or not spec.factory.isidentifier():
            raise FormatError(f"a stored module's file must be a .py path inside the store and its factory a name, "
                              f"got {spec.file!r}:{spec.factory!r}")
        return spec

    @classmethod
    def of(cls, field: ModuleField, name: str, file: str, factory: str) -> "ModuleSpec":
        return cls(name=name, file=file, factory=factory, class_name=type(field.module).__name__,
                   out_dim=field.out_dim, scale=tuple(field.scale.tolist()), shift=tuple(field.shift.tolist()),
                   outputs=field.outputs, coords_dict=field.coords_dict)

    def build(self, root, state: dict, what: str) -> ModuleField:
        """The field from the store ``root``'s copy of the module file (its content checked against
        the sha256 it is named by) and ``state``; :class:`FormatError` naming the file otherwise."""
        path = Path(root) / self.file
        problem = copy_problem(path)
        if problem:
            raise FormatError(f"module file {path} of {what} {problem}")
        module = build_module(f"{path}:{self.factory}", flag=f"module file of {what}")
        load_state_strict(module, state, what)
        # the factory names the store's copy, so an entry read through its store imports into another one
        return ModuleField(module, torch.tensor(self.scale), torch.tensor(self.shift), self.outputs,
                           self.coords_dict, factory=f"{path}:{self.factory}").eval()
