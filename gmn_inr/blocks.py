"""The message-passing blocks of the Graph Meta-Network (:mod:`gmn_inr.encoder`).

Efficiency (the block is linear in edges, so edge work dominates). A linear map of a per-edge
concatenation ``W [x_i; x_j; e_ij]`` equals ``W_s x_i + W_t x_j + W_e e_ij``; the node terms are
projected once per *node* and then gathered per edge, so per edge only the ``W_e e`` products
remain (3 H x H products per block instead of 6, and no ``[E, 3H]`` concatenation copies).
Per node it does ``W1s x, W2s x, W3x x`` (one product) and ``Wx``; ``W1t x`` and ``W3a a`` only for
the few nodes that receive edges (~200 of up to ~17k in a field's graph). Matmul work per block is
``3E + 4N + 2R`` H x H products against the plain block's ``6E + 3N``: the ratio is under 2 where
nodes are not negligible (hash grids, N ~ 0.4 E: 1.56), and on CPU the time ratio follows it
(``benchmarks/encoder_speed.py --goal-only``). The encoder therefore runs its blocks on one node
per group of identical nodes that receive no edge (:func:`shared_sources`: a hash grid's hashed
entries), which takes a paper-sized hash graph from 16,588 to 4,310 nodes (FLOP ratio 2.1). The block is one autograd node with a hand-written
backward, so training pays no zero-filled gather gradients or accumulation copies.
:class:`ConcatGMNLayer` is the plain per-edge-concatenation block kept as a reference: it
computes the same function (see :meth:`ConcatGMNLayer.from_efficient`) and
``benchmarks/encoder_speed.py`` times the two side by side.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn


class _GMNBlock(nn.Module):
    """What both forms of the block share: the two LayerNorms, the node update ``W3`` and the
    residual output maps, and the node half of the update."""

    def __init__(self, hidden: int):
        super().__init__()
        h = hidden
        self.hidden = h
        self.ln_x = nn.LayerNorm(h)
        self.ln_e = nn.LayerNorm(h)
        self.build_edge_parts(h)              # registered here so parameter (and init) order is fixed
        self.node_upd = nn.Linear(2 * h, h)   # W3: per node, cheap
        self.node_out = nn.Linear(h, h)
        self.edge_out = nn.Linear(h, h)

    def build_edge_parts(self, h: int) -> None:
        """Create the form-specific layers of ``W1`` and ``W2``."""
        raise NotImplementedError

    def update_nodes(self, x: torch.Tensor, xn: torch.Tensor, m: torch.Tensor, dst: torch.Tensor,
                     inv_deg: torch.Tensor) -> torch.Tensor:
        """``x <- x + Wx SiLU(ReLU(W3 [LN x_j; mean_i m_ij]))`` for messages ``m [E, H]``."""
        agg = x.new_zeros(x.shape[0], self.hidden).index_add_(0, dst, m) * inv_deg     # mean of incoming
        x1 = torch.relu(self.node_upd(torch.cat([xn, agg], dim=-1)))
        return x + self.node_out(F.silu(x1))


class EdgeStructure(NamedTuple):
    """What every block of one forward needs of ``(src, dst)`` beyond the edges themselves, computed
    once per forward (:func:`edge_structure`) instead of once per block and once per backward.
    ``recv [R]`` the nodes with incoming edges, ``recv_of_edge [E]`` each edge's index among them,
    ``by_recv [E]`` the edges ordered by receiver, ``recv_start [R]`` where each receiver's edges
    start; ``by_src [E]``, ``src_start [N]`` the same by source (the backward's scatters)."""

    recv: torch.Tensor
    recv_of_edge: torch.Tensor
    by_recv: torch.Tensor
    recv_start: torch.Tensor
    by_src: torch.Tensor
    src_start: torch.Tensor


def edge_structure(src: torch.Tensor, dst: torch.Tensor, n: int) -> EdgeStructure:
    """The :class:`EdgeStructure` of a graph with ``n`` nodes and edges ``src -> dst [E]``."""
    count = torch.bincount(dst, minlength=n)
    recv = count.nonzero().squeeze(1)
    slot = torch.empty(n, dtype=torch.long, device=dst.device)
    slot[recv] = torch.arange(recv.shape[0], device=dst.device)
    by_recv = torch.sort(dst, stable=True).indices
    count_r = count.index_select(0, recv)
    recv_start = torch.cumsum(count_r, 0) - count_r
    count_s = torch.bincount(src, minlength=n)
    by_src = torch.sort(src, stable=True).indices
    return EdgeStructure(recv, slot.index_select(0, dst), by_recv, recv_start, by_src,
                         torch.cumsum(count_s, 0) - count_s)


#: odd 63-bit multipliers that fold a node's feature bits into one int64 key (:func:`shared_sources`)
_KEY_MULTIPLIERS = (torch.randint(1, 2 ** 62, (64,), generator=torch.Generator().manual_seed(14)) * 2 + 1)


def shared_sources(x: torch.Tensor, dst: torch.Tensor, keep_nodes: Optional[torch.Tensor] = None):
    """Which nodes every block computes identically, so a forward can compute each group once.

    A node that receives no edge is updated from its own state alone (its message mean is 0), so
    two such nodes that start bit-identical stay identical through every block, whatever their
    outgoing edges carry: a hash grid's hashed entries of one level (3 in 4 of a hash graph's
    nodes) are such nodes. ``x [N, F]`` the nodes' input features, ``dst [E]`` the edges'
    receivers, ``keep_nodes [M]`` nodes never to merge (those that read a probe row). Returns
    ``None`` when no two nodes merge, else ``(keep [N'], node_map [N])``: the nodes kept (one per
    group, in node order) and each node's index among them. Rows merge only when their bits are
    equal (a collision of the folded key is checked and left unmerged)."""
    n = x.shape[0]
    free = torch.bincount(dst, minlength=n) == 0
    if keep_nodes is not None and keep_nodes.numel():
        free[keep_nodes] = False
    cand = free.nonzero().squeeze(1)
    if cand.numel() < 2 or x.shape[1] > _KEY_MULTIPLIERS.shape[0]:
        return None
    bits = x.index_select(0, cand).contiguous()
    bits = bits.view(torch.int32 if bits.element_size() == 4 else torch.int64).long()     # [C, F]
    key = (bits * _KEY_MULTIPLIERS[:x.shape[1]].to(bits.device)).sum(1)                   # wraps: a hash
    uniq, inv = torch.unique(key, return_inverse=True)
    if uniq.shape[0] == cand.shape[0]:
        return None
    first = torch.full((uniq.shape[0],), n, dtype=torch.long, device=x.device).scatter_reduce_(0, inv, cand, "amin")
    rep = first.index_select(0, inv)                                                      # [C]
    pos = torch.full((n,), -1, dtype=torch.long, device=x.device)
    pos[cand] = torch.arange(cand.shape[0], device=x.device)
    same = (bits == bits.index_select(0, pos.index_select(0, rep))).all(1)
    target = torch.arange(n, device=x.device)
    target[cand[same]] = rep[same]
    keep = (target == torch.arange(n, device=x.device)).nonzero().squeeze(1)
    slot = torch.empty(n, dtype=torch.long, device=x.device)
    slot[keep] = torch.arange(keep.shape[0], device=x.device)
    return keep, slot.index_select(0, target)


class _GMNBlockFn(torch.autograd.Function):
    """The efficient block as one autograd node, with a hand-written backward.

    Autograd of the composed ops keeps an ``[E, H]`` temporary per op (zero-filled gather
    gradients, accumulation adds, activation masks); here every per-edge pass is counted: the
    backward is 6 ``[E, H] x [H, H]`` products (weights' and inputs' gradients of the 3 edge
    products) plus ~8 elementwise ``[E, H]`` passes, and per node a few ``[N, H]`` ones.
    Inputs: ``x, e, src, inv_deg``, the fields of an :class:`EdgeStructure`, then the block's
    parameters in :meth:`GMNLayer._params` order. ``inv_deg`` gets no gradient.
    """

    @staticmethod
    def forward(ctx, x, e, src, inv_deg, recv, recv_of_edge, by_recv, recv_start, by_src, src_start, eps_x, eps_e,
                gx, bx, ge, be, wp, w1e, b1, w2e, b2, w3, b3, wo, bo, weo, beo):
        h, n = x.shape[1], x.shape[0]
        xn, mean_x, rstd_x = torch.native_layer_norm(x, [h], gx, bx, eps_x)
        u, mean_e, rstd_e = torch.native_layer_norm(e, [h], ge, be, eps_e)
        # per node: [W1s x] into the gather table's first N rows, [W2s x + b2 | W3x x + b3] beside it;
        # W1t x_j + b1 only for the R receivers (every edge has one receiver: b1 counts once)
        xr = xn.index_select(0, recv)
        table = torch.cat([xn @ wp[:h].t(), torch.addmm(b1, xr, wp[2 * h:].t())])       # [N + R, H]
        p23 = torch.addmm(torch.cat([b2, b3]), xn, torch.cat([wp[h:2 * h], w3[:, :h]]).t())  # [N, 2H]
        p2, p3 = p23[:, :h], p23[:, h:]
        # e' = ReLU(W1s x_i + W1t x_j + b1 + W1e LN e): both gathers in one pass (a bag of 2 rows)
        pair = torch.stack([src, recv_of_edge + n], dim=1)
        e1 = F.embedding_bag(pair, table, mode="sum").addmm_(u, w1e.t()).relu_()
        m = p2.index_select(0, src).addmm_(e1, w2e.t()).relu_()
        # mean of each receiver's messages (edges sorted by receiver, one bag each)
        agg = F.embedding_bag(by_recv, m, recv_start, mode="sum").mul_(inv_deg.index_select(0, recv))
        x1 = p3.index_add_(0, recv, agg @ w3[:, h:].t()).relu_()           # W3 [LN x; a], a = 0 if none
        s3 = F.silu(x1)
        x_new = (x + bo).addmm_(s3, wo.t())
        s1 = F.silu(e1)
        e_new = (e + beo).addmm_(s1, weo.t())
        ctx.save_for_backward(x, mean_x, rstd_x, xn, xr, e, mean_e, rstd_e, u, e1, m, agg, x1, s3, s1,
                              src, inv_deg, recv, recv_of_edge, by_recv, recv_start, by_src, src_start,
                              gx, bx, ge, be, wp, w1e, w2e, w3, wo, weo)
        return x_new, e_new

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_x, g_e):
        (x, mean_x, rstd_x, xn, xr, e, mean_e, rstd_e, u, e1, m, agg, x1, s3, s1, src, inv_deg, recv, recv_of_edge,
         by_recv, recv_start, by_src, src_start, gx, bx, ge, be, wp, w1e, w2e, w3, wo, weo) = ctx.saved_tensors
        h, n = x.shape[1], x.shape[0]
        if g_x is None:
            g_x = torch.zeros_like(x)
        if g_e is None:
            g_e = torch.zeros_like(e)
        tb = torch.ops.aten.threshold_backward
        # residual outputs: x_new = x + Wo s3 + bo, e_new = e + Weo s1 + beo
        g_wo, g_bo = g_x.t() @ s3, g_x.sum(0)
        g_weo, g_beo = g_e.t() @ s1, g_e.sum(0)
        g_z3 = tb(torch.ops.aten.silu_backward(g_x @ wo, x1), x1, 0)         # [N, H]: grad of W3 [LN x; a] + b3
        g_e1 = torch.ops.aten.silu_backward(g_e @ weo, e1)                    # [E, H]
        # node update: z3 = p3 (+ W3a a on receivers)
        g_z3r = g_z3.index_select(0, recv)
        g_w3a = g_z3r.t() @ agg
        g_sum = (g_z3r @ w3[:, h:]).mul_(inv_deg.index_select(0, recv))      # [R, H] grad of each message sum
        # messages: m = ReLU(p2[src] + W2e e1)
        g_z2 = g_sum.index_select(0, recv_of_edge)
        tb(g_z2, m, 0, grad_input=g_z2)
        g_w2e = g_z2.t() @ e1
        g_e1.addmm_(g_z2, w2e)
        tb(g_e1, e1, 0, grad_input=g_e1)                                      # now the grad of e1's pre-activation
        g_w1e = g_e1.t() @ u
        g_u = g_e1 @ w1e
        # per-node gradients [g p1 | g p2 | g p3] from the edges' scatters, then one product back to LN x
        # scatters as bags over edges sorted by node (a gathering sum: faster than index_add_)
        g_p = torch.cat([F.embedding_bag(by_src, g_e1, src_start, mode="sum"),
                         F.embedding_bag(by_src, g_z2, src_start, mode="sum"), g_z3], dim=1)   # [N, 3H]
        g_t = F.embedding_bag(by_recv, g_e1, recv_start, mode="sum")             # [R, H]
        w_node = torch.cat([wp[:2 * h], w3[:, :h]])                            # [3H, H]: W1s, W2s, W3x
        g_xn = g_p @ w_node
        g_xn.index_add_(0, recv, g_t @ wp[2 * h:])
        g_wnode = g_p.t() @ xn
        g_w1t = g_t.t() @ xr
        g_b1, g_b2, g_b3 = g_t.sum(0), g_p[:, h:2 * h].sum(0), g_p[:, 2 * h:].sum(0)
        g_xin, g_gx, g_bx = torch.ops.aten.native_layer_norm_backward(g_xn, x, [h], mean_x, rstd_x, gx, bx,
                                                                      [True, gx is not None, bx is not None])
        g_ein, g_ge, g_be = torch.ops.aten.native_layer_norm_backward(g_u, e, [h], mean_e, rstd_e, ge, be,
                                                                      [True, ge is not None, be is not None])
        g_wp = torch.cat([g_wnode[:2 * h], g_w1t])
        g_w3 = torch.cat([g_wnode[2 * h:], g_w3a], dim=1)
        return (g_xin.add_(g_x), g_ein.add_(g_e), None, None, None, None, None, None, None, None, None, None,
                g_gx, g_bx, g_ge, g_be, g_wp, g_w1e, g_b1, g_w2e, g_b2, g_w3, g_b3, g_wo, g_bo, g_weo, g_beo)


