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


#: the most parameters a spec may imply (2^28 floats = 1 GiB; Table 7's largest field has ~0.3M and
#: an Instant-NGP hash grid 2^24): checked by ``validate`` before anything is allocated, so a crafted
#: ``arch_spec`` or tcnn config is refused instead of attempting a many-GB allocation
MAX_PARAMS = 1 << 28


def _int(owner: str, name: str, v, lo: int, hi: int) -> int:
    """``v`` as a bounded int (bools, strings and floats with a fraction are refused by name)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise SpecError(f"{owner}.{name} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise SpecError(f"{owner}.{name} must be in [{lo}, {hi}], got {v}")
    return int(v)


def _real(owner: str, name: str, v, lo: float, hi: float) -> float:
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise SpecError(f"{owner}.{name} must be a finite number in [{lo:g}, {hi:g}], got {v!r}")
    return float(v)


@dataclass(frozen=True)
class MLPSpec:
    """The MLP every family ends in. ``w0`` is SIREN's frequency factor (sine only)."""

    hidden_layers: int = 3
    hidden_dim: int = 64
    activation: str = "relu"
    bias: bool = False
    w0: float = 30.0

    def validate(self) -> None:
        _int("MLPSpec", "hidden_layers", self.hidden_layers, 1, 64)
        _int("MLPSpec", "hidden_dim", self.hidden_dim, 1, 8192)
        if self.activation not in ACTIVATION_NAMES:
            raise SpecError(f"MLPSpec.activation must be one of {ACTIVATION_NAMES}, got {self.activation!r}")
        if not isinstance(self.bias, bool):
            raise SpecError(f"MLPSpec.bias must be true or false, got {self.bias!r}")
        if not _real("MLPSpec", "w0", self.w0, 0.0, 1e6) > 0:
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
        _int("FrequencySpec", "n_freqs", self.n_freqs, 0, 64)
        if not isinstance(self.include_input, bool):
            raise SpecError(f"FrequencySpec.include_input must be true or false, got {self.include_input!r}")
        if self.style not in ("tcnn", "nerf"):
            raise SpecError(f"FrequencySpec.style must be 'tcnn' or 'nerf', got {self.style!r}")
        if self.n_freqs == 0 and not self.include_input:
            raise SpecError("FrequencySpec with n_freqs=0 and include_input=False encodes nothing")

    @property
    def out_dim(self) -> int:
        return 3 * (2 * self.n_freqs + int(self.include_input))


