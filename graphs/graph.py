"""``ParameterGraph``: the currency between converters and the encoder, and the builder
every converter uses to assemble one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch

from . import layout as L


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or inf in ``t``: one summing pass (a finite sum implies finite elements; NaN and inf
    propagate), ``isfinite``'s four passes only when the sum is not finite (or overflowed)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


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
        probe: ``[M, K]`` probe features (Kofinas et al.) of the ``M`` nodes listed in
            ``probe_index``: each neuron's value at the ``K`` points of
            :func:`graphs.probe.probe_points` (input neurons: their encoded input; grid channel
            nodes: the interpolated feature; bias nodes: 1). Storage nodes (cells, entries,
            vertices) have none, so a grid's thousands of nodes cost nothing here. None when the
            converter could not run the network.
        probe_index: ``[M]`` long, the node of each ``probe`` row (ascending).
        side: ``[K]`` which side of the surface each probe point lies on, where the INR's function
            tells it: +1 inside, -1 outside, 0 where it does not (an unsigned distance). None
            unless set (gmn_inr.canonical's geometry mode sets it; the encoder's geometry head
            reads it): the weights do not say whether an output is a distance or a logit.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    spec: Any = None
    name: str = ""
    probe: Optional[torch.Tensor] = None
    probe_index: Optional[torch.Tensor] = None
    side: Optional[torch.Tensor] = None

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def nbytes(self) -> int:
        ts = (self.x, self.edge_index, self.edge_attr) + \
            ((self.probe, self.probe_index) if self.probe is not None else ()) + \
            ((self.side,) if self.side is not None else ())
        return sum(t.element_size() * t.numel() for t in ts)

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
        if not (_all_finite(x) and _all_finite(ea)):
            raise GraphError("parameter graph holds NaN or inf features")
        if (self.probe is None) != (self.probe_index is None):
            raise GraphError("probe and probe_index must be given together")
        if self.probe is not None:
            p, pi = self.probe, self.probe_index
            if p.ndim != 2 or pi.ndim != 1 or pi.dtype != torch.long or p.shape[0] != pi.shape[0]:
                raise GraphError(f"probe must be [M, K] with a long probe_index [M], got {tuple(p.shape)} and "
                                 f"{pi.dtype} {tuple(pi.shape)}")
            if pi.numel() and (int(pi.min()) < 0 or int(pi.max()) >= x.shape[0]):
                raise GraphError(f"probe_index refers to nodes outside 0..{x.shape[0] - 1}")
            if not _all_finite(p):
                raise GraphError("probe features hold NaN or inf (the network diverges at a probe point)")
        if self.side is not None:
            if self.probe is None or self.side.shape != (self.probe.shape[1],):
                raise GraphError(f"side must be [K] for a graph with probe features [M, K], got "
                                 f"{tuple(self.side.shape)} with probe "
                                 f"{None if self.probe is None else tuple(self.probe.shape)}")
            if not bool(((self.side == 1) | (self.side == 0) | (self.side == -1)).all()):
                raise GraphError("side holds values other than +1 (inside), -1 (outside) and 0 (not told)")
        return self

    def to_pyg(self):
        """A ``torch_geometric.data.Data`` with ``x``, ``edge_index``, ``edge_attr`` (and ``probe``,
        ``probe_index``, ``side [1, K]`` when present; nothing else is named ``*index*``, which ``Batch`` offsets as
        node indices)."""
        from torch_geometric.data import Data

        # Batch offsets every key named *index* by the node count, as probe_index needs
        extra = {"probe": self.probe, "probe_index": self.probe_index} if self.probe is not None else {}
        if self.side is not None:
            extra["side"] = self.side.unsqueeze(0)      # [1, K]: Batch stacks it to [G, K]
        return Data(x=self.x, edge_index=self.edge_index, edge_attr=self.edge_attr, num_nodes=self.num_nodes, **extra)

    def to_networkx(self):
        """A ``networkx.MultiDiGraph`` with node attributes ``x`` and ``probe`` (tuples; ``probe``
        empty when the graph has none) and edge attribute ``attr`` (tuples)."""
        import networkx as nx

        g = nx.MultiDiGraph()
        probe = self.dense_probe().tolist() if self.probe is not None else [[]] * self.num_nodes
        g.add_nodes_from((i, {"x": tuple(r), "probe": tuple(p)}) for i, (r, p) in enumerate(zip(self.x.tolist(), probe)))
        g.add_edges_from((int(s), int(t), {"attr": tuple(a)})
                         for (s, t), a in zip(self.edge_index.t().tolist(), self.edge_attr.tolist()))
        return g

    def dense_probe(self) -> torch.Tensor:
        """``[N, K]`` probe features with zero rows for nodes that have none."""
        if self.probe is None:
            raise GraphError("this graph has no probe features")
        out = self.probe.new_zeros(self.num_nodes, self.probe.shape[1])
        out[self.probe_index] = self.probe
        return out

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
        self._probe_ids: list[torch.Tensor] = []
        self._probe: list[torch.Tensor] = []
        self.num_nodes = 0

    def add_nodes(self, feats: torch.Tensor) -> torch.Tensor:
        """Append ``feats [n, NODE_DIM]``; return their ids ``[n]``."""
        ids = torch.arange(self.num_nodes, self.num_nodes + feats.shape[0])
        self._x.append(feats)
        self.num_nodes += feats.shape[0]
        return ids

    def set_probe(self, ids: torch.Tensor, values: torch.Tensor) -> None:
        """Give nodes ``ids [n]`` their probe features ``values [n, K]`` (a node given none has none)."""
        if values.ndim != 2 or values.shape[0] != ids.shape[0]:
            raise GraphError(f"probe values must be [n={ids.shape[0]}, K], got {tuple(values.shape)}")
        if self._probe and values.shape[1] != self._probe[0].shape[1]:
            raise GraphError(f"probe width {values.shape[1]} differs from the graph's {self._probe[0].shape[1]}")
        self._probe_ids.append(ids.long())
        self._probe.append(values.detach().float())

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
        probe = probe_index = None
        if self._probe:
            ids = torch.cat(self._probe_ids)
            if torch.unique(ids).numel() != ids.numel():
                raise GraphError("a node was given probe features twice")
            probe_index, order = torch.sort(ids)
            probe = torch.cat(self._probe)[order]
        return ParameterGraph(x, ei, ea, spec=spec, name=name, probe=probe, probe_index=probe_index)


def batch_graphs(graphs: Iterable[Any], device: Optional[torch.device | str] = None):
    """Parameter graphs (or PyG ``Data``) -> one torch_geometric ``Batch`` on ``device``: the one place graphs
    are batched (the encoder, the training loop, the zoo's datasets and the embedder all call it)."""
    from torch_geometric.data import Batch, Data   # imported here: torch_geometric is slow to import

    data = []
    for g in graphs:
        if isinstance(g, Data):
            data.append(g)
        elif hasattr(g, "to_pyg"):
            data.append(g.to_pyg())
        else:
            raise TypeError(f"expected a ParameterGraph or torch_geometric Data, got {type(g).__name__}")
    if not data:
        raise ValueError("batch_graphs needs at least one graph")
    with_side = sum(getattr(d, "side", None) is not None for d in data)
    if 0 < with_side < len(data):
        # Batch would stack the sides of some graphs against all graphs' rows: refuse the mix
        raise ValueError(f"batch_graphs: {with_side} of {len(data)} graphs carry a side row "
                         "(gmn_inr.canonical's geometry mode); batch graphs of one kind")
    b = Batch.from_data_list(data)
    return b.to(device) if device is not None else b