class GMNLayer(_GMNBlock):
    """One residual edge/node block, computed efficiently (project per node, gather per edge).

    For edge ``i -> j`` (``LN`` = LayerNorm, shared per block for nodes and for edges):
    ``e' = ReLU(W1 [LN x_i; LN x_j; LN e])``, ``m = ReLU(W2 [LN x_i; e'])``,
    ``a_j = mean_i m_ij``, ``x' = ReLU(W3 [LN x_j; a_j])``,
    ``x <- x + Wx SiLU(x')``, ``e <- e + We SiLU(e')``.
    """

    def build_edge_parts(self, h: int) -> None:
        # node-side parts of W1 (source, target) and W2 (source), one product per node
        self.node_proj = nn.Linear(h, 3 * h, bias=False)
        self.edge_w1 = nn.Linear(h, h)        # edge part of W1 (+ W1's bias)
        self.edge_w2 = nn.Linear(h, h)        # e' part of W2 (+ W2's bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                inv_deg: torch.Tensor, structure: Optional[EdgeStructure] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, H]``, ``e [E, H]``, ``src, dst [E]`` long, ``inv_deg [N, 1]`` -> new ``(x, e)``.
        ``structure``: :func:`edge_structure` of ``(src, dst)`` when the caller shares it between blocks."""
        if structure is None:
            structure = edge_structure(src, dst, x.shape[0])
        if torch.is_autocast_enabled(x.device.type):
            return self.forward_composed(x, e, src, dst, inv_deg, structure)   # the hand-written backward is one dtype
        return _GMNBlockFn.apply(x, e, src, inv_deg, *structure, self.ln_x.eps, self.ln_e.eps, *self._params())

    def _params(self) -> list[torch.Tensor]:
        return [self.ln_x.weight, self.ln_x.bias, self.ln_e.weight, self.ln_e.bias, self.node_proj.weight,
                self.edge_w1.weight, self.edge_w1.bias, self.edge_w2.weight, self.edge_w2.bias,
                self.node_upd.weight, self.node_upd.bias, self.node_out.weight, self.node_out.bias,
                self.edge_out.weight, self.edge_out.bias]

    def forward_composed(self, x: torch.Tensor, e: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                         inv_deg: torch.Tensor, structure: Optional[EdgeStructure] = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from autograd-differentiated torch ops (autocast, double backward)."""
        h, n = self.hidden, x.shape[0]
        recv, recv_of_edge, by_recv, recv_start = (structure or edge_structure(src, dst, n))[:4]
        xn = self.ln_x(x)
        wp, w3 = self.node_proj.weight, self.node_upd.weight      # wp rows [W1s; W2s; W1t]; w3 = [W3x | W3a]
        # every node's own terms in one product, each layer's bias folded in once per node:
        # [W1s x + b1 | W2s x + b2 | W3x x + b3]; every edge has one source, so the biases count once
        bias = torch.cat([self.edge_w1.bias, self.edge_w2.bias, self.node_upd.bias])
        p1, p2, p3 = torch.addmm(bias, xn, torch.cat([wp[:2 * h], w3[:, :h]]).t()).split(h, dim=1)
        # W1t x_j only for receiving nodes (a few hundred in a field's graph, of up to ~17k)
        t = xn.index_select(0, recv) @ wp[2 * h:].t()             # [R, H]
        # W1s x_i + W1t x_j for every edge in one gathering pass (a bag of two rows per edge)
        pair = torch.stack([src, recv_of_edge + n], dim=1)        # [E, 2] rows of the [p1; t] table
        pre = F.embedding_bag(pair, torch.cat([p1, t]), mode="sum")
        e1 = torch.relu_(pre.addmm_(self.ln_e(e), self.edge_w1.weight.t()))
        m = torch.relu_(p2.index_select(0, src).addmm_(e1, self.edge_w2.weight.t()))
        # mean of each receiver's messages: a bag per receiver (edges sorted by receiver)
        agg = F.embedding_bag(by_recv, m, recv_start, mode="sum") * inv_deg.index_select(0, recv)   # [R, H]
        # W3 [LN x_j; a_j] = W3x x_j + W3a a_j, and a_j = 0 where nothing arrives
        z3 = p3.index_add(0, recv, agg @ w3[:, h:].t())
        x = (x + self.node_out.bias).addmm_(F.silu(torch.relu(z3)), self.node_out.weight.t())
        e = (e + self.edge_out.bias).addmm_(F.silu(e1), self.edge_out.weight.t())
        return x, e


