"""tiny-cuda-nn networks convert through the equivalent gmn_inr field.

``tcnn_field(params, config, n_output_dims)`` needs no CUDA: it rebuilds a
``NetworkWithInputEncoding`` from tcnn's flat ``params`` and JSON config -- a ``HashGrid`` / hashed
``Grid`` encoding as :class:`~gmn_inr.fields.HashGridField`, a ``Frequency`` or ``Identity``
encoding as :class:`~gmn_inr.fields.MLPField` (tcnn's encoding order, ``input_range="unit"``).
An option this does not reproduce exactly is refused by name. ``tcnn_to_graph`` is its graph.
When ``tinycudann`` is importable, its ``NetworkWithInputEncoding`` and ``Encoding`` modules are
registered so ``to_graph`` takes them directly.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from gmn_inr.fields import ArchSpec, FrequencySpec, HashGridField, HashGridSpec, build_field
from gmn_inr.fields.hashgrid import HashGridEncoding, hash_levels, tcnn_config, tcnn_network_spec
from gmn_inr.fields.spec import SpecError

from .graph import ParameterGraph
from .convert import to_graph
from .registry import register_converter


def tcnn_to_graph(params: torch.Tensor, config: dict | str, n_output_dims: int = 4) -> ParameterGraph:
    """Graph of a ``tcnn.NetworkWithInputEncoding`` given its ``params`` and config."""
    return to_graph(tcnn_field(params, config, n_output_dims))


def pad16(n: int) -> int:
    return (n + 15) // 16 * 16


def split_tcnn_mlp(params, n_in: int, hidden_layers: int, hidden_dim: int, n_out: int, what: str,
                   padding_bias: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The weight matrices ``[out, in]`` (float32) of a tiny-cuda-nn MLP from its flat ``params``
    (``FullyFusedMLP`` / ``CutlassMLP``: layers back to back, row-major, no biases; the input width
    padded to a multiple of 16, the output to a multiple of 16), the padding cut off.

    A tcnn ``Frequency`` or ``Identity`` input encoding fills its padding with **1** (a grid
    encoding with 0), so weights on those columns act as a first-layer bias: returned as that bias
    (their row sums) with ``padding_bias``, else refused when not all zero. ``what`` names the
    tensor in errors. Returns ``(matrices, first-layer bias or None)``."""
    params = torch.as_tensor(params).detach()
    if not params.is_floating_point():
        raise SpecError(f"{what} must be floating point, got {params.dtype}")
    params = params.float().reshape(-1)
    shapes = [(hidden_dim, pad16(n_in))] + [(hidden_dim, hidden_dim)] * (hidden_layers - 1) \
        + [(pad16(n_out), hidden_dim)]
    sizes = [a * b for a, b in shapes]
    if params.numel() != sum(sizes):
        raise SpecError(f"{what} has {params.numel()} values; the layout implies {sum(sizes)} "
                        f"(input {n_in} padded to {pad16(n_in)}, {hidden_layers} x {hidden_dim}, output {n_out} "
                        f"padded to {pad16(n_out)})")
    mats = [chunk.view(a, b) for chunk, (a, b) in zip(torch.split(params, sizes), shapes)]
    if not bool(torch.isfinite(params).all()):
        raise SpecError(f"{what} holds NaN or inf values")
    bias = None
    if bool((mats[0][:, n_in:] != 0).any()):
        if not padding_bias:
            raise SpecError(f"{what}: the first layer has non-zero weights on the {pad16(n_in) - n_in} padding "
                            f"inputs that tcnn sets to 1 (an implicit bias gmn_inr's bias-free tcnn MLP cannot hold)")
        bias = mats[0][:, n_in:].sum(1)
    outs = [hidden_dim] * hidden_layers + [n_out]
    ins = [n_in] + [hidden_dim] * hidden_layers
    return [m[:o, :i].clone() for m, o, i in zip(mats, outs, ins)], bias


_ENCODING_KEYS = {"Frequency": ("otype", "n_frequencies", "n_dims_to_encode"),
                  "Identity": ("otype", "scale", "offset", "n_dims_to_encode")}


