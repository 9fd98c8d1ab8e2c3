"""tiny-cuda-nn hash-grid networks convert through the HashGrid path.

``tcnn_to_graph(params, config)`` needs no CUDA: it rebuilds the equivalent
:class:`~gmn_inr.fields.HashGridField` from tcnn's flat ``params`` and JSON config. When
``tinycudann`` is importable, its ``NetworkWithInputEncoding`` and ``Encoding`` modules are
registered so ``to_graph`` takes them directly.
"""
from __future__ import annotations

import torch

from gmn_inr.fields import HashGridField, HashGridSpec
from gmn_inr.fields.hashgrid import HashGridEncoding, hash_levels
from gmn_inr.fields.spec import SpecError

from .graph import ParameterGraph
from .convert import to_graph
from .registry import register_converter


def tcnn_to_graph(params: torch.Tensor, config: dict | str, n_output_dims: int = 4) -> ParameterGraph:
    """Graph of a ``tcnn.NetworkWithInputEncoding`` given its ``params`` and config."""
    return to_graph(HashGridField.from_tcnn(params, config, n_output_dims))


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
        field = HashGridField.from_tcnn(module.params.detach().float().cpu(), cfg, int(module.n_output_dims))
        return to_graph(field)

    @register_converter(_tcnn.Encoding)
    def _tcnn_encoding_to_graph(module) -> ParameterGraph:
        enc = hash_encoding_from_tcnn(module.params.detach().float().cpu(), _config(module, "encoding_config"))
        return to_graph(enc)