class ConcatGMNLayer(_GMNBlock):
    """The same block written plainly: concatenate ``(x_src, x_dst, e)`` per edge, then an MLP.

    Reference for tests and ``benchmarks/encoder_speed.py``; ~2x the FLOPs of :class:`GMNLayer`.
    """

    def build_edge_parts(self, h: int) -> None:
        self.w1 = nn.Linear(3 * h, h)
        self.w2 = nn.Linear(2 * h, h)

    @classmethod
    def from_efficient(cls, layer: GMNLayer) -> "ConcatGMNLayer":
        """A plain block computing exactly ``layer``'s function (weights copied and re-arranged)."""
        h = layer.hidden
        wp = layer.node_proj.weight.detach()          # [3H, H]: rows W1s, W2s, W1t
        out = cls(h).to(device=wp.device, dtype=wp.dtype)   # a float32 copy would round a double layer
        with torch.no_grad():
            out.w1.weight.copy_(torch.cat([wp[:h], wp[2 * h:], layer.edge_w1.weight], dim=1))
            out.w1.bias.copy_(layer.edge_w1.bias)
            out.w2.weight.copy_(torch.cat([wp[h:2 * h], layer.edge_w2.weight], dim=1))
            out.w2.bias.copy_(layer.edge_w2.bias)
            for name in ("ln_x", "ln_e", "node_upd", "node_out", "edge_out"):
                getattr(out, name).load_state_dict(getattr(layer, name).state_dict())
        return out

    def forward(self, x, e, src, dst, inv_deg, structure=None):
        """Same signature and result as :meth:`GMNLayer.forward` (``structure`` is not needed)."""
        xn = self.ln_x(x)
        e1 = torch.relu(self.w1(torch.cat([xn[src], xn[dst], self.ln_e(e)], dim=-1)))
        m = torch.relu(self.w2(torch.cat([xn[src], e1], dim=-1)))
        return self.update_nodes(x, xn, m, dst, inv_deg), e + self.edge_out(F.silu(e1))


