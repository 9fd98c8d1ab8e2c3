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

FAMILIES = ("mlp", "triplane", "hashgrid", "octree")
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

    def validate(self) -> None:
        if self.resolution < 2:
            raise SpecError(f"TriplaneSpec.resolution must be >= 2, got {self.resolution}")
        if self.channels < 1:
            raise SpecError(f"TriplaneSpec.channels must be >= 1, got {self.channels}")


@dataclass(frozen=True)
class HashGridSpec:
    """tiny-cuda-nn's multiresolution hash grid (REFERENCE.md)."""

    n_levels: int = 4
    features_per_level: int = 2
    log2_hashmap_size: int = 12
    base_resolution: int = 16
    per_level_scale: float = 2.0

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


_GRID_TYPES = {"triplane": TriplaneSpec, "hashgrid": HashGridSpec, "octree": OctreeSpec}


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
        if self.family not in FAMILIES:
            raise SpecError(f"ArchSpec.family must be one of {FAMILIES}, got {self.family!r}")
        if self.out_dim < 1:
            raise SpecError(f"ArchSpec.out_dim must be >= 1, got {self.out_dim}")
        self.mlp.validate()
        if self.encoding is not None:
            self.encoding.validate()
        want = _GRID_TYPES.get(self.family)
        if want is None:
            if self.grid is not None:
                raise SpecError("an 'mlp' ArchSpec has no grid")
            if self.encoding is None:
                raise SpecError("an 'mlp' ArchSpec needs an encoding (use FrequencySpec(0, True) for raw xyz)")
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
            grid_cls = _GRID_TYPES.get(family)
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
        if self.family == "triplane":
            n += self.grid.channels
        elif self.family == "hashgrid":
            n += self.grid.n_levels * self.grid.features_per_level
        elif self.family == "octree":
            n += self.grid.channels
        return n


# -- the named architectures (main paper Table 7, plus the octree family) ---------------
NF2VEC_ENCODING = FrequencySpec(n_freqs=24, include_input=False, style="tcnn")
CARDACE_ENCODING = FrequencySpec(n_freqs=10, include_input=True, style="nerf")
RAW_XYZ = FrequencySpec(n_freqs=0, include_input=True, style="nerf")


def _mlp(**kw) -> MLPSpec:
    return MLPSpec(**{"activation": "relu", "bias": False, **kw})


def _sine(**kw) -> MLPSpec:
    return MLPSpec(**{"activation": "sine", "bias": True, **kw})


def _oct_mlp(**kw) -> MLPSpec:
    return MLPSpec(**{"activation": "relu", "bias": True, **kw})


