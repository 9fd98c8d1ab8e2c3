"""Serialisable architecture specs (``ArchSpec``) and the named architectures of Table 7.

An :class:`ArchSpec` says everything needed to rebuild a field's module except its
parameters (and, for octrees, which voxels are occupied: that lives in the
state dict). It round-trips through JSON with :meth:`ArchSpec.to_json` /
:meth:`ArchSpec.from_json`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from . import registry

ACTIVATION_NAMES = ("relu", "sine")


class SpecError(ValueError):
    """An architecture spec with impossible or unknown values."""


@dataclass(frozen=True)
class MLPSpec:
    """The MLP every family ends in. ``w0`` is SIREN's frequency factor (sine only)."""

    hidden_layers: int = 3
    hidden_dim: int = 64
    activation: str = "relu"
    bias: bool = False
    w0: float = 30.0

    def validate(self) -> None:
        if self.hidden_layers < 1:
            raise SpecError(f"MLPSpec.hidden_layers must be >= 1, got {self.hidden_layers}")
        if self.hidden_dim < 1:
            raise SpecError(f"MLPSpec.hidden_dim must be >= 1, got {self.hidden_dim}")
        if self.activation not in ACTIVATION_NAMES:
            raise SpecError(f"MLPSpec.activation must be one of {ACTIVATION_NAMES}, got {self.activation!r}")
        if not self.w0 > 0:
            raise SpecError(f"MLPSpec.w0 must be > 0, got {self.w0}")


@dataclass(frozen=True)
class FrequencySpec:
    """Frequency (positional) encoding of xyz.

    ``style="tcnn"`` (nf2vec): per axis, per frequency ``2^k * pi``, sin then cos
    (3 * n_freqs * 2 outputs, axis-major), no raw input.
    ``style="nerf"`` (Cardace): ``[x, sin(2^0 x), cos(2^0 x), ...]`` with raw xyz first
    when ``include_input``; frequency-major. ``n_freqs=0, include_input=True`` is raw xyz.
    """

    n_freqs: int = 24
    include_input: bool = False
    style: str = "tcnn"
    #: "signed": the encoding reads xyz in [-1, 1]; "unit": it reads (xyz + 1) / 2 in [0, 1], as
    #: tiny-cuda-nn fields do (nf2vec's NeRFs normalise by their aabb first)
    input_range: str = "signed"

    def validate(self) -> None:
        if self.input_range not in ("signed", "unit"):
            raise SpecError(f"FrequencySpec.input_range must be 'signed' or 'unit', got {self.input_range!r}")
        if self.n_freqs < 0:
            raise SpecError(f"FrequencySpec.n_freqs must be >= 0, got {self.n_freqs}")
        if self.style not in ("tcnn", "nerf"):
            raise SpecError(f"FrequencySpec.style must be 'tcnn' or 'nerf', got {self.style!r}")
        if self.n_freqs == 0 and not self.include_input:
            raise SpecError("FrequencySpec with n_freqs=0 and include_input=False encodes nothing")

    @property
    def out_dim(self) -> int:
        return 3 * (2 * self.n_freqs + int(self.include_input))


