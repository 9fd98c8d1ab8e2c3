"""Multiresolution hash grid with tiny-cuda-nn's exact math and flat parameter layout.

Facts from tiny-cuda-nn (docs/reference.md, "tiny-cuda-nn's hash grid"): level scale ``exp2(l * log2(s)) * base - 1`` in
float32, resolution ``ceil(scale) + 1``, position ``scale * x + 0.5`` for x in [0, 1], table
size ``min(next_multiple(res^3, 8), 2^log2T)``, a level is dense (index ``x + y*res + z*res^2``)
iff ``res^3 <= size`` else hashed with the coherent-prime XOR hash, parameters flat in
``[level][entry][feature]`` order, outputs level-major. So a tcnn ``params`` tensor loads
into :class:`HashGridEncoding` unchanged and gives the same outputs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .base import Field
from .registry import register_family
from .spec import ArchSpec, HashGridSpec, MLPSpec, SpecError, default_spec, relu_mlp

PRIMES = (1, 2654435761, 805459861)
_U32 = 0xFFFFFFFF
#: the 8 corners of a cell; bit d of the corner number selects +1 on axis d
#: the integer type as wide as a table row of F float32 features (1 or 2): its gather moves the same bytes
_RAW_ROW = {1: torch.int32, 2: torch.int64}
CORNERS = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], dtype=torch.long)


#: the tiny-cuda-nn network keys :meth:`HashGridField.from_tcnn` reads; any other is refused by name
TCNN_NETWORK_KEYS = ("otype", "activation", "output_activation", "n_neurons", "n_hidden_layers")


def tcnn_config(config: "dict | str") -> dict:
    """A tiny-cuda-nn config given as a dict or its JSON text, as a dict (SpecError otherwise)."""
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError as exc:
            raise SpecError(f"tcnn config is not valid JSON: {exc}") from None
    return config


def tcnn_network_spec(net) -> MLPSpec:
    """The :class:`MLPSpec` of a tiny-cuda-nn network config (``FullyFusedMLP`` / ``CutlassMLP``,
    ReLU or Sine, no output activation, no biases); an option it cannot hold is refused by name."""
    if not isinstance(net, dict):
        raise SpecError(f"tcnn network config must be a JSON object, got {type(net).__name__}: {str(net)[:100]!r}")
    unknown = sorted(str(k) for k in net if k not in TCNN_NETWORK_KEYS)
    if unknown:
        raise SpecError(f"tcnn network config keys {unknown} are not supported (known: {', '.join(TCNN_NETWORK_KEYS)})")
    if net.get("otype", "FullyFusedMLP") not in ("FullyFusedMLP", "CutlassMLP"):
        raise SpecError(f"tcnn network otype {net.get('otype')!r} is not supported (FullyFusedMLP, CutlassMLP)")
    act = str(net.get("activation", "ReLU")).lower()
    if act not in ("relu", "sine"):
        raise SpecError(f"tcnn network activation {net.get('activation')!r} is not supported (ReLU, Sine)")
    if str(net.get("output_activation", "None")) != "None":
        raise SpecError(f"tcnn network output_activation {net['output_activation']!r} is not supported (only "
                        f"'None': the field's outputs are the network's raw outputs)")
    for key, default in (("n_hidden_layers", 2), ("n_neurons", 64)):
        v = net.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(f"tcnn network config {key!r} must be an integer, got {v!r}")
    return MLPSpec(hidden_layers=int(net.get("n_hidden_layers", 2)), hidden_dim=int(net.get("n_neurons", 64)),
                   activation=act, bias=False, **({"w0": 1.0} if act == "sine" else {}))   # tcnn's Sine is sin(x)


def _next_multiple(v: int, m: int) -> int:
    return (v + m - 1) // m * m


@dataclass(frozen=True)
class HashLevels:
    """Per-level layout of a hash grid (all arrays have one entry per level)."""

    scale: np.ndarray       # float32
    resolution: np.ndarray  # int64
    size: np.ndarray        # int64, entries in the level's table
    offset: np.ndarray      # int64, first entry of the level in the flat table
    dense: np.ndarray       # bool

    @property
    def n_entries(self) -> int:
        return int(self.size.sum())


def hash_levels(g: HashGridSpec) -> HashLevels:
    """The level layout tiny-cuda-nn computes for ``g`` (float32 where tcnn uses float)."""
    g.validate()
    log2_scale = np.float32(np.log2(np.float32(g.per_level_scale)))
    levels = np.arange(g.n_levels, dtype=np.float32)
    scale = (np.exp2(levels * log2_scale) * np.float32(g.base_resolution) - np.float32(1.0)).astype(np.float32)
    res = (np.ceil(scale).astype(np.int64) + 1)
    max_params = np.iinfo(np.uint32).max // 2
    cells = np.minimum(res.astype(np.float64) ** 3, max_params).astype(np.int64)
    size = np.minimum((cells + 7) // 8 * 8, 1 << g.log2_hashmap_size)
    offset = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
    dense = res ** 3 <= size
    return HashLevels(scale, res, size, offset, dense)


class HashGridEncoding(nn.Module):
    """``x [..., 3] in [0, 1] -> [..., n_levels * F]`` (level-major), tiny-cuda-nn's HashGrid.

    ``params [n_entries * F]`` is the flat table, exactly tcnn's ``Encoding.params``.
    """

    def __init__(self, spec: HashGridSpec | None = None):
        super().__init__()
        spec = spec or HashGridSpec()
        self.spec = spec
        self.levels = hash_levels(spec)
        self.n_features = spec.features_per_level
        self.params = nn.Parameter(torch.empty(self.levels.n_entries * self.n_features).uniform_(-1e-4, 1e-4))
        lv = self.levels
        self.register_buffer("scale", torch.from_numpy(lv.scale).view(-1, 1, 1), persistent=False)
        self.register_buffer("res", torch.from_numpy(lv.resolution).view(-1, 1, 1), persistent=False)
        self.register_buffer("size", torch.from_numpy(lv.size).view(-1, 1, 1), persistent=False)
        self.register_buffer("offset", torch.from_numpy(lv.offset).view(-1, 1, 1), persistent=False)
        self.register_buffer("dense", torch.from_numpy(lv.dense).view(-1, 1, 1), persistent=False)
        self.register_buffer("primes", torch.tensor(PRIMES, dtype=torch.long), persistent=False)
        self.register_buffer("corners", CORNERS.clone(), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.spec.n_levels * self.n_features

    def entry_index(self, grid: torch.Tensor) -> torch.Tensor:
        """Integer grid corners ``[L, M, 8, 3]`` -> flat entry index ``[L, M, 8]``."""
        r = self.res                                                             # [L,1,1]
        dense_idx = grid[..., 0] + grid[..., 1] * r + grid[..., 2] * (r * r)
        h = (grid * self.primes) & _U32
        hashed = h[..., 0] ^ h[..., 1] ^ h[..., 2]
        idx = torch.where(self.dense, dense_idx, hashed)
        return idx % self.size + self.offset

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where ``x [..., 3]`` reads the table: flat entry indices ``[L * M * 8]`` of its cells'
        corners and their trilinear weights ``[L, M, 8]`` (``M`` points). Parameter-free, so a
        caller that reads many tables at the same points (graph probes) computes it once."""
        pts = x.reshape(1, -1, 3)
        pos = self.scale * pts + 0.5                                             # [L, M, 3]
        base = torch.floor(pos)
        frac = pos - base
        grid = base.long().unsqueeze(2) + self.corners                           # [L, M, 8, 3]
        w = torch.where(self.corners.bool(), frac.unsqueeze(2), 1.0 - frac.unsqueeze(2)).prod(-1)  # [L, M, 8]
        return self.entry_index(grid).reshape(-1), w

    def level_features(self, idx: torch.Tensor, w: torch.Tensor, no_grad: bool = False) -> torch.Tensor:
        """``[L, M, F]``: the table read at :meth:`lookup`'s ``idx`` with weights ``w [L, M, 8, 1]``
        (or the same expanded to ``[L, M, 8, F]``: the products, and so the sum, are the same).
        ``no_grad``: the caller wants no gradient (graph probes), so each F-float row may be
        gathered as one integer: the same bytes, a third of the time."""
        F = self.n_features
        raw = _RAW_ROW.get(F) if no_grad else None
        if raw is not None:
            feats = self.params.detach().view(raw).index_select(0, idx).view(torch.float32)
        else:
            feats = self.params.view(-1, F).index_select(0, idx)
        return (w * feats.view(*w.shape[:3], F)).sum(2)

    def interpolate(self, idx: torch.Tensor, w: torch.Tensor, lead: tuple = ()) -> torch.Tensor:
        """The table read at :meth:`lookup`'s ``(idx, w)``: ``[*lead, n_levels * F]`` (level-major)."""
        out = self.level_features(idx, w.unsqueeze(-1))                         # [L, M, F]
        return out.permute(1, 0, 2).reshape(*lead, self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.interpolate(*self.lookup(x), lead=tuple(x.shape[:-1]))


#: Table 7's HASH and its unseen variants
ARCHS = {
    "HASH": dict(mlp=relu_mlp(), grid=HashGridSpec()),
    "HASH-2L": dict(mlp=relu_mlp(hidden_layers=2), grid=HashGridSpec()),
    "HASH-32H": dict(mlp=relu_mlp(hidden_dim=32), grid=HashGridSpec()),
    "HASH-3N": dict(mlp=relu_mlp(), grid=HashGridSpec(n_levels=3)),
    "HASH-11T": dict(mlp=relu_mlp(), grid=HashGridSpec(log2_hashmap_size=11)),
}


@register_family("hashgrid", grid=HashGridSpec, archs=ARCHS, training=("HASH",))
class HashGridField(Field):
    """Hash grid on ``(xyz + 1) / 2`` -> MLP of the level features only (Instant-NGP).
    Default: the main paper's HASH (4 levels, 2^12 entries, 2 features, resolution 16 -> 128,
    ReLU 3 x 64, no biases)."""

    family = "hashgrid"

    def __init__(self, spec: ArchSpec | None = None):
        spec = spec or default_spec("hashgrid")
        super().__init__(spec)
        self.grid = HashGridEncoding(spec.grid)
        self.grid_dim = self.grid.out_dim

    def grid_features(self, xyz: torch.Tensor) -> torch.Tensor:
        return self.grid((xyz + 1.0) * 0.5)

    # -- tiny-cuda-nn interchange -------------------------------------------------
    @classmethod
    def from_tcnn(cls, params: torch.Tensor, config: dict | str, n_output_dims: int = 4) -> "HashGridField":
        """Build from a ``tcnn.NetworkWithInputEncoding``'s flat ``params`` and its JSON config
        (``{"encoding": {"otype": "HashGrid", ...}, "network": {"otype": "FullyFusedMLP", ...}}``).

        tcnn stores the network first, then the encoding; the network has no biases, its
        input is padded to a multiple of 16 with zeros and its output to a multiple of 16,
        which are dropped here. The field takes xyz in [-1, 1] and feeds tcnn's [0, 1].
        """
        config = tcnn_config(config)
        if not isinstance(config, dict):
            raise SpecError(f"tcnn config must be a JSON object with 'encoding' and 'network', got "
                            f"{type(config).__name__}")
        cfg = dict(config)
        try:
            enc, net = cfg["encoding"], cfg["network"]
        except KeyError as exc:
            raise SpecError(f"tcnn config needs 'encoding' and 'network' entries, missing {exc}") from None
        mlp = tcnn_network_spec(net)
        if isinstance(n_output_dims, bool) or not isinstance(n_output_dims, int) or not 1 <= n_output_dims <= 4096:
            raise SpecError(f"n_output_dims must be an integer in [1, 4096], got {n_output_dims!r}")
        grid = HashGridSpec.from_tcnn(enc)
        name = cfg.get("name", "tcnn-hash")
        spec = ArchSpec(family="hashgrid", out_dim=n_output_dims, mlp=mlp, grid=grid,
                        name=name if isinstance(name, str) else "tcnn-hash")
        # the length check comes before the field (and its table) is allocated
        params = torch.as_tensor(params).detach().reshape(-1)
        width, n_in = mlp.hidden_dim, grid.n_levels * grid.features_per_level
        in_pad, out_pad = _next_multiple(n_in, 16), _next_multiple(n_output_dims, 16)
        shapes = [(width, in_pad)] + [(width, width)] * (mlp.hidden_layers - 1) + [(out_pad, width)]
        n_net = sum(a * b for a, b in shapes)
        n_enc = hash_levels(grid).n_entries * grid.features_per_level
        if params.numel() != n_net + n_enc:
            raise SpecError(f"tcnn params have {params.numel()} values, the config implies {n_net} network "
                            f"+ {n_enc} encoding = {n_net + n_enc}")
        if not params.is_floating_point():
            raise SpecError(f"tcnn params must be floating point, got {params.dtype}")
        params = params.float()
        field = cls(spec)
        with torch.no_grad():
            chunks = torch.split(params[:n_net], [a * b for a, b in shapes])
            for lin, chunk, (a, b) in zip(field.mlp.layers, chunks, shapes):
                w = chunk.view(a, b)
                lin.weight.copy_(w[: lin.out_features, : lin.in_features])
            field.grid.params.copy_(params[n_net:])
        return field