_ARCHS: dict[str, dict] = {
    # training architectures
    "MLP": dict(family="mlp", mlp=_mlp(), encoding=NF2VEC_ENCODING),
    "TRI": dict(family="triplane", mlp=_sine(), encoding=CARDACE_ENCODING, grid=TriplaneSpec()),
    "HASH": dict(family="hashgrid", mlp=_mlp(), grid=HashGridSpec()),
    "OCT": dict(family="octree", mlp=_oct_mlp(), encoding=RAW_XYZ, grid=OctreeSpec()),
    # unseen variants
    "MLP-2L": dict(family="mlp", mlp=_mlp(hidden_layers=2), encoding=NF2VEC_ENCODING),
    "MLP-32H": dict(family="mlp", mlp=_mlp(hidden_dim=32), encoding=NF2VEC_ENCODING),
    "TRI-2L": dict(family="triplane", mlp=_sine(hidden_layers=2), encoding=CARDACE_ENCODING, grid=TriplaneSpec()),
    "TRI-32H": dict(family="triplane", mlp=_sine(hidden_dim=32), encoding=CARDACE_ENCODING, grid=TriplaneSpec()),
    "TRI-16W": dict(family="triplane", mlp=_sine(), encoding=CARDACE_ENCODING, grid=TriplaneSpec(resolution=16)),
    "TRI-8C": dict(family="triplane", mlp=_sine(), encoding=CARDACE_ENCODING, grid=TriplaneSpec(channels=8)),
    "HASH-2L": dict(family="hashgrid", mlp=_mlp(hidden_layers=2), grid=HashGridSpec()),
    "HASH-32H": dict(family="hashgrid", mlp=_mlp(hidden_dim=32), grid=HashGridSpec()),
    "HASH-3N": dict(family="hashgrid", mlp=_mlp(), grid=HashGridSpec(n_levels=3)),
    "HASH-11T": dict(family="hashgrid", mlp=_mlp(), grid=HashGridSpec(log2_hashmap_size=11)),
    "OCT-2L": dict(family="octree", mlp=_oct_mlp(hidden_layers=2), encoding=RAW_XYZ, grid=OctreeSpec()),
    "OCT-32H": dict(family="octree", mlp=_oct_mlp(hidden_dim=32), encoding=RAW_XYZ, grid=OctreeSpec()),
    "OCT-2LOD": dict(family="octree", mlp=_oct_mlp(), encoding=RAW_XYZ, grid=OctreeSpec(n_lods=2)),
    "OCT-4C": dict(family="octree", mlp=_oct_mlp(), encoding=RAW_XYZ, grid=OctreeSpec(channels=4)),
}

TRAINING_ARCHITECTURES = ("MLP", "TRI", "HASH", "OCT")
UNSEEN_ARCHITECTURES = tuple(n for n in _ARCHS if n not in TRAINING_ARCHITECTURES)
ARCHITECTURES = tuple(_ARCHS)
FAMILY_OF_NAME = {"MLP": "mlp", "TRI": "triplane", "HASH": "hashgrid", "OCT": "octree"}


def arch_spec(name: str, out_dim: int = 4) -> ArchSpec:
    """The named architecture (``"MLP"``, ``"TRI-8C"``, ``"OCT-4C"``, ...) with ``out_dim`` outputs."""
    try:
        kw = _ARCHS[name]
    except KeyError:
        raise SpecError(f"unknown architecture {name!r}; known: {', '.join(_ARCHS)}") from None
    return ArchSpec(out_dim=out_dim, name=name, **kw)


def default_spec(family: str, out_dim: int = 4) -> ArchSpec:
    """The family's training architecture of Table 7."""
    names = {v: k for k, v in FAMILY_OF_NAME.items()}
    if family not in names:
        raise SpecError(f"unknown family {family!r}; known: {FAMILIES}")
    return arch_spec(names[family], out_dim)


# -- presets ----------------------------------------------------------------------
PRESETS = ("paper", "cpu", "tiny")


def _scaled(spec: ArchSpec, preset: str) -> ArchSpec:
    """The ``cpu`` / ``tiny`` analogue of a paper architecture.

    Every size a variant changes is scaled by the same factor as its training
    architecture, so each unseen variant keeps its relation to its family (TRI-16W
    still has half TRI's resolution, HASH-11T half its table)."""
    if preset == "paper":
        return spec
    if preset not in PRESETS:
        raise SpecError(f"unknown preset {preset!r}; known: {PRESETS}")
    k = 2 if preset == "cpu" else 4
    mlp = dataclasses.replace(spec.mlp, hidden_dim=max(4, spec.mlp.hidden_dim // k))
    grid = spec.grid
    if isinstance(grid, TriplaneSpec):
        grid = TriplaneSpec(resolution=max(4, grid.resolution // k), channels=max(2, grid.channels // 2))
    elif isinstance(grid, HashGridSpec):
        grid = dataclasses.replace(grid, log2_hashmap_size=grid.log2_hashmap_size - k,
                                   base_resolution=max(4, grid.base_resolution // k))
    elif isinstance(grid, OctreeSpec) and preset == "tiny":
        grid = dataclasses.replace(grid, base_lod=1)
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
