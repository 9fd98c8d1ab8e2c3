"""The Graph Meta-Network encoder: parameter graph(s) -> one embedding per graph.

Lim et al.'s edge-updating message passing network (``EdgeMPNNDiT``; docs/reference.md, "The
graph meta-network block"), as used by the main paper (appendix B): a pre-encoder of node and edge features, ``L`` residual blocks that
update every directed edge from (source node, target node, edge) and every node from the mean of
its incoming messages, then ``ReLU(Linear(edge features))`` mean-pooled over each graph's edges.

Two additions to the paper's encoder (both can be switched off: ``probe_dim=0``,
``output_readout=False``): each neuron's probe features (its values at fixed points,
graphs/probe.py; Kofinas et al.) enter its input features through ``Linear(asinh(probe))``, and
the readout adds the mean of ``ReLU(Linear(h))`` over the output neurons, whose probe rows mean
the same thing in every architecture; with ``probe_readout`` (the presets) that readout also maps
each output neuron's probe row to the embedding through a matrix of its channel. Without probe
features 400 CPU steps leave the embeddings of every family but octrees at chance
(benchmarks/unseen_arch.py's ablation rows; ``value_baseline`` keeps them from collapsing, it
does not make them learn).

Optionally (``geometry_dim``, off by default) the last columns of the embedding are a geometry
head: a linear map of the geometry-channel output neuron's probe row and node state and of the
graph's side row (inside/outside at the probe points) only, which
the training model aligns across modalities (SigLIP, L2) and does not decode from
(gmn_inr.cross_modal; :meth:`GMNEncoder.split_geometry`).

Efficiency: the blocks (:class:`GMNLayer`, and :class:`ConcatGMNLayer` as the plain reference)
live in :mod:`gmn_inr.blocks`.

Symmetry. No feature depends on a hidden neuron's index (graphs/layout.py has none; probe rows
move with their neurons), message aggregation is a mean, and pooling is a mean, so permuting the
hidden neurons of an INR (and its weights accordingly) leaves the embedding unchanged up to
float rounding.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from graphs.layout import (DENSITY_CHANNEL, E_LAYER, E_LEVEL, E_TYPE, E_VALUE, EDGE_DIM, LAYER_SCALE, LEVEL_SCALE,
                           N_TYPE, NODE_DIM, NUM_EDGE_TYPES, NUM_NODE_TYPES, NodeType, output_channel)
from graphs.graph import batch_graphs  # noqa: F401  (one batching function; importable from here too)
from gmn_inr.blocks import ConcatGMNLayer, GMNLayer, edge_structure, pooled_relu_linear, shared_sources  # noqa: F401
from graphs.probe import NUM_PROBES

_NODE_REST = [c for c in range(NODE_DIM) if c != N_TYPE]
#: output channels a probe readout tells apart (r, g, b, sigma; implicit functions use one)
MAX_OUTPUTS = 4
_EDGE_REST = [c for c in range(EDGE_DIM) if c not in (E_TYPE, E_VALUE)]
#: the output channel whose neuron carries an INR's geometry: the radiance fields' density (r, g, b,
#: sigma = 0..3); gmn_inr.canonical's geometry mode moves an implicit INR's output neuron there too
GEOMETRY_CHANNEL = DENSITY_CHANNEL
#: the geometry head's side term at init, relative to its row term (``W_s`` drawn as ``W_p``, then
#: scaled): a larger one swamps the row in the head's random start (chosen on training INRs:
#: docs/results/history/implicit_functions.md, "Constants")
SIDE_WEIGHT = 0.25


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of a :class:`GMNEncoder`; stored in checkpoints so an encoder can be rebuilt."""

    hidden: int = 128          #: node and edge feature width inside the network
    layers: int = 4            #: number of message-passing blocks (0: pre-encoder and readout only)
    embed_dim: int = 1024      #: output embedding size (readout width)
    value_freqs: int = 64      #: learned sinusoidal features of each edge's parameter value
    efficient: bool = True     #: project-then-gather block (False: plain concatenation block)
    probe_dim: int = NUM_PROBES  #: width of the graphs' probe features read (0: ignore them)
    output_readout: bool = True  #: add the mean of ReLU(Linear(h)) over each graph's output neurons
    #: the output readout also reads each output neuron's probe row through a linear map of its
    #: own channel (K -> D per channel), so the embedding is not limited to what a width-H node
    #: state kept of the function's values
    probe_readout: bool = False
    #: read each edge's value divided by the RMS of its group (same graph, edge type, layer and
    #: grid level), with log10 of that RMS as a feature of its own: a hash feature (~1e-3) and a
    #: sine weight (~1) then vary on one scale, so a graph's values are not drowned by its structure
    value_norm: bool = False
    #: standardise the pooled embedding per dimension (batch statistics in training, running
    #: statistics in eval, no affine): it removes what every INR shares, which SigLIP's gradient
    #: cannot move (it is orthogonal to a common direction) and which otherwise hides the rest
    embed_norm: bool = False
    #: subtract the embedding of the same graph with every parameter value set to 0 (computed
    #: without gradient): what the architecture alone contributes, the same for every INR of it.
    #: Read from the weights alone, that part is ~1e4 times the per-INR part, so cosines are ~1
    #: and SigLIP's gradient (orthogonal to a shared direction) cannot separate the INRs.
    #: Meant for weights-only encoders: probe rows, where read, are kept in the baseline pass.
    value_baseline: bool = False
    #: the last ``geometry_dim`` columns of the embedding are a geometry head of their own: a linear
    #: map of the geometry-channel output neuron's probe row (:data:`GEOMETRY_CHANNEL`, the canonical
    #: distance of gmn_inr.canonical's geometry mode), one of its node state (zero at init) and one of
    #: the graph's side row (``ParameterGraph.side``: inside/outside where the function tells it), so
    #: it reads no colour row and no edge; the other readouts fill the first ``embed_dim -
    #: geometry_dim`` columns. The training model decodes from those only and applies SigLIP and L2
    #: to the geometry columns only (:meth:`GMNEncoder.split_geometry`). 0: no geometry head.
    geometry_dim: int = 0
    #: compute once per group the nodes that receive no edge and start bit-identical (a hash
    #: grid's hashed entries of one level: :func:`gmn_inr.blocks.shared_sources`); the embedding is
    #: the same function either way, this only skips repeated work (hash graphs: about 4x fewer nodes)
    merge_sources: bool = True

    def validate(self) -> None:
        for k in ("hidden", "embed_dim", "value_freqs"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"EncoderConfig.{k} must be >= 1, got {getattr(self, k)}")
        # zero blocks is the "no message passing" baseline: what the blocks add is measured against it
        if int(self.layers) < 0:
            raise ValueError(f"EncoderConfig.layers must be >= 0, got {self.layers}")
        if int(self.probe_dim) < 0:
            raise ValueError(f"EncoderConfig.probe_dim must be >= 0, got {self.probe_dim}")
        if self.probe_readout and not (self.probe_dim and self.output_readout):
            raise ValueError("EncoderConfig.probe_readout reads the output neurons' probe rows: it needs "
                             "probe_dim > 0 and output_readout=True")
        if not 0 <= int(self.geometry_dim) < int(self.embed_dim):
            raise ValueError(f"EncoderConfig.geometry_dim must be in [0, embed_dim={self.embed_dim}), "
                             f"got {self.geometry_dim}")
        if self.geometry_dim and not self.probe_dim:
            raise ValueError("EncoderConfig.geometry_dim reads the geometry output neuron's probe row: it needs "
                             "probe_dim > 0")