@dataclass(frozen=True)
class TriplaneSpec:
    """Planes ``(3, C, R, R)`` for pairs (x,y), (x,z), (y,z); bilinear, summed over planes."""

    resolution: int = 32
    channels: int = 16

    @property
    def feature_dim(self) -> int:
        return self.channels

    def scaled(self, preset: str) -> "TriplaneSpec":
        k = PRESET_FACTOR[preset]
        return TriplaneSpec(resolution=max(4, self.resolution // k), channels=max(2, self.channels // 2))

    def validate(self) -> None:
        if self.resolution < 2:
            raise SpecError(f"TriplaneSpec.resolution must be >= 2, got {self.resolution}")
        if self.channels < 1:
            raise SpecError(f"TriplaneSpec.channels must be >= 1, got {self.channels}")


@dataclass(frozen=True)
class HashGridSpec:
    """tiny-cuda-nn's multiresolution hash grid (docs/reference.md, "tiny-cuda-nn's hash grid")."""

    n_levels: int = 4
    features_per_level: int = 2
    log2_hashmap_size: int = 12
    base_resolution: int = 16
    per_level_scale: float = 2.0

    @property
    def feature_dim(self) -> int:
        return self.n_levels * self.features_per_level

    def scaled(self, preset: str) -> "HashGridSpec":
        k = PRESET_FACTOR[preset]
        return dataclasses.replace(self, log2_hashmap_size=self.log2_hashmap_size - k,
                                   base_resolution=max(4, self.base_resolution // k))

    @classmethod
    def from_tcnn(cls, config: dict) -> "HashGridSpec":
        """The spec of a tiny-cuda-nn encoding config (``{"otype": "HashGrid", "n_levels": ...}``)
        with tcnn's defaults for the keys it leaves out."""
        otype = config.get("otype", "HashGrid")
        if otype not in ("HashGrid", "Grid") or (otype == "Grid" and config.get("type", "Hash") != "Hash"):
            raise SpecError(f"only hash-grid encodings are supported, got {config!r}")
        return cls(n_levels=int(config.get("n_levels", 16)),
                   features_per_level=int(config.get("n_features_per_level", 2)),
                   log2_hashmap_size=int(config.get("log2_hashmap_size", 19)),
                   base_resolution=int(config.get("base_resolution", 16)),
                   per_level_scale=float(config.get("per_level_scale", 2.0)))

    def validate(self) -> None:
        if not 1 <= self.n_levels <= 32:
            raise SpecError(f"HashGridSpec.n_levels must be in [1, 32], got {self.n_levels}")
        if self.features_per_level not in (1, 2, 4, 8):
            raise SpecError(f"HashGridSpec.features_per_level must be 1, 2, 4 or 8, got {self.features_per_level}")
        if not 4 <= self.log2_hashmap_size <= 30:
            raise SpecError(f"HashGridSpec.log2_hashmap_size must be in [4, 30], got {self.log2_hashmap_size}")
        if self.base_resolution < 2:
            raise SpecError(f"HashGridSpec.base_resolution must be >= 2, got {self.base_resolution}")
        if not self.per_level_scale >= 1.0:
            raise SpecError(f"HashGridSpec.per_level_scale must be >= 1, got {self.per_level_scale}")


@dataclass(frozen=True)
class OctreeSpec:
    """NGLOD-style sparse octree: LODs ``base_lod .. base_lod + n_lods - 1`` with ``2^lod``
    voxels per axis; features at the corners of occupied voxels, summed over LODs."""

    base_lod: int = 2
    n_lods: int = 3
    channels: int = 8

    def validate(self) -> None:
        if not 0 <= self.base_lod <= 8:
            raise SpecError(f"OctreeSpec.base_lod must be in [0, 8], got {self.base_lod}")
        if not 1 <= self.n_lods <= 8 or self.base_lod + self.n_lods > 9:
            raise SpecError(f"OctreeSpec.n_lods must be in [1, 8] with base_lod + n_lods <= 9, got {self.n_lods}")
        if self.channels < 1:
            raise SpecError(f"OctreeSpec.channels must be >= 1, got {self.channels}")

    @property
    def lods(self) -> tuple[int, ...]:
        return tuple(range(self.base_lod, self.base_lod + self.n_lods))

    @property
    def feature_dim(self) -> int:
        return self.channels

    def scaled(self, preset: str) -> "OctreeSpec":
        # a coarser base LOD at tiny; cpu keeps the LODs (an octree is already small)
        return dataclasses.replace(self, base_lod=1) if preset == "tiny" else self


def _family(name: str) -> "registry.Family":
    try:
        return registry.get_family(name)
    except KeyError as exc:
        raise SpecError(str(exc.args[0])) from None


@dataclass(frozen=True)
class ArchSpec:
    """A whole field: family, output size, MLP, optional frequency encoding and grid.

    ``name`` is the architecture's label (``"MLP"``, ``"HASH-11T"``, ...); ``out_dim`` is 4
    for radiance fields (r, g, b, sigma) and 1 for sdf / udf / occupancy.
    """

    family: str
    out_dim: int = 4
    mlp: MLPSpec = field(default_factory=MLPSpec)
    encoding: Optional[FrequencySpec] = None
    grid: Any = None
    name: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        want = _family(self.family).grid
        if self.out_dim < 1:
            raise SpecError(f"ArchSpec.out_dim must be >= 1, got {self.out_dim}")
        self.mlp.validate()
        if self.encoding is not None:
            self.encoding.validate()
        if want is None:
            if self.grid is not None:
                raise SpecError(f"a {self.family!r} ArchSpec has no grid (its family registers none)")
            if self.encoding is None:
                raise SpecError(f"a {self.family!r} ArchSpec needs an encoding (no grid; use FrequencySpec(0, True) for raw xyz)")
        else:
            if not isinstance(self.grid, want):
                raise SpecError(f"a {self.family!r} ArchSpec needs grid={want.__name__}(...), got {self.grid!r}")
            self.grid.validate()

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        # conventions added later are written only when they differ from the default, so specs
        # (and zoo files) that do not use them serialise exactly as before
        if d.get("encoding") is not None and d["encoding"].get("input_range") == "signed":
            del d["encoding"]["input_range"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ArchSpec":
        try:
            family = d["family"]
            grid_cls = _family(family).grid
            grid = grid_cls(**d["grid"]) if (grid_cls is not None and d.get("grid") is not None) else d.get("grid")
            enc = FrequencySpec(**d["encoding"]) if d.get("encoding") is not None else None
            return cls(family=family, out_dim=int(d.get("out_dim", 4)), mlp=MLPSpec(**d.get("mlp", {})),
                       encoding=enc, grid=grid, name=d.get("name", ""))
        except (KeyError, TypeError) as exc:
            raise SpecError(f"not an ArchSpec dict ({exc}): {d!r}") from exc

    @classmethod
    def from_json(cls, s: str) -> "ArchSpec":
        try:
            d = json.loads(s)
        except json.JSONDecodeError as exc:
            raise SpecError(f"ArchSpec JSON does not parse: {exc}") from exc
        return cls.from_dict(d)

    def replace(self, **changes) -> "ArchSpec":
        return dataclasses.replace(self, **changes)

    @property
    def mlp_in_dim(self) -> int:
        """Width of the MLP's input (grid channels ++ encoding)."""
        n = self.encoding.out_dim if self.encoding is not None else 0
        return n + (self.grid.feature_dim if self.grid is not None else 0)


# -- encodings and MLPs the named architectures share (each family's module names its own) ----
NF2VEC_ENCODING = FrequencySpec(n_freqs=24, include_input=False, style="tcnn")
CARDACE_ENCODING = FrequencySpec(n_freqs=10, include_input=True, style="nerf")
RAW_XYZ = FrequencySpec(n_freqs=0, include_input=True, style="nerf")


def relu_mlp(**kw) -> MLPSpec:
    """nf2vec's / Instant-NGP's MLP: ReLU, no biases."""
    return MLPSpec(**{"activation": "relu", "bias": False, **kw})


def sine_mlp(**kw) -> MLPSpec:
    """SIREN's MLP: sine, biases."""
    return MLPSpec(**{"activation": "sine", "bias": True, **kw})


def relu_bias_mlp(**kw) -> MLPSpec:
    """NGLOD's decoder: ReLU with biases."""
    return MLPSpec(**{"activation": "relu", "bias": True, **kw})


def __getattr__(name: str):
    """``TRAINING_ARCHITECTURES``, ``UNSEEN_ARCHITECTURES``, ``ARCHITECTURES``, ``FAMILIES`` and
    ``FAMILY_OF_NAME``: the built-in families' (the live registry, plug-ins included, is
    :func:`gmn_inr.fields.registry.architectures`). Read from the registry, never listed twice."""
    if name == "TRAINING_ARCHITECTURES":
        return registry.architectures(builtin=True, training=True)
    if name == "UNSEEN_ARCHITECTURES":
        return registry.architectures(builtin=True, training=False)
    if name == "ARCHITECTURES":
        return registry.architectures(builtin=True)
    if name == "FAMILIES":
        return registry.families(builtin=True)
    if name == "FAMILY_OF_NAME":
        return {a: f for f in registry.families(builtin=True) for a in registry.get_family(f).training}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def arch_spec(name: str, out_dim: int = 4) -> ArchSpec:
    """The named architecture (``"MLP"``, ``"TRI-8C"``, ``"OCT-4C"``, or a plug-in's) with
    ``out_dim`` outputs."""
    try:
        fam = registry.family_of_arch(name)
    except KeyError as exc:
        raise SpecError(str(exc.args[0])) from None
    return ArchSpec(family=fam.name, out_dim=out_dim, name=name, **fam.archs[name])


def default_spec(family: str, out_dim: int = 4) -> ArchSpec:
    """The family's (first) training architecture."""
    try:
        fam = registry.get_family(family)
    except KeyError as exc:
        raise SpecError(str(exc.args[0])) from None
    return arch_spec(fam.training[0], out_dim)


# -- presets ----------------------------------------------------------------------
PRESETS = ("paper", "cpu", "tiny")
#: how much smaller the ``cpu`` / ``tiny`` presets make widths, resolutions and tables
PRESET_FACTOR = {"paper": 1, "cpu": 2, "tiny": 4}


def _scaled(spec: ArchSpec, preset: str) -> ArchSpec:
    """The ``cpu`` / ``tiny`` analogue of a paper architecture.

    Every size a variant changes is scaled by the same factor as its training
    architecture, so each unseen variant keeps its relation to its family (TRI-16W
    still has half TRI's resolution, HASH-11T half its table)."""
    if preset == "paper":
        return spec
    if preset not in PRESETS:
        raise SpecError(f"unknown preset {preset!r}; known: {PRESETS}")
    k = PRESET_FACTOR[preset]
    mlp = dataclasses.replace(spec.mlp, hidden_dim=max(4, spec.mlp.hidden_dim // k))
    grid = spec.grid
    if grid is not None and hasattr(grid, "scaled"):     # each grid spec knows its own small analogue
        grid = grid.scaled(preset)
    enc = spec.encoding
    # nf2vec's 24 frequencies reach 2^23 pi: pure aliasing at the few points a CPU fit can
    # afford, which the MLP must first learn to ignore; the small presets stop at 2^7 pi
    if enc is not None and enc.style == "tcnn" and enc.n_freqs > 8:
        enc = dataclasses.replace(enc, n_freqs=8)
    elif enc is not None and enc.n_freqs > 8 and preset == "tiny":
        enc = dataclasses.replace(enc, n_freqs=enc.n_freqs // 3)
    return dataclasses.replace(spec, mlp=mlp, grid=grid, encoding=enc)


def arch_spec_for(name: str, out_dim: int = 4, preset: str = "paper") -> ArchSpec:
    """The named architecture at a preset's scale (``paper`` = Table 7 exactly)."""
    return _scaled(arch_spec(name, out_dim), preset)