@dataclass(frozen=True)
class TriplaneSpec:
    """Planes ``(3, C, R, R)`` for pairs (x,y), (x,z), (y,z), sampled bilinearly.

    Conventions (defaults: gmn_inr's own tri-planes, unchanged since the zoo's first files):

    * ``align_corners``: ``grid_sample``'s flag. False: cell ``i`` is centred at ``(2i + 1) / R - 1``
      (coordinates -1 and 1 are the outer cell edges); True: at ``2i / (R - 1) - 1`` (-1 and 1 are
      the corner cells' centres), as the main paper's tri-plane NeRFs sample.
    * ``aggregate``: ``"sum"`` adds the three planes' features (``C`` MLP inputs); ``"concat"``
      concatenates them plane after plane, ``[xy | xz | yz]`` (``3 C`` MLP inputs).
    * ``encoding_first``: the MLP reads ``cat(encoding, features)`` instead of ``cat(features, encoding)``.
    """

    resolution: int = 32
    channels: int = 16
    align_corners: bool = False
    aggregate: str = "sum"
    encoding_first: bool = False

    #: the conventions' defaults; ``ArchSpec.to_dict`` leaves a field at its default out, so a spec
    #: that does not use them serialises exactly as before they existed
    CONVENTION_DEFAULTS = {"align_corners": False, "aggregate": "sum", "encoding_first": False}

    @property
    def feature_dim(self) -> int:
        return self.channels * (3 if self.aggregate == "concat" else 1)

    def scaled(self, preset: str) -> "TriplaneSpec":
        k = PRESET_FACTOR[preset]
        return dataclasses.replace(self, resolution=max(4, self.resolution // k), channels=max(2, self.channels // 2))

    def validate(self) -> None:
        r = _int("TriplaneSpec", "resolution", self.resolution, 2, 8192)
        c = _int("TriplaneSpec", "channels", self.channels, 1, 1024)
        for name in ("align_corners", "encoding_first"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"TriplaneSpec.{name} must be true or false, got {getattr(self, name)!r}")
        if self.aggregate not in ("sum", "concat"):
            raise SpecError(f"TriplaneSpec.aggregate must be 'sum' or 'concat', got {self.aggregate!r}")
        if 3 * c * r * r > MAX_PARAMS:
            raise SpecError(f"TriplaneSpec {c} x {r}^2 x 3 = {3 * c * r * r} parameters is over the limit {MAX_PARAMS}")


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

    #: the tiny-cuda-nn encoding keys read here; any other key is refused by name
    TCNN_KEYS = ("otype", "type", "n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution",
                 "per_level_scale", "interpolation", "hash")

    @classmethod
    def from_tcnn(cls, config: dict) -> "HashGridSpec":
        """The spec of a tiny-cuda-nn encoding config (``{"otype": "HashGrid", "n_levels": ...}``)
        with tcnn's defaults for the keys it leaves out. Only what this reproduces exactly is
        accepted: a hashed grid (``HashGrid``, or ``Grid`` with ``type: Hash``), linear
        interpolation, the coherent-prime hash; dense / tiled grids, other interpolations and hashes,
        values of the wrong type or size and unknown keys are refused by name (:class:`SpecError`)."""
        if not isinstance(config, dict):
            raise SpecError(f"a tcnn encoding config must be a JSON object, got {type(config).__name__}: "
                            f"{str(config)[:100]!r}")
        unknown = sorted(str(k) for k in config if k not in cls.TCNN_KEYS)
        if unknown:
            raise SpecError(f"tcnn encoding config keys {unknown} are not supported (known: {', '.join(cls.TCNN_KEYS)})")
        otype = config.get("otype", "HashGrid")
        gtype = config.get("type", "Hash")
        if otype in ("DenseGrid", "TiledGrid") or (otype == "Grid" and gtype in ("Dense", "Tiled")):
            raise SpecError(f"tcnn {otype if otype != 'Grid' else gtype + ' Grid'} encodings are not supported "
                            f"(only hashed grids: otype 'HashGrid', or 'Grid' with type 'Hash')")
        if otype not in ("HashGrid", "Grid") or gtype != "Hash":
            raise SpecError(f"only hash-grid encodings are supported, got otype {otype!r}, type {gtype!r}")
        if config.get("interpolation", "Linear") != "Linear":
            raise SpecError(f"tcnn grid interpolation {config['interpolation']!r} is not supported (only 'Linear')")
        if config.get("hash", "CoherentPrime") != "CoherentPrime":
            raise SpecError(f"tcnn grid hash {config['hash']!r} is not supported (only 'CoherentPrime')")

        def num(key, default, kind):
            v = config.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and isinstance(v, float)
                                                                          and not v.is_integer()):
                raise SpecError(f"tcnn encoding config {key!r} must be a{'n integer' if kind is int else ' number'}, "
                                f"got {v!r}")
            return kind(v)

        spec = cls(n_levels=num("n_levels", 16, int), features_per_level=num("n_features_per_level", 2, int),
                   log2_hashmap_size=num("log2_hashmap_size", 19, int), base_resolution=num("base_resolution", 16, int),
                   per_level_scale=num("per_level_scale", 2.0, float))
        spec.validate()
        return spec

    def validate(self) -> None:
        L = _int("HashGridSpec", "n_levels", self.n_levels, 1, 32)
        if self.features_per_level not in (1, 2, 4, 8) or isinstance(self.features_per_level, bool):
            raise SpecError(f"HashGridSpec.features_per_level must be 1, 2, 4 or 8, got {self.features_per_level!r}")
        log2t = _int("HashGridSpec", "log2_hashmap_size", self.log2_hashmap_size, 4, 30)
        base = _int("HashGridSpec", "base_resolution", self.base_resolution, 2, 1 << 20)
        scale = _real("HashGridSpec", "per_level_scale", self.per_level_scale, 1.0, 1e6)
        # the finest level's resolution (tcnn: base * scale^(L-1)); past 2^20 its res^3 overflows int64
        top = base * scale ** (L - 1)
        if top > (1 << 20):
            raise SpecError(f"HashGridSpec: the finest level's resolution {base} x {scale:g}^{L - 1} = {top:.3g} "
                            f"is over 2^20 (per_level_scale {scale:g} too large for {L} levels)")
        n = self.n_params()
        if n > MAX_PARAMS:
            raise SpecError(f"HashGridSpec: {n} parameters is over the limit {MAX_PARAMS}")
        del log2t

    def n_params(self) -> int:
        """Entries of every level's table times features, as tiny-cuda-nn sizes them (upper bound:
        res^3 in float64, before tcnn's float32 rounding of the scales)."""
        import math

        total = 0
        for lvl in range(int(self.n_levels)):
            res = math.ceil(self.base_resolution * self.per_level_scale ** lvl - 1) + 1
            total += min((res ** 3 + 7) // 8 * 8, 1 << int(self.log2_hashmap_size))
        return total * int(self.features_per_level)


@dataclass(frozen=True)
class OctreeSpec:
    """NGLOD-style sparse octree: LODs ``base_lod .. base_lod + n_lods - 1`` with ``2^lod``
    voxels per axis; features at the corners of occupied voxels, summed over LODs."""

    base_lod: int = 2
    n_lods: int = 3
    channels: int = 8

    def validate(self) -> None:
        _int("OctreeSpec", "base_lod", self.base_lod, 0, 8)
        _int("OctreeSpec", "n_lods", self.n_lods, 1, 8)
        if self.base_lod + self.n_lods > 9:
            raise SpecError(f"OctreeSpec.n_lods must be in [1, 8] with base_lod + n_lods <= 9, got {self.n_lods}")
        c = _int("OctreeSpec", "channels", self.channels, 1, 1024)
        n = c * sum((2 ** lod + 1) ** 3 for lod in self.lods)        # every vertex occupied, at most
        if n > MAX_PARAMS:
            raise SpecError(f"OctreeSpec: up to {n} parameters is over the limit {MAX_PARAMS}")

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
        if not isinstance(self.family, str):
            raise SpecError(f"ArchSpec.family must be a name, got {self.family!r}")
        if not isinstance(self.name, str):
            raise SpecError(f"ArchSpec.name must be a string, got {self.name!r}")
        want = _family(self.family).grid
        _int("ArchSpec", "out_dim", self.out_dim, 1, 4096)
        if not isinstance(self.mlp, MLPSpec):
            raise SpecError(f"ArchSpec.mlp must be an MLPSpec, got {self.mlp!r}")
        self.mlp.validate()
        if self.encoding is not None:
            if not isinstance(self.encoding, FrequencySpec):
                raise SpecError(f"ArchSpec.encoding must be a FrequencySpec or None, got {self.encoding!r}")
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
        n_in = self.mlp_in_dim if self.grid is None or hasattr(self.grid, "feature_dim") else 0
        W, H = self.mlp.hidden_dim, self.mlp.hidden_layers
        n_mlp = n_in * W + (H - 1) * W * W + W * self.out_dim
        if n_mlp > MAX_PARAMS:
            raise SpecError(f"ArchSpec {self.name or self.family}: its MLP has {n_mlp} parameters, over the limit "
                            f"{MAX_PARAMS}")

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        # conventions added later are written only when they differ from the default, so specs
        # (and zoo files) that do not use them serialise exactly as before
        if d.get("encoding") is not None and d["encoding"].get("input_range") == "signed":
            del d["encoding"]["input_range"]
        if isinstance(self.grid, TriplaneSpec):
            for k, v in TriplaneSpec.CONVENTION_DEFAULTS.items():
                if d["grid"].get(k) == v and type(d["grid"].get(k)) is type(v):
                    del d["grid"][k]
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
        except (KeyError, TypeError, AttributeError) as exc:
            raise SpecError(f"not an ArchSpec dict ({exc}): {str(d)[:300]}") from None

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
        """Width of the MLP's input (grid channels ++ encoding, or the reverse: ``encoding_first``)."""
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