def tcnn_field(params, config: dict | str, n_output_dims: int = 4, input_range: str = "unit") -> nn.Module:
    """A ``tcnn.NetworkWithInputEncoding`` (flat ``params``, JSON ``config``) as a gmn_inr field of
    xyz in [-1, 1]: the network reads ``(xyz + 1) / 2`` (``input_range="unit"``, tcnn's convention)
    or xyz itself (``"signed"``; Frequency / Identity only, a hash grid reads [0, 1])."""
    config = tcnn_config(config)
    if not isinstance(config, dict) or not isinstance(config.get("encoding"), dict) or "network" not in config:
        raise SpecError("tcnn config must be a JSON object with an 'encoding' object and a 'network' object")
    enc = config["encoding"]
    otype = enc.get("otype", "HashGrid")
    if otype in ("HashGrid", "Grid", "DenseGrid", "TiledGrid"):
        if input_range != "unit":
            raise SpecError("a tcnn hash grid reads xyz in [0, 1]: its input range must be 'unit'")
        return HashGridField.from_tcnn(params, config, n_output_dims)
    if otype not in _ENCODING_KEYS:
        raise SpecError(f"tcnn encoding otype {otype!r} is not supported (HashGrid, Grid, Frequency, Identity)")
    unknown = sorted(str(k) for k in enc if k not in _ENCODING_KEYS[otype])
    if unknown:
        raise SpecError(f"tcnn {otype} encoding config keys {unknown} are not supported "
                        f"(known: {', '.join(_ENCODING_KEYS[otype])})")
    if enc.get("n_dims_to_encode", 3) != 3:
        raise SpecError(f"tcnn encoding option n_dims_to_encode={enc['n_dims_to_encode']!r} is not supported (xyz: 3)")
    for key, default in (("scale", 1.0), ("offset", 0.0)):
        if float(enc.get(key, default)) != default:
            raise SpecError(f"tcnn Identity encoding option {key}={enc[key]!r} is not supported (only {default})")
    if isinstance(n_output_dims, bool) or not isinstance(n_output_dims, int) or not 1 <= n_output_dims <= 4096:
        raise SpecError(f"n_output_dims must be an integer in [1, 4096], got {n_output_dims!r}")
    rng = {"unit": "unit", "signed": "signed", "symmetric": "signed"}.get(input_range)
    if rng is None:
        raise SpecError(f"input_range must be 'unit' or 'symmetric', got {input_range!r}")
    n_freqs = int(enc.get("n_frequencies", 12)) if otype == "Frequency" else 0
    encoding = FrequencySpec(n_freqs=n_freqs, include_input=otype == "Identity", style="tcnn", input_range=rng)
    mlp = tcnn_network_spec(config["network"])
    mats, bias = split_tcnn_mlp(params, encoding.out_dim, mlp.hidden_layers, mlp.hidden_dim, n_output_dims,
                                "tcnn params", padding_bias=True)
    default = f"tcnn-freq{n_freqs}" if otype == "Frequency" else "tcnn-identity"
    name = config.get("name") if isinstance(config.get("name"), str) else default
    field = build_field(ArchSpec(family="mlp", out_dim=n_output_dims, mlp=dataclasses.replace(mlp, bias=bias is not None),
                                 encoding=encoding, name=name))
    with torch.no_grad():
        for i, (lin, w) in enumerate(zip(field.mlp.layers, mats)):
            lin.weight.copy_(w)
            if lin.bias is not None:             # the padding's implicit bias, on the first layer only
                lin.bias.copy_(bias if i == 0 else torch.zeros_like(lin.bias))
    return field.eval()


def hash_encoding_from_tcnn(params: torch.Tensor, encoding_config: dict) -> HashGridEncoding:
    """A :class:`HashGridEncoding` holding a ``tcnn.Encoding``'s flat ``params``."""
    spec = HashGridSpec.from_tcnn(encoding_config)
    params = torch.as_tensor(params).detach().float().reshape(-1)
    n = hash_levels(spec).n_entries * spec.features_per_level        # checked before the table is allocated
    if params.numel() != n:
        raise SpecError(f"tcnn encoding params have {params.numel()} values, the config implies {n}")
    enc = HashGridEncoding(spec)
    with torch.no_grad():
        enc.params.copy_(params)
    return enc


try:  # tinycudann needs CUDA; without it these converters are simply not registered
    import tinycudann as _tcnn
except Exception:  # pragma: no cover - depends on the machine
    _tcnn = None

if _tcnn is not None:  # pragma: no cover - needs a GPU
    def _config(module, name):
        cfg = getattr(module, name, None)
        if cfg is None:
            raise SpecError(f"{type(module).__name__} has no {name}; use graphs.tcnn_to_graph(params, config)")
        return cfg

    @register_converter(_tcnn.NetworkWithInputEncoding)
    def _tcnn_network_to_graph(module) -> ParameterGraph:
        cfg = {"encoding": _config(module, "encoding_config"), "network": _config(module, "network_config")}
        return to_graph(tcnn_field(module.params.detach().float().cpu(), cfg, int(module.n_output_dims)))

    @register_converter(_tcnn.Encoding)
    def _tcnn_encoding_to_graph(module) -> ParameterGraph:
        enc = hash_encoding_from_tcnn(module.params.detach().float().cpu(), _config(module, "encoding_config"))
        return to_graph(enc)
