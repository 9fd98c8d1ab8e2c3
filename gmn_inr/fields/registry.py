"""The family registry: one decorated field class drives everything else.

``@register_family("voxel", grid=VoxelSpec, archs={...}, converter=voxel_to_graph)`` over a
:class:`~gmn_inr.fields.base.Field` subclass (as timm's ``register_model``) gives the package:

* the family's grid spec class, so ``ArchSpec(family="voxel", grid=VoxelSpec(...))`` validates,
  round-trips through JSON and scales for the ``cpu`` / ``tiny`` presets (``grid.scaled``);
* its field class, so :func:`~gmn_inr.fields.build_field` / ``load_field`` build and reload it;
* its converter, so :func:`graphs.to_graph` converts it (``graphs`` reads this registry);
* its named architectures (training ones and unseen variants), so :func:`arch_spec`, the zoo
  (which fits the field's ``grid_parameters()`` at the grid learning rate), ``gmn-inr train
  --archs`` and the benchmarks' ``--archs`` know them.

A family registered in a file of one's own travels to other processes (zoo build workers, the
``gmn-inr`` CLI) through :func:`load_plugin`: the registry remembers each family's source file.
This module imports nothing from the rest of the package, so every layer may read it.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

#: entry-point group whose modules register families when a lookup misses (installed plug-ins)
ENTRY_POINT_GROUP = "gmn_inr.families"


@dataclass(frozen=True)
class Family:
    """What the package knows about one architecture family.

    ``archs``: ``{name: {"mlp": MLPSpec, "encoding": FrequencySpec | None, "grid": spec}}`` in
    order; ``training``: the names among them that encoders train on (the rest are unseen
    variants); ``converter``: ``field -> ParameterGraph`` (None when ``graphs`` registers one
    itself); ``builtin``: one of the four families shipped with gmn_inr; ``source``: the file or
    module that registered it (re-imported by :func:`load_plugin` in other processes).
    """

    name: str
    field: type
    grid: Optional[type]
    archs: Mapping[str, Mapping[str, Any]]
    training: tuple
    converter: Optional[Callable] = None
    builtin: bool = False
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


_FAMILIES: dict[str, Family] = {}
_ARCH_FAMILY: dict[str, str] = {}
_loaded_sources: set[str] = set()
_entry_points_loaded = False


def _source_of(cls: type) -> str:
    mod = sys.modules.get(cls.__module__)
    path = getattr(mod, "__file__", None)
    if cls.__module__.startswith("gmn_inr.") or path is None:
        return cls.__module__
    return str(Path(path).resolve())


def register_family(name: str, *, grid: Optional[type] = None, archs: Mapping[str, Mapping[str, Any]],
                    training: Optional[Sequence[str]] = None, converter: Optional[Callable] = None,
                    **extra: Any) -> Callable[[type], type]:
    """Class decorator: register ``name`` as an architecture family whose fields are the class.

    ``grid``: the frozen dataclass of the family's grid (None: no grid, like plain MLPs); it must
    have ``validate()`` and ``feature_dim`` (channels the grid hands the MLP), and may have
    ``scaled(preset) -> spec`` (``cpu`` / ``tiny`` analogue; default: unchanged). ``archs``: named
    architectures, each ``dict(mlp=MLPSpec(...), encoding=..., grid=...)``; ``training``: which of
    them are training architectures (default: the first). ``converter``: ``field ->
    ParameterGraph``; describe the nodes with the shared roles of ``graphs.layout`` so that an
    encoder trained without this family has trained weights for every part of its graph.

    Registering a name again replaces the family (re-running the file that defines it); a
    different file taking a name, or an architecture name of another family, warns / raises."""
    if not archs:
        raise ValueError(f"family {name!r} needs at least one named architecture")
    training = tuple(training) if training is not None else (next(iter(archs)),)
    unknown = [t for t in training if t not in archs]
    if unknown:
        raise ValueError(f"training architectures {unknown} of family {name!r} are not among its archs")

    def decorate(cls: type) -> type:
        source = _source_of(cls)
        old = _FAMILIES.get(name)
        if old is not None and old.source != source:
            warnings.warn(f"family {name!r} from {old.source} replaced by {source}", stacklevel=2)
        for a in archs:
            owner = _ARCH_FAMILY.get(a)
            if owner is not None and owner != name:
                raise ValueError(f"architecture name {a!r} already belongs to family {owner!r}")
        if old is not None:
            for a in old.archs:
                _ARCH_FAMILY.pop(a, None)
        cls.family = name
        _FAMILIES[name] = Family(name=name, field=cls, grid=grid, archs=dict(archs), training=training,
                                 converter=converter, builtin=cls.__module__.startswith("gmn_inr.fields."),
                                 source=source, extra=dict(extra))
        for a in archs:
            _ARCH_FAMILY[a] = name
        _loaded_sources.add(source)
        return cls

    return decorate


def load_entry_point_group(group: str, what: str) -> None:
    """Import every module an installed package lists in the entry-point ``group`` (their
    decorators register them); a plug-in that fails to import is named in a warning."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=group):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not break the others
            warnings.warn(f"{what} plug-in {ep.name!r} ({ep.value}) failed to load: {exc}")


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    load_entry_point_group(ENTRY_POINT_GROUP, "family")


