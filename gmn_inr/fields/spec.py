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
from .checks import MAX_PARAMS, PRESET_FACTOR, PRESETS, SpecError, check_int, check_real  # noqa: F401  (re-exported)
from .grid_specs import HashGridSpec, OctreeSpec, TriplaneSpec  # noqa: F401  (re-exported)

ACTIVATION_NAMES = ("relu", "sine")


@dataclass(frozen=True)
class MLPSpec:
    """The MLP every family ends in. ``w0`` is SIREN's frequency factor (sine only)."""

    hidden_layers: int = 3
    hidden_dim: int = 64
    activation: str = "relu"
    bias: bool = False
    w0: float = 30.0

    def validate(self) -> None:
        check_int("MLPSpec", "hidden_layers", self.hidden_layers, 1, 64)
        check_int("MLPSpec", "hidden_dim", self.hidden_dim, 1, 8192)
        if self.activation not in ACTIVATION_NAMES:
            raise SpecError(f"MLPSpec.activation must be one of {ACTIVATION_NAMES}, got {self.activation!r}")
        if not isinstance(self.bias, bool):
            raise SpecError(f"MLPSpec.bias must be true or false, got {self.bias!r}")
        if not check_real("MLPSpec", "w0", self.w0, 0.0, 1e6) > 0:
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
        check_int("FrequencySpec", "n_freqs", self.n_freqs, 0, 64)
        if not isinstance(self.include_input, bool):
            raise SpecError(f"FrequencySpec.include_input must be true or false, got {self.include_input!r}")
        if self.style not in ("tcnn", "nerf"):
            raise SpecError(f"FrequencySpec.style must be 'tcnn' or 'nerf', got {self.style!r}")
        if self.n_freqs == 0 and not self.include_input:
            raise SpecError("FrequencySpec with n_freqs=0 and include_input=False encodes nothing")

    @property
    def out_dim(self) -> int:
        return 3 * (2 * self.n_freqs + int(self.include_input))



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
        check_int("ArchSpec", "out_dim", self.out_dim, 1, 4096)
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