#: named sizes: the paper's (GPU), one that trains in minutes on 2 CPU cores, one for tests
#: the presets read the output neurons' probe rows directly (probe_readout): on the cpu zoo it
#: lifts cross-architecture recall@1 from 79% to 92% (benchmarks/unseen_arch.py's ablation row)
PRESETS: dict[str, EncoderConfig] = {
    "paper": EncoderConfig(hidden=128, layers=4, embed_dim=1024, value_freqs=64, probe_readout=True),
    # cost is linear in edges (~3x fewer matmul FLOPs per edge than hidden 64 / D 256): a batch of
    # 16 cpu-preset INRs (~300k edges) trains in about a second on 2 quiet cores
    "cpu": EncoderConfig(hidden=32, layers=3, embed_dim=128, value_freqs=16, probe_readout=True),
    "tiny": EncoderConfig(hidden=16, layers=2, embed_dim=32, value_freqs=8, probe_readout=True),
}


class GMNEncoder(nn.Module):
    """Graph Meta-Network: a torch_geometric ``Batch`` of parameter graphs -> ``[num_graphs, D]``.

    ``GMNEncoder()`` has the paper's sizes (hidden 128, 4 blocks, embedding 1024);
    ``GMNEncoder.from_preset("cpu" | "paper" | "tiny")`` gives named sizes.
    """

    #: edges per readout chunk (blocks.pooled_relu_linear): its [chunk, D] activations stay in cache,
    #: and inference memory is bounded
    READOUT_CHUNK = 4096

    def __init__(self, hidden: int = 128, layers: int = 4, embed_dim: int = 1024,
                 value_freqs: int = 64, efficient: bool = True, probe_dim: int = NUM_PROBES,
                 output_readout: bool = True, probe_readout: bool = False, value_norm: bool = False,
                 embed_norm: bool = False, value_baseline: bool = False, geometry_dim: int = 0,
                 merge_sources: bool = True):
        super().__init__()
        self.config = EncoderConfig(hidden, layers, embed_dim, value_freqs, efficient, probe_dim, output_readout,
                                    probe_readout, value_norm, embed_norm, value_baseline, geometry_dim,
                                    merge_sources)
        self.config.validate()
        h = hidden
        rest = embed_dim - geometry_dim           # the columns of the edge / output-neuron readouts
        # pre-encoder: type codes through embedding tables, the scaled columns through a
        # linear map plus learned sinusoids (Lim et al. use sin(Linear(.)) of each feature)
        self.node_type = nn.Embedding(NUM_NODE_TYPES, h)
        self.node_sin = nn.Linear(len(_NODE_REST), h)
        self.node_lin = nn.Linear(len(_NODE_REST) + h, h)
        self.edge_type = nn.Embedding(NUM_EDGE_TYPES, h)
        self.value_sin = nn.Linear(1, value_freqs)
        self.edge_sin = nn.Linear(len(_EDGE_REST), h)
        n_value = 2 if value_norm else 1              # (value / group RMS, log10 RMS) or the raw value
        self.edge_lin = nn.Linear(n_value + value_freqs + len(_EDGE_REST) + h, h)
        with torch.no_grad():
            # parameter values span orders of magnitude (hash features ~1e-3, sine weights ~1):
            # start the value frequencies log-spaced over [1, 300] so small values are resolved;
            # normalised values are O(1) and need only [0.5, 8]
            lo, hi = (0.5, 8.0) if value_norm else (1.0, 300.0)
            f = torch.logspace(math.log10(lo), math.log10(hi), value_freqs)
            sign = torch.where(torch.arange(value_freqs) % 2 == 0, 1.0, -1.0)
            self.value_sin.weight.copy_((f * sign).unsqueeze(1))
            self.value_sin.bias.uniform_(-math.pi, math.pi)
        # probe features: each neuron's activations at the fixed probe points (graphs/probe.py)
        self.node_probe = nn.Linear(probe_dim, h) if probe_dim else None
        block = GMNLayer if efficient else ConcatGMNLayer
        self.blocks = nn.ModuleList([block(h) for _ in range(layers)])
        self.readout = nn.Linear(h, rest)
        # the edge mean weighs a network by its storage (a hash grid's entries outnumber its MLP
        # weights 5:1), so what the output neurons know, the same kind of thing in every
        # architecture, would be a small share of it: read them out on their own as well
        self.output_readout = nn.Linear(h, rest) if output_readout else None
        # one K -> D map per output channel (r, g, b, sigma differ in meaning), stored as [K, C*D]
        self.probe_readout = (nn.Linear(probe_dim, MAX_OUTPUTS * rest, bias=False) if probe_readout else None)
        if embed_norm:
            self.register_buffer("embed_mean", torch.zeros(rest))
            self.register_buffer("embed_var", torch.ones(rest))
        # created last, so that without it every other parameter draws the same initial values
        self.geometry_probe = self.geometry_state = self.geometry_side = None
        if geometry_dim:
            self.geometry_probe = nn.Linear(probe_dim, geometry_dim, bias=False)
            self.geometry_state = nn.Linear(h, geometry_dim, bias=False)
            with torch.no_grad():
                # at init the head is a random projection of the canonical geometry row (cosines
                # roughly kept); what message passing adds is learned from 0
                self.geometry_state.weight.zero_()
            # the graph's side row (ParameterGraph.side): an SDF's or occupancy's inside/outside at the
            # probe points, which an unsigned row loses; drawn last, so the other weights start as before
            self.geometry_side = nn.Linear(probe_dim, geometry_dim, bias=False)
            with torch.no_grad():
                self.geometry_side.weight.mul_(SIDE_WEIGHT)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "GMNEncoder":
        """``"paper"`` (128/4/1024), ``"cpu"`` (32/3/128) or ``"tiny"`` (16/2/32); keyword overrides.
        Overrides that switch off the probe features or the output readout also switch off the
        preset's ``probe_readout`` (which reads both), unless it is given too."""
        if name not in PRESETS:
            raise ValueError(f"unknown encoder preset {name!r}; known: {', '.join(PRESETS)}")
        cfg = {**asdict(PRESETS[name]), **overrides}
        if "probe_readout" not in overrides and not (cfg["probe_dim"] and cfg["output_readout"]):
            cfg["probe_readout"] = False
        return cls(**cfg)

    @classmethod
    def from_config(cls, config: dict | EncoderConfig) -> "GMNEncoder":
        d = asdict(config) if isinstance(config, EncoderConfig) else dict(config)
        unknown = set(d) - set(asdict(EncoderConfig()))
        if unknown:
            raise ValueError(f"unknown encoder config keys {sorted(unknown)}")
        return cls(**d)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def decoded_dim(self) -> int:
        """Width of the columns before the geometry head (all of them without one): ``embed_dim -
        geometry_dim``."""
        return self.config.embed_dim - self.config.geometry_dim

    def split_geometry(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z [..., embed_dim]`` -> ``(rest [..., embed_dim - geometry_dim], geometry [..., geometry_dim])``
        (views; geometry is empty without a geometry head)."""
        return z[..., :self.decoded_dim], z[..., self.decoded_dim:]

    # -- input checks ------------------------------------------------------------------
    @staticmethod
    def _check(x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != NODE_DIM:
            raise ValueError(f"node features must be [N, {NODE_DIM}] (graphs/layout.py), got {tuple(x.shape)}")
        if edge_attr.dim() != 2 or edge_attr.shape[1] != EDGE_DIM:
            raise ValueError(f"edge features must be [E, {EDGE_DIM}] (graphs/layout.py), got {tuple(edge_attr.shape)}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.shape[1] != edge_attr.shape[0]:
            raise ValueError(f"edge_index must be [2, E] with E = {edge_attr.shape[0]}, got {tuple(edge_index.shape)}")
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= x.shape[0]):
            raise ValueError(f"edge_index refers to nodes outside [0, {x.shape[0]})")
        for name, col, n in (("node type", x[:, N_TYPE], NUM_NODE_TYPES), ("edge type", edge_attr[:, E_TYPE], NUM_EDGE_TYPES)):
            if col.numel() and (float(col.min()) < 0 or float(col.max()) >= n):
                raise ValueError(f"{name} codes must lie in [0, {n}), got [{float(col.min())}, {float(col.max())}]")

    # -- forward -------------------------------------------------------------------------
    def encode_nodes(self, x: torch.Tensor, probe: Optional[torch.Tensor] = None,
                     probe_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pre-encoder of node features ``x [N, NODE_DIM]`` (and probe features ``probe [M, K]`` of
        the nodes ``probe_index [M]``) -> ``[N, H]``."""
        rest = x[:, _NODE_REST]
        h = self.node_lin(torch.cat([rest, torch.sin(self.node_sin(rest))], dim=-1))
        h = h + self.node_type(x[:, N_TYPE].long())
        if self.node_probe is not None:
            # activations range from ~1e-3 (hash features) to tens (raw densities): asinh keeps
            # the sign, is linear near 0 and logarithmic beyond
            h = h.index_add(0, probe_index, self.node_probe(torch.asinh(probe)))
        return h

    def encode_edges(self, edge_attr: torch.Tensor, edge_graph: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pre-encoder of edge features: ``[E, EDGE_DIM] -> [E, H]`` (``edge_graph [E]``: each
        edge's graph, needed by ``value_norm``; None = one graph)."""
        value = edge_attr[:, E_VALUE:E_VALUE + 1]
        rest = edge_attr[:, _EDGE_REST]
        if self.config.value_norm:
            value, log_rms = self._normalised_values(edge_attr, edge_graph)
            first = torch.cat([value, log_rms], dim=-1)
        else:
            first = value
        feats = torch.cat([first, torch.sin(self.value_sin(value)), rest, torch.sin(self.edge_sin(rest))], dim=-1)
        return self.edge_lin(feats) + self.edge_type(edge_attr[:, E_TYPE].long())

    @staticmethod
    def _normalised_values(edge_attr: torch.Tensor, edge_graph: Optional[torch.Tensor]):
        """``(value / RMS of its group, log10(RMS) / 4)``, each ``[E, 1]``; a group is one graph's
        edges of one type, layer and grid level."""
        if edge_graph is None:
            edge_graph = edge_attr.new_zeros(edge_attr.shape[0], dtype=torch.long)
        etype = edge_attr[:, E_TYPE].long()
        layer = (edge_attr[:, E_LAYER] * LAYER_SCALE).round().long().clamp(-1, 30) + 1       # [0, 32)
        level = (edge_attr[:, E_LEVEL] * LEVEL_SCALE).round().long().clamp(0, 16)            # [0, 17)
        key = ((edge_graph * NUM_EDGE_TYPES + etype) * 32 + layer) * 17 + level
        v = edge_attr[:, E_VALUE]
        n_keys = int(key.max()) + 1 if key.numel() else 1
        sq = v.new_zeros(n_keys).index_add_(0, key, v * v)
        cnt = torch.bincount(key, minlength=n_keys).clamp_min(1).to(v.dtype)
        rms = (sq / cnt).sqrt().clamp_min(1e-12).index_select(0, key)
        return (v / rms).unsqueeze(1), (torch.log10(rms) / 4).unsqueeze(1)

    def forward(self, batch) -> torch.Tensor:
        """``batch``: a torch_geometric ``Batch`` (or one ``Data``) with ``x [N, 10]``,
        ``edge_index [2, E]``, ``edge_attr [E, 9]`` (and ``batch [N]``; ``probe [M, K]`` and
        ``probe_index [M]`` unless ``probe_dim=0``) -> ``[num_graphs, D]``."""
        x, edge_index, edge_attr = batch.x, batch.edge_index, batch.edge_attr
        self._check(x, edge_index, edge_attr)
        node_graph = getattr(batch, "batch", None)
        if node_graph is None:
            node_graph = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            num_graphs = 1
        else:
            num_graphs = int(batch.num_graphs)
        dtype = self.readout.weight.dtype            # graphs are float32; follow the encoder's dtype
        x = x.to(dtype)
        edge_attr = edge_attr.to(dtype)
        probe, probe_index = self._probe_inputs(batch, x.shape[0], dtype)
        src, dst = edge_index[0], edge_index[1]
        deg = torch.bincount(dst, minlength=x.shape[0]).clamp_min(1)
        inv_deg = (1.0 / deg.to(x.dtype)).unsqueeze(1)            # nodes without inputs get a = 0
        edge_graph = node_graph.index_select(0, src)
        # found once per forward: the value-baseline pass below runs the same graph again
        merged = shared_sources(x, dst, probe_index) if self.config.merge_sources and len(self.blocks) else None
        args = (x, src, dst, inv_deg, edge_graph, node_graph, num_graphs, probe, probe_index, merged)
        z = self._embed(edge_attr, *args)
        z, geometry = self.split_geometry(z)      # value_baseline and embed_norm act on the rest only
        if self.config.value_baseline:
            with torch.no_grad():
                zero = edge_attr.clone()
                zero[:, E_VALUE] = 0
                base = self.split_geometry(self._embed(zero, *args))[0]
            z = z - base
        if self.config.embed_norm:
            # batch statistics need two graphs; a single graph in training uses the running ones
            z = F.batch_norm(z, self.embed_mean, self.embed_var, training=self.training and num_graphs > 1,
                             momentum=0.1, eps=1e-5)
        if self.geometry_side is not None:
            geometry = geometry + self._side_term(batch, num_graphs, dtype)
        return torch.cat([z, geometry], dim=1) if self.geometry_probe is not None else z

    def _side_term(self, batch, num_graphs: int, dtype: torch.dtype) -> torch.Tensor:
        """``W_s side`` of every graph, ``[G, geometry_dim]`` (``side [G, K]``, ParameterGraph.side);
        0 for a batch without side rows."""
        side = getattr(batch, "side", None)
        if side is None:
            return self.geometry_side.weight.new_zeros(num_graphs, self.geometry_side.out_features)
        if side.shape != (num_graphs, self.config.probe_dim):
            raise ValueError(f"side rows must be [G={num_graphs}, {self.config.probe_dim}], got {tuple(side.shape)}")
        return self.geometry_side(side.to(dtype))

    def _embed(self, edge_attr, x, src, dst, inv_deg, edge_graph, node_graph, num_graphs, probe, probe_index, merged):
        """Pre-encoder, blocks and readout: ``[G, D]`` before ``embed_norm``. ``merged``:
        :func:`shared_sources` of the graph (None: the blocks run every node)."""
        if merged is None:
            h = self.encode_nodes(x, probe, probe_index)
            b_src, b_dst, b_inv = src, dst, inv_deg
        else:                      # the blocks run on one node per group of identical sources
            keep, node_map = merged
            h = self.encode_nodes(x.index_select(0, keep), probe,
                                  None if probe_index is None else node_map.index_select(0, probe_index))
            b_src, b_dst, b_inv = node_map.index_select(0, src), node_map.index_select(0, dst), inv_deg.index_select(0, keep)
        e = self.encode_edges(edge_attr, edge_graph)
        # the receivers' and senders' orderings are the same for every block: sorted once per forward
        structure = edge_structure(b_src, b_dst, h.shape[0]) if any(isinstance(b, GMNLayer) for b in self.blocks) else None
        for block in self.blocks:
            h, e = block(h, e, b_src, b_dst, b_inv, structure)
        if merged is not None:
            h = h.index_select(0, merged[1])                   # every node's state, for the readouts
        return self._readout(h, e, x, edge_graph, node_graph, num_graphs, probe, probe_index)

    def _probe_inputs(self, batch, n_nodes: int, dtype: torch.dtype):
        """``(probe [M, K], probe_index [M])`` of a batch, checked; ``(None, None)`` if not read."""
        if self.node_probe is None:
            return None, None
        probe, probe_index = getattr(batch, "probe", None), getattr(batch, "probe_index", None)
        k = self.config.probe_dim
        if probe is None or probe_index is None:
            raise ValueError(f"this encoder reads probe features (probe_dim={k}) but the graphs have none; "
                             "convert with graphs.to_graph (fields and nn.Sequential get them) or build "
                             "the encoder with probe_dim=0")
        if probe.dim() != 2 or probe.shape[1] != k or probe_index.shape != (probe.shape[0],):
            raise ValueError(f"probe features must be [M, {k}] with probe_index [M], got {tuple(probe.shape)} "
                             f"and {tuple(probe_index.shape)}")
        if probe_index.numel() and (int(probe_index.min()) < 0 or int(probe_index.max()) >= n_nodes):
            raise ValueError(f"probe_index refers to nodes outside [0, {n_nodes})")
        return probe.to(dtype), probe_index

    def _readout(self, h: torch.Tensor, e: torch.Tensor, x: torch.Tensor, edge_graph: torch.Tensor,
                 node_graph: torch.Tensor, num_graphs: int, probe: Optional[torch.Tensor] = None,
                 probe_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean over each graph's edges of ``ReLU(Linear(e))`` (+ the same over its output neurons'
        ``h``, with their probe rows when ``probe_readout``): ``h [N, H]``, ``e [E, H]``, node
        features ``x [N, NODE_DIM]``, ``probe [M, K]`` of nodes ``probe_index [M]`` -> ``[G, D]``."""
        pooled = pooled_relu_linear(e, edge_graph, num_graphs, self.readout, self.READOUT_CHUNK)
        n_edges = torch.bincount(edge_graph, minlength=num_graphs).clamp_min(1).to(pooled.dtype)
        pooled = pooled / n_edges.unsqueeze(1)
        if self.output_readout is not None:
            is_out = x[:, N_TYPE] == int(NodeType.OUTPUT)                                  # [N]
            g_out = node_graph[is_out]
            n_out = torch.bincount(g_out, minlength=num_graphs).clamp_min(1).to(pooled.dtype)
            pre = self.output_readout(h[is_out])                                           # [N_out, D]
            if self.probe_readout is not None:
                pre = pre + self._output_probe_term(x, is_out, probe, probe_index)
            per_node = torch.relu(pre)
            pooled = pooled + pooled.new_zeros(pooled.shape).index_add(0, g_out, per_node) / n_out.unsqueeze(1)
        if self.geometry_probe is not None:
            pooled = torch.cat([pooled, self._geometry_readout(h, x, node_graph, num_graphs, probe, probe_index)], 1)
        return pooled

    def _geometry_readout(self, h: torch.Tensor, x: torch.Tensor, node_graph: torch.Tensor, num_graphs: int,
                          probe: torch.Tensor, probe_index: torch.Tensor) -> torch.Tensor:
        """The geometry head: per graph, the mean over its output neurons of channel
        :data:`GEOMETRY_CHANNEL` of ``W_p asinh(p_o) + W_h h_o`` (linear: no ReLU, so the projection
        keeps the rows' cosines), ``h [N, H]``, ``x [N, NODE_DIM]``, ``probe [M, K]`` of nodes
        ``probe_index [M]`` -> ``[G, geometry_dim]``; 0 for a graph without such a neuron."""
        node_x = x.index_select(0, probe_index)                                        # [M, NODE_DIM]
        is_geo = (node_x[:, N_TYPE] == int(NodeType.OUTPUT)) & (output_channel(node_x) == GEOMETRY_CHANNEL)  # [M]
        nodes = probe_index[is_geo]                                                    # [M_geo]
        per_node = self.geometry_probe(torch.asinh(probe[is_geo])) + self.geometry_state(h.index_select(0, nodes))
        g = node_graph.index_select(0, nodes)                                          # [M_geo]
        count = torch.bincount(g, minlength=num_graphs).clamp_min(1).to(per_node.dtype)
        out = per_node.new_zeros(num_graphs, per_node.shape[1]).index_add(0, g, per_node)
        return out / count.unsqueeze(1)

    def _output_probe_term(self, x: torch.Tensor, is_out: torch.Tensor, probe: torch.Tensor,
                           probe_index: torch.Tensor) -> torch.Tensor:
        """``W_c asinh(p_o)`` for every output neuron ``o`` of channel ``c``: ``[N_out, D]``."""
        rows = is_out.index_select(0, probe_index)          # probe rows that belong to output neurons
        p = probe[rows]                                     # node order: probe_index ascends, as is_out
        n_out = int(is_out.sum())
        if p.shape[0] != n_out:
            raise ValueError(f"probe_readout needs a probe row for every output neuron: {n_out} output neurons, "
                             f"{p.shape[0]} rows")
        chan = output_channel(x[is_out])
        if n_out and (int(chan.min()) < 0 or int(chan.max()) >= MAX_OUTPUTS):
            raise ValueError(f"probe_readout reads at most {MAX_OUTPUTS} output channels, got channel {int(chan.max())}")
        d = self.decoded_dim
        per_chan = self.probe_readout(torch.asinh(p)).view(n_out, MAX_OUTPUTS, d)      # [N_out, C, D]
        return per_chan.gather(1, chan.view(-1, 1, 1).expand(-1, 1, d)).squeeze(1)

    def to_plain(self) -> "GMNEncoder":
        """A copy whose blocks are :class:`ConcatGMNLayer` computing the same function."""
        plain = GMNEncoder(**{**asdict(self.config), "efficient": False})
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("blocks.")}
        plain.load_state_dict(state, strict=False)
        for i, blk in enumerate(self.blocks):
            plain.blocks[i] = ConcatGMNLayer.from_efficient(blk)
        return plain.to(next(self.parameters()).device)