def get_family(name: str) -> Family:
    """The registered family ``name``; ``KeyError`` with the known names if there is none."""
    if name not in _FAMILIES:
        _load_entry_points()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown architecture family {name!r}; registered: {', '.join(_FAMILIES)}. A family of "
                       f"your own is registered by importing its file (gmn-inr --plugin FILE, or the "
                       f"'{ENTRY_POINT_GROUP}' entry-point group)") from None


def family_of_arch(arch: str) -> Family:
    """The family that registered the architecture name ``arch``."""
    if arch not in _ARCH_FAMILY:
        _load_entry_points()
    try:
        return _FAMILIES[_ARCH_FAMILY[arch]]
    except KeyError:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(_ARCH_FAMILY)}") from None


def family_of_field_type(cls: type) -> Optional[Family]:
    """The family whose field class is ``cls`` or its nearest registered base class."""
    by_cls = {f.field: f for f in _FAMILIES.values()}
    for c in cls.__mro__:
        if c in by_cls:
            return by_cls[c]
    return None


def families(builtin: Optional[bool] = None) -> tuple[str, ...]:
    """Registered family names in registration order (``builtin``: only / never the built-ins)."""
    return tuple(n for n, f in _FAMILIES.items() if builtin is None or f.builtin == builtin)


def architectures(builtin: Optional[bool] = None, training: Optional[bool] = None) -> tuple[str, ...]:
    """Architecture names: training ones of every family first, then the unseen variants, each
    in registration order. ``training`` True / False keeps only one of the two groups."""
    fams = [_FAMILIES[n] for n in families(builtin)]
    train = [a for f in fams for a in f.training]
    unseen = [a for f in fams for a in f.archs if a not in f.training]
    return tuple((train if training in (None, True) else []) + (unseen if training in (None, False) else []))


def plugin_sources() -> list[str]:
    """Files / modules of the registered families that are not built in (for other processes)."""
    return [f.source for f in _FAMILIES.values() if not f.builtin]


def load_plugin(source: str) -> None:
    """Import a module that registers families: a ``.py`` file path or a module name. A source
    already loaded in this process is not imported again."""
    path = Path(source)
    key = str(path.resolve()) if source.endswith(".py") else source
    if key in _loaded_sources:
        return
    if source.endswith(".py"):
        if not path.is_file():
            raise FileNotFoundError(f"plug-in file {source} does not exist")
        name = f"gmn_inr_plugin_{path.stem}_{abs(hash(key)) % 10 ** 8}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module              # dataclasses and pickling look classes up here
        spec.loader.exec_module(module)
    else:
        importlib.import_module(source)
    _loaded_sources.add(key)


def load_plugins(sources: Sequence[str]) -> None:
    for s in sources or ():
        load_plugin(s)


def unregister_family(name: str) -> None:
    """Forget a family (tests that register a temporary one clean up with this)."""
    fam = _FAMILIES.pop(name, None)
    if fam is not None:
        for a in fam.archs:
            _ARCH_FAMILY.pop(a, None)
        _loaded_sources.discard(fam.source)
