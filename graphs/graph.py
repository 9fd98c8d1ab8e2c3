"""``ParameterGraph``: the currency between converters and the encoder, and the builder
every converter uses to assemble one."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from . import layout as L


class GraphError(ValueError):
    """A parameter graph (or the module it comes from) is malformed."""


@dataclass
class ParameterGraph:
    """A neural network's parameters as a directed graph.

    Attributes:
        x: node features ``[N, NODE_DIM]`` (columns in :mod:`graphs.layout`).
        edge_index: ``[2, E]`` long, row 0 source, row 1 target.
        edge_attr: edge features ``[E, EDGE_DIM]``; column ``E_VALUE`` holds each parameter once.
        spec: the :class:`~gmn_inr.fields.ArchSpec` it was converted from, when known.
        name: a label (the architecture name or the module type).
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    spec: Any = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in (self.x, self.edge_index, self.edge_attr))

    def validate(self) -> "ParameterGraph":
        """Check shapes, dtypes, index range and finiteness; return self or raise GraphError."""
        x, ei, ea = self.x, self.edge_index, self.edge_attr
        if x.ndim != 2 or x.shape[1] != L.NODE_DIM:
            raise GraphError(f"x must be [N, {L.NODE_DIM}], got {tuple(x.shape)}")
        if ei.ndim != 2 or ei.shape[0] != 2 or ei.dtype != torch.long:
            raise GraphError(f"edge_index must be a long [2, E] tensor, got {ei.dtype} {tuple(ei.shape)}")
        if ea.ndim != 2 or ea.shape != (ei.shape[1], L.EDGE_DIM):
            raise GraphError(f"edge_attr must be [E={ei.shape[1]}, {L.EDGE_DIM}], got {tuple(ea.shape)}")
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= x.shape[0]):
            raise GraphError(f"edge_index refers to nodes outside 0..{x.shape[0] - 1}")
        if not (torch.isfinite(x).all() and torch.isfinite(ea).all()):
            raise GraphError("parameter graph holds NaN or inf features")
        return self

    def to_pyg(self):
        """A ``torch_geometric.data.Data`` with ``x``, ``edge_index``, ``edge_attr`` (and nothing
        else named ``*index*``, which ``Batch`` would offset as node indices)."""
        from torch_geometric.data import Data

        return Data(x=self.x, edge_index=self.edge_index, edge_attr=self.edge_attr, num_nodes=self.num_nodes)

    def to_networkx(self):
        """A ``networkx.MultiDiGraph`` with node attribute ``x`` and edge attribute ``attr`` (tuples)."""
        import networkx as nx

        g = nx.MultiDiGraph()
        g.add_nodes_from((i, {"x": tuple(r)}) for i, r in enumerate(self.x.tolist()))
        g.add_edges_from((int(s), int(t), {"attr": tuple(a)})
                         for (s, t), a in zip(self.edge_index.t().tolist(), self.edge_attr.tolist()))
        return g

    def __repr__(self) -> str:
        return f"ParameterGraph(name={self.name!r}, nodes={self.num_nodes}, edges={self.num_edges})"


def node_features(n: int, node_type: int, *, layer: float = 0.0, out: Optional[torch.Tensor] = None,
                  pos: Optional[torch.Tensor] = None, freq: Optional[torch.Tensor] = None,
                  phase: Optional[torch.Tensor] = None, level: float | torch.Tensor = 0.0,
                  act: str = "identity") -> torch.Tensor:
    """``[n, NODE_DIM]`` node features; raw integers are scaled here (see :mod:`graphs.layout`)."""
    x = torch.zeros(n, L.NODE_DIM)
    x[:, L.N_TYPE] = float(node_type)
    x[:, L.N_LAYER] = layer / L.LAYER_SCALE
    if out is not None:
        x[:, L.N_OUT] = out.float() / L.OUT_SCALE
    if pos is not None:
        x[:, L.N_POS] = pos
    if freq is not None:
        x[:, L.N_FREQ] = torch.log2(freq.float()) / L.FREQ_SCALE
    if phase is not None:
        x[:, L.N_PHASE] = phase.float() / 2.0
    x[:, L.N_LEVEL] = torch.as_tensor(level, dtype=torch.float32) / L.LEVEL_SCALE
    x[:, L.N_ACT] = activation_code(act) / L.ACT_SCALE
    return x


def edge_features(values: torch.Tensor, edge_type: int, *, layer: float = 0.0,
                  pos: Optional[torch.Tensor] = None, level: float | torch.Tensor = 0.0,
                  entry: Optional[torch.Tensor] = None, act: str = "identity") -> torch.Tensor:
    """``[E, EDGE_DIM]`` edge features for parameter ``values [E]``."""
    e = torch.zeros(values.shape[0], L.EDGE_DIM)
    e[:, L.E_VALUE] = values.detach().float().reshape(-1)
    e[:, L.E_LAYER] = layer / L.LAYER_SCALE
    e[:, L.E_TYPE] = float(edge_type)
    if pos is not None:
        e[:, L.E_POS] = pos
    e[:, L.E_LEVEL] = torch.as_tensor(level, dtype=torch.float32) / L.LEVEL_SCALE
    if entry is not None:
        e[:, L.E_ENTRY] = entry
    e[:, L.E_ACT] = activation_code(act) / L.ACT_SCALE
    return e


def activation_code(name: str) -> int:
    try:
        return L.ACTIVATIONS[name]
    except KeyError:
        raise GraphError(f"activation {name!r} has no code; known: {', '.join(L.ACTIVATIONS)}") from None


class GraphBuilder:
    """Accumulates node and edge blocks; node ids are handed out in order of addition."""

    def __init__(self) -> None:
        self._x: list[torch.Tensor] = []
        self._src: list[torch.Tensor] = []
        self._dst: list[torch.Tensor] = []
        self._attr: list[torch.Tensor] = []
        self.num_nodes = 0

    def add_nodes(self, feats: torch.Tensor) -> torch.Tensor:
        """Append ``feats [n, NODE_DIM]``; return their ids ``[n]``."""
        ids = torch.arange(self.num_nodes, self.num_nodes + feats.shape[0])
        self._x.append(feats)
        self.num_nodes += feats.shape[0]
        return ids

    def add_edges(self, src: torch.Tensor, dst: torch.Tensor, attr: torch.Tensor) -> None:
        """Append edges ``src [E] -> dst [E]`` with features ``attr [E, EDGE_DIM]``."""
        if not (src.shape == dst.shape and src.shape[0] == attr.shape[0]):
            raise GraphError(f"edge block shapes disagree: src {tuple(src.shape)}, dst {tuple(dst.shape)}, attr {tuple(attr.shape)}")
        self._src.append(src.long())
        self._dst.append(dst.long())
        self._attr.append(attr)

    def build(self, spec=None, name: str = "") -> ParameterGraph:
        x = torch.cat(self._x) if self._x else torch.zeros(0, L.NODE_DIM)
        ei = torch.stack([torch.cat(self._src), torch.cat(self._dst)]) if self._src else torch.zeros(2, 0, dtype=torch.long)
        ea = torch.cat(self._attr) if self._attr else torch.zeros(0, L.EDGE_DIM)
        return ParameterGraph(x, ei, ea, spec=spec, name=name)