class _PooledReLULinearFn(torch.autograd.Function):
    """``pooled[g] = sum over edges i of graph g of ReLU(W e_i + b)`` in chunks of edges.

    Autograd of ``index_add(relu(linear(e)))`` keeps the ``[E, D]`` pre-activations (D = 128 at
    the cpu preset, four times the blocks' ``[E, H]``) and streams them through memory three times
    (ReLU, its mask, the gathered gradient); here each chunk's ``[C, D]`` stays in cache, and the
    backward recomputes it (one more ``[C, H] x [H, D]`` product per chunk) instead of storing it.
    """

    @staticmethod
    def forward(ctx, e, graph, num_graphs, chunk, weight, bias):
        out = e.new_zeros(num_graphs, weight.shape[0])
        for i in range(0, e.shape[0], chunk):
            out.index_add_(0, graph[i:i + chunk], torch.addmm(bias, e[i:i + chunk], weight.t()).relu_())
        ctx.save_for_backward(e, graph, weight, bias)
        ctx.chunk = chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out):
        e, graph, weight, bias = ctx.saved_tensors
        chunk = ctx.chunk
        g_e = torch.empty_like(e)
        g_w = torch.zeros_like(weight)
        g_b = torch.zeros_like(bias)
        for i in range(0, e.shape[0], chunk):
            ec = e[i:i + chunk]
            pre = torch.addmm(bias, ec, weight.t())
            g_pre = torch.ops.aten.threshold_backward(g_out.index_select(0, graph[i:i + chunk]), pre, 0)
            torch.mm(g_pre, weight, out=g_e[i:i + chunk])
            g_w.addmm_(g_pre.t(), ec)
            g_b.add_(g_pre.sum(0))
        return g_e, None, None, None, g_w, g_b


def pooled_relu_linear(e: torch.Tensor, graph: torch.Tensor, num_graphs: int, linear: nn.Linear,
                       chunk: int = 4096) -> torch.Tensor:
    """``[G, D]``: per graph, the sum over its edges of ``ReLU(linear(e))``, for ``e [E, H]`` and each
    edge's graph ``graph [E]``, computed ``chunk`` edges at a time (forward and backward)."""
    if torch.is_autocast_enabled(e.device.type) or linear.bias is None:
        out = e.new_zeros(num_graphs, linear.out_features)
        return out.index_add(0, graph, torch.relu(linear(e)))
    return _PooledReLULinearFn.apply(e, graph, num_graphs, chunk, linear.weight, linear.bias)
