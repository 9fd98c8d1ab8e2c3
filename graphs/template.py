"""Fast conversion of the built-in fields: per-architecture graph templates, and batches.

Everything in a built-in field's graph except the parameter values and the probe rows depends
on its :class:`~gmn_inr.fields.ArchSpec` alone: node features, edge index, every edge column but
``E_VALUE``, which nodes have probe rows, and the frequency encoding's values at the probe points.
:class:`GraphTemplate` builds that once per spec with the ordinary converter (so the two can
never drift apart), checks it once, and then converts a field by

* writing its parameters, concatenated in edge order, into the ``E_VALUE`` column of a copy of
  the template's edge features (one min/max pass over them: every parameter is one edge value);
* one forward of its MLP at the probe points, run transposed (``[features, K]``) so each layer's
  product is written straight into its rows of ``probe``; the encoding's rows and where the grid
  is read (a hash grid's corners and weights, a tri-plane's sampling grid) are cached per spec;
  one finiteness pass over the computed rows.

``to_graph`` takes this path for a spec it has seen without its own per-parameter checks: the
min/max pass over the values checks every parameter once (finite, within the magnitude bound).
The result is bit-identical to the builder path (``graphs.mlp.field_to_graph`` without the
template): the template is the builder's own graph, the grid and encoding rows are the same
operations on the same inputs, and a layer's transposed product is used only where it gives the
builder's rows bit for bit (checked once per spec; otherwise the builder's own product and a
transposed copy, as for a 4-wide output layer). tests/test_convert_template.py checks every
built-in dense architecture.

:func:`to_batch` converts many fields of one spec straight into one PyG
``Batch`` (structure repeated and offset once for all, no per-graph ``Data`` objects), equal
to ``Batch.from_data_list([to_graph(f).to_pyg() for f in fields])``.

Sparse fields (octrees: their structure depends on the occupied voxels) and subclasses or
plug-in fields take the ordinary path.
"""
from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from gmn_inr.fields.mlp import Sine

from . import layout as L
from .graph import GraphError, ParameterGraph
from .graph import _all_finite as all_finite   # one sum instead of isfinite's four passes
from .probe import probe_points
from .registry import MAX_PARAMETER_ABS, check_finite

#: spec -> template; a zoo has a few dozen architectures, a template a few MB at paper sizes
_CACHE: "OrderedDict[tuple, GraphTemplate]" = OrderedDict()
_CACHE_SIZE = 64
_LOCK = threading.Lock()


def _grid_values(field) -> list[torch.Tensor]:
    """The grid parameters of a built-in dense field in the order its converter emits edges."""
    from gmn_inr.fields import HashGridField, MLPField, TriplaneField

    t = type(field)
    if t is MLPField:
        return []
    if t is TriplaneField:
        return [field.planes]                       # (p, c, h, w)-major, as graphs.triplane
    if t is HashGridField:
        return [field.grid.params]                  # [level][entry][feature], as graphs.hashgrid
    raise TypeError(t)


def _activate_(act: nn.Module, h: torch.Tensor) -> None:
    """``h = act(h)`` in place, element for element what ``act(h)`` computes."""
    if type(act) is nn.ReLU:
        h.relu_()
    elif type(act) is Sine:
        h.mul_(act.w0).sin_()                      # Sine: sin(w0 * x)
    else:
        h.copy_(act(h))


def templatable(field) -> bool:
    """True for the exact built-in dense field types (MLP, tri-plane, hash grid) on CPU in
    float32: their graph's structure is a function of the spec."""
    from gmn_inr.fields import HashGridField, MLPField, TriplaneField

    if type(field) not in (MLPField, TriplaneField, HashGridField):
        return False
    return all(p.dtype == torch.float32 and p.device.type == "cpu" for p in field.parameters())


