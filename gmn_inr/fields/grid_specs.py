"""The grid specs of the built-in families: tri-planes, multiresolution hash grids, octrees."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .checks import MAX_PARAMS, PRESET_FACTOR, SpecError, check_int, check_real


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
        r = check_int("TriplaneSpec", "resolution", self.resolution, 2, 8192)
        c = check_int("TriplaneSpec", "channels", self.channels, 1, 1024)
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
        L = check_int("HashGridSpec", "n_levels", self.n_levels, 1, 32)
        if self.features_per_level not in (1, 2, 4, 8) or isinstance(self.features_per_level, bool):
            raise SpecError(f"HashGridSpec.features_per_level must be 1, 2, 4 or 8, got {self.features_per_level!r}")
        log2t = check_int("HashGridSpec", "log2_hashmap_size", self.log2_hashmap_size, 4, 30)
        base = check_int("HashGridSpec", "base_resolution", self.base_resolution, 2, 1 << 20)
        scale = check_real("HashGridSpec", "per_level_scale", self.per_level_scale, 1.0, 1e6)
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
        check_int("OctreeSpec", "base_lod", self.base_lod, 0, 8)
        check_int("OctreeSpec", "n_lods", self.n_lods, 1, 8)
        if self.base_lod + self.n_lods > 9:
            raise SpecError(f"OctreeSpec.n_lods must be in [1, 8] with base_lod + n_lods <= 9, got {self.n_lods}")
        c = check_int("OctreeSpec", "channels", self.channels, 1, 1024)
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