class GraphTemplate:
    """The spec-only part of a field's graph (see the module docstring).

    Attributes: ``x [N, NODE_DIM]``, ``edge_index [2, E]``, ``edge_attr [E, EDGE_DIM]`` (value
    column included, overwritten per field), ``probe_index [M]``, ``enc_probe [K, D]`` (the
    encoding at the probe points, or None), ``rows``: the probe row offset of each MLP layer's
    outputs and ``bias_rows``: the rows of bias nodes (all ones).
    """

    def __init__(self, field, graph: ParameterGraph):
        self.spec, self.name = graph.spec, graph.name
        self.x, self.edge_index, self.edge_attr = graph.x, graph.edge_index, graph.edge_attr
        self.probe_index = graph.probe_index
        self.points = probe_points()
        K = self.points.shape[0]
        with torch.no_grad():
            self.enc_probe = field.encoding(self.points) if field.encoding is not None else None
            # the probe rows are the forward run transposed ([features, K]), so each layer's GEMM
            # writes its rows of ``probe`` in place: the encoding's rows are copied, never recomputed
            self.enc_rows = self.enc_probe.t().contiguous() if self.enc_probe is not None else None
        self.has_grid = bool(field.grid_dim)
        self.n_grid = int(field.grid_dim)
        self.encoding_first = bool(getattr(field, "encoding_first", False))   # the MLP input order
        # where the grid is read at the probe points depends on the spec alone: a hash grid's
        # corner indices and weights, a tri-plane's sampling grid
        self.hash_lookup = self.hash_weights = self.plane_grid = None
        if hasattr(field, "grid") and hasattr(field.grid, "lookup"):
            with torch.no_grad():
                self.hash_lookup = field.grid.lookup((self.points + 1.0) * 0.5)   # as HashGridField.grid_features
                w = self.hash_lookup[1]
                self.hash_weights = w.unsqueeze(-1).expand(*w.shape, field.grid.n_features).contiguous()
        elif hasattr(field, "sample_grid"):
            self.plane_grid = field.sample_grid(self.points).contiguous()
        n_in = field.mlp.layers[0].in_features
        # probe rows follow node order: MLP inputs (grid channels, then encoding: the nodes' order
        # even when the MLP reads the encoding first), then per layer its neurons and its bias node
        self.rows, r = [], n_in
        self.bias_rows = []
        for lin in field.mlp.layers:
            self.rows.append(r)
            r += lin.out_features
            if lin.bias is not None:
                self.bias_rows.append(r)
                r += 1
        self.num_probe_rows = r
        self.bias_index = torch.tensor(self.bias_rows, dtype=torch.long)
        self.n_in = n_in
        self.probe_shape = (r, K)
        if graph.probe is None or graph.probe.shape[0] != r or int(self.edge_attr.shape[0]) != self._n_values(field):
            raise GraphError("graph template does not match its field's layout")
        self._choose_products(field, graph.probe)

    def _choose_products(self, field, want: torch.Tensor) -> None:
        """Per layer, the transposed product ``W @ h^T`` (written straight into its probe rows) where
        it gives the builder's rows bit for bit, else the builder's own ``h @ W^T`` and a transposed
        copy: BLAS picks its kernel by shape, and a few shapes (a 4-wide output layer) sum in
        another order. Decided once per spec on the field that built it, layer by layer (each
        layer's input is then already exact)."""
        self.row_major = [True] * len(field.mlp.layers)
        for k, lin in enumerate(field.mlp.layers):
            self.row_major[k] = False
            rows = slice(self.rows[k], self.rows[k] + lin.out_features)
            if not torch.equal(self.probe(field, check=False)[rows], want[rows]):
                self.row_major[k] = True
        if not torch.equal(self.probe(field, check=False), want):
            raise GraphError("graph template's probe rows differ from its builder's")

    @staticmethod
    def _value_tensors(field) -> list[torch.Tensor]:
        out = list(_grid_values(field))
        for lin in field.mlp.layers:
            out.append(lin.weight)
            if lin.bias is not None:
                out.append(lin.bias)
        return out

    def _n_values(self, field) -> int:
        return sum(t.numel() for t in self._value_tensors(field))


    def values(self, field, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[E]`` the field's parameters in edge order (written into ``out`` when given), checked
        once: finite and within :data:`graphs.registry.MAX_PARAMETER_ABS` (one min/max pass)."""
        ts = [t.detach().reshape(-1) for t in self._value_tensors(field)]
        v = torch.cat(ts) if out is None else torch.cat(ts, out=out)
        lo, hi = torch.aminmax(v)                   # NaN propagates to both, inf to one of them
        if not (-MAX_PARAMETER_ABS <= float(lo) and float(hi) <= MAX_PARAMETER_ABS):
            check_finite(field)                     # names the parameter
            raise GraphError("parameter graph holds NaN or inf features")
        return v

    def _grid_rows(self, field, rows: torch.Tensor) -> None:
        """The grid features at the probe points, ``[n_grid, K]``, written into ``rows``: the same
        operations as the field's ``grid_features``, at the cached lookup, without its transposes."""
        if self.hash_lookup is not None:
            g = field.grid
            lv = g.level_features(self.hash_lookup[0], self.hash_weights, no_grad=True)   # [L, K, F]
            rows.view(lv.shape[0], lv.shape[2], lv.shape[1]).copy_(lv.permute(0, 2, 1))
        elif self.plane_grid is not None:
            feats = field.plane_features(self.plane_grid)                              # [3, C, K]
            if field.concat:
                rows.copy_(feats.reshape(rows.shape))                                  # plane-major
            else:
                torch.sum(feats, 0, out=rows)
        else:
            rows.copy_(field.grid_features(self.points).t())

    def probe(self, field, out: Optional[torch.Tensor] = None, check: bool = True) -> torch.Tensor:
        """``[M, K]`` probe rows of ``field`` (written into ``out`` when given): one forward of
        its MLP at the probe points, run transposed so every layer's product lands in its rows
        (see :meth:`_choose_products`). ``check``: refuse rows that hold NaN or inf."""
        if out is None:
            out = torch.empty(self.probe_shape)
        with torch.no_grad():
            ng = self.n_grid
            if ng:
                self._grid_rows(field, out[:ng])
            if self.enc_rows is not None:
                out[ng:self.n_in].copy_(self.enc_rows)
            h = out[:self.n_in]                                                      # [n_in, K], node order
            if self.encoding_first and ng:       # the MLP reads cat(encoding, grid features)
                h = torch.cat([out[ng:self.n_in], out[:ng]])
            mlp = field.mlp
            layers = mlp.layers
            last = len(layers) - 1
            for k, lin in enumerate(layers):
                dst = out[self.rows[k]:self.rows[k] + lin.out_features]
                if self.row_major[k]:            # the builder's product, as nn.Linear runs it
                    y = lin(h.t().contiguous())
                    dst.copy_((mlp.act(y) if k != last else y).t())
                elif lin.bias is None:
                    torch.mm(lin.weight, h, out=dst)
                else:
                    torch.addmm(lin.bias.unsqueeze(1), lin.weight, h, out=dst)
                if k != last and not self.row_major[k]:
                    _activate_(mlp.act, dst)
                h = dst
            if self.bias_rows:
                out.index_fill_(0, self.bias_index, 1.0)
            if check and not all_finite(out[self.n_in:]):  # the inputs are finite: finite parameters, cached encoding
                raise GraphError("probe features hold NaN or inf (the network diverges at a probe point)")
        return out

    def convert(self, field, probes: bool = True) -> ParameterGraph:
        """The field's graph: template structure, its values and (``probes``) its probe rows."""
        ea = self.edge_attr.clone()
        ea.select(1, L.E_VALUE).copy_(self.values(field))
        if not probes:
            return ParameterGraph(self.x.clone(), self.edge_index.clone(), ea, spec=self.spec, name=self.name)
        return ParameterGraph(self.x.clone(), self.edge_index.clone(), ea, spec=self.spec, name=self.name,
                              probe=self.probe(field), probe_index=self.probe_index.clone())

    def _batch_values(self, fields: Sequence[nn.Module]) -> torch.Tensor:
        """``[B, E]`` every field's parameters in edge order: one stack per parameter, not per field."""
        slots = zip(*(self._value_tensors(f) for f in fields))
        v = torch.cat([torch.stack([t.detach() for t in ts]).reshape(len(fields), -1) for ts in slots], dim=1)
        if not all_finite(v):
            for f in fields:
                self.values(f)                      # raises, naming the field's parameter
        return v

    def _batch_probe(self, fields: Sequence[nn.Module]) -> torch.Tensor:
        """``[B, M, K]`` probe rows of ``fields``: the per-field forward of :meth:`probe` run for all
        fields at once (stacked weights, batched products), the same operations element for element
        (tests/test_graphs.py checks the batch against one-at-a-time conversion bit for bit)."""
        B, K = len(fields), self.points.shape[0]
        f0 = fields[0]
        out = torch.empty(B, self.num_probe_rows, K)
        with torch.no_grad():
            parts = []
            if self.hash_lookup is not None:
                idx, w = self.hash_lookup
                g = f0.grid
                table = torch.stack([f.grid.params.detach() for f in fields]).view(B, -1, g.n_features)
                feats = table.index_select(1, idx).view(B, *w.shape, g.n_features)
                part = (w.unsqueeze(-1) * feats).sum(3)                           # [B, L, K, F]
                parts.append(part.permute(0, 2, 1, 3).reshape(B, K, g.out_dim))
            elif self.has_grid:
                parts.append(torch.stack([f.grid_features(self.points) for f in fields]))
            if self.enc_probe is not None:
                parts.append(self.enc_probe.expand(B, *self.enc_probe.shape))
            h = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)         # [B, K, n_in], node order
            out[:, :h.shape[2]] = h.transpose(1, 2)
            if self.encoding_first:                  # the MLP reads cat(encoding, grid features)
                h = torch.cat(parts[::-1], dim=2)
            last = len(f0.mlp.layers) - 1
            for k in range(last + 1):
                lins = [f.mlp.layers[k] for f in fields]
                wt = torch.stack([lin.weight.detach() for lin in lins]).transpose(1, 2)   # [B, in, out]
                if lins[0].bias is not None:
                    bias = torch.stack([lin.bias.detach() for lin in lins]).unsqueeze(1)
                    h = torch.baddbmm(bias, h, wt)
                else:
                    h = torch.matmul(h, wt)
                if k != last:
                    h = f0.mlp.act(h)
                out[:, self.rows[k]:self.rows[k] + h.shape[2]] = h.transpose(1, 2)
            for r in self.bias_rows:
                out[:, r] = 1.0
        if not all_finite(out):
            raise GraphError("probe features hold NaN or inf (the network diverges at a probe point)")
        return out

    def convert_batch(self, fields: Sequence[nn.Module], exact_loop: bool = False):
        """One PyG ``Batch`` of ``fields`` (all of this template's spec), equal to
        ``Batch.from_data_list([to_graph(f).to_pyg() for f in fields])``. ``exact_loop``: probes
        one field at a time (the reference the batched forward is tested against)."""
        from torch_geometric.data import Batch, Data

        B = len(fields)
        N, E, M = self.x.shape[0], self.edge_attr.shape[0], self.num_probe_rows
        ea = self.edge_attr.repeat(B, 1)                                         # [B E, EDGE_DIM]
        ea[:, L.E_VALUE] = self._batch_values(fields).reshape(-1)
        if exact_loop:
            probe = torch.empty(B, M, self.points.shape[0])
            for b, f in enumerate(fields):
                self.probe(f, out=probe[b])
        else:
            probe = self._batch_probe(fields)
        node_off = torch.arange(B) * N                                            # [B]
        ei = (self.edge_index.unsqueeze(1) + node_off.view(1, B, 1)).reshape(2, B * E)
        pi = (self.probe_index.unsqueeze(0) + node_off.view(B, 1)).reshape(-1)
        out = Batch(_base_cls=Data)
        # the keys in from_data_list's order, so the two batches print and iterate alike
        out.x = self.x.repeat(B, 1)
        out.edge_index = ei
        out.edge_attr = ea
        out.num_nodes = B * N
        out.probe = probe.reshape(B * M, -1)
        out.probe_index = pi
        out.batch = torch.arange(B).repeat_interleave(N)
        out.ptr = torch.arange(B + 1) * N
        # what from_data_list records so that Batch.to_data_list / get_example work
        cum = lambda n: torch.arange(B + 1) * n                                  # noqa: E731
        zeros = torch.zeros(B, dtype=torch.long)
        out._num_graphs = B
        out._slice_dict = {"x": cum(N), "edge_index": cum(E), "edge_attr": cum(E), "probe": cum(M),
                           "probe_index": cum(M)}
        out._inc_dict = {"x": zeros, "edge_index": node_off, "edge_attr": zeros, "probe": zeros,
                         "probe_index": node_off}
        return out


def template_for(field, build: Callable[[], ParameterGraph]) -> GraphTemplate:
    """The cached template of ``field``'s spec; ``build()`` (the ordinary converter) makes it
    the first time."""
    key = (type(field), field.spec)
    with _LOCK:
        tpl = _CACHE.get(key)
        if tpl is not None:
            _CACHE.move_to_end(key)
            return tpl
    tpl = GraphTemplate(field, build().validate())
    with _LOCK:
        _CACHE[key] = tpl
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return tpl


def ready_template(module) -> Optional[GraphTemplate]:
    """The cached template that converts ``module`` as it is (a built-in dense field of a spec
    seen before, float32 on the CPU), or None; the fast path of ``graphs.to_graph``."""
    t = type(module)
    if t not in _template_types():
        return None
    with _LOCK:
        tpl = _CACHE.get((t, module.spec))
    if tpl is None or not all(p.dtype == torch.float32 and p.device.type == "cpu"
                              for p in GraphTemplate._value_tensors(module)):
        return None
    return tpl


@functools.lru_cache(maxsize=1)
def _template_types() -> tuple:
    from gmn_inr.fields import HashGridField, MLPField, TriplaneField

    return (MLPField, TriplaneField, HashGridField)


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def cached_template(field) -> Optional[GraphTemplate]:
    """The template of ``field``'s spec if one was built, else None (nothing is built)."""
    with _LOCK:
        return _CACHE.get((type(field), field.spec))
