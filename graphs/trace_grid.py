"""Feature grids met while tracing: ``F.grid_sample`` of a parameter at coordinates computed from
the input (NGLOD's feature volumes, tri-planes), as the generic grid roles of :mod:`graphs.cells`.

Each sampled parameter becomes one storage cell per grid vertex (its position in xyz: the grid
coordinates must be an affine function of one of x, y, z each), one edge per stored value into
``C`` channel nodes. Samples added together (tri-planes summed over the planes, NGLOD's levels of
detail summed) share their channel nodes, as a tri-plane's or an octree's do; the channels are
placed where a layer first reads them, with the summed features as their probe rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from .cells import add_grid_channels, add_storage_cells
from .trace_ops import Const, Neurons
from .trace_record import TraceError, describe

#: shape-only methods a sampled grid goes through before a layer reads it
GRID_VIEWS = {"permute", "transpose", "t", "reshape", "view", "squeeze", "unsqueeze", "contiguous", "flatten",
              "__getitem__", "clone", "detach", "float", "to"}


@dataclass
class Grid:
    """A tensor of sampled grid features: the channel of each element, and the cells feeding them."""

    chan: torch.Tensor                      # float64, the value's shape: channel index of each element
    C: int
    cells: list = field(default_factory=list)   # [(values [V, C], pos [V, 3], level)]


def _axis_fit(coords: torch.Tensor, pts: torch.Tensor, node: fx.Node) -> list[tuple[int, float, float]]:
    """For each grid coordinate column: ``(axis, a, b)`` with ``coord = a * xyz[axis] + b`` exactly."""
    A = torch.cat([pts, torch.ones(pts.shape[0], 1)], 1).double()
    out = []
    for j in range(coords.shape[1]):
        y = coords[:, j].double()
        for axis in range(3):
            X = A[:, [axis, 3]]
            coef = torch.linalg.lstsq(X, y.unsqueeze(1)).solution[:, 0]
            if float((X @ coef - y).abs().max()) <= 1e-5 * (1 + float(y.abs().max())) and abs(float(coef[0])) > 1e-6:
                out.append((axis, float(coef[0]), float(coef[1])))
                break
        else:
            raise TraceError(f"{describe(node)}: grid coordinate {j} is not an affine function of x, y or z")
    return out


def sample(conv, node: fx.Node) -> Grid:
    """``F.grid_sample(parameter, grid)``: the cells of the parameter, positioned in xyz."""
    a = list(node.args) + [None] * (2 - len(node.args))
    inp, grid = node.kwargs.get("input", a[0]), node.kwargs.get("grid", a[1])
    c = conv.S.get(inp)
    if not isinstance(c, Const) or c.value.numel() != conv.params[c.name].numel():
        raise TraceError(f"{describe(node)}: samples a tensor that is not a parameter (or not all of one)")
    if node.kwargs.get("mode", a[2] if len(a) > 2 else "bilinear") not in ("bilinear", None):
        raise TraceError(f"{describe(node)}: only bilinear / trilinear sampling is placed")
    align = bool(node.kwargs.get("align_corners", a[4] if len(a) > 4 else False))
    conv._use_param(c.name, node)
    v, g = c.value.detach().float(), conv.V[grid].detach()
    N, C, spatial = v.shape[0], v.shape[1], list(v.shape[2:])
    if g.shape[0] != N or g.shape[-1] != len(spatial):
        raise TraceError(f"{describe(node)}: grid of shape {tuple(g.shape)} for a tensor of shape {tuple(v.shape)}")
    values = v.permute(0, *range(2, v.ndim), 1).reshape(-1, C)        # cells in (n, *spatial) order
    idx = torch.stack(torch.meshgrid(*[torch.arange(s) for s in spatial], indexing="ij"), -1).reshape(-1, len(spatial))
    pos = torch.zeros(N, idx.shape[0], 3)
    for n in range(N):                      # one fit per sampled plane / volume (a handful)
        fits = _axis_fit(g[n].reshape(-1, g.shape[-1]), conv.pts, node)
        for j, (axis, slope, icpt) in enumerate(fits):   # coordinate j indexes spatial dim -1 - j
            s = spatial[-1 - j]
            i = idx[:, -1 - j].double()
            coord = -1 + 2 * i / (s - 1) if align else (2 * i + 1) / s - 1
            pos[n, :, axis] = ((coord - icpt) / slope).float()
    level = math.log2(max(max(spatial) - int(align), 1))
    out = conv.V[node]
    shape = [1] * out.ndim
    shape[1] = C
    chan = torch.arange(C, dtype=torch.float64).reshape(shape).expand(out.shape).clone()
    return Grid(chan, C, [(values, pos.reshape(-1, 3), level)])


def grid_op(conv, node: fx.Node) -> Grid:
    """A shape op, a sum over a dimension of one channel, or the sum of two samples of one width."""
    states = [conv.S.get(a) for a in _nodes(node)]
    grids = [s for s in states if isinstance(s, Grid)]
    name = str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", "")
    out = conv.V[node]
    if len(grids) == 2 and name in ("add", "add_", "__add__", "__iadd__"):
        a, b = grids
        if a.C != b.C or not torch.equal(a.chan, b.chan):
            raise TraceError(f"{describe(node)}: adds grid features of different channels")
        return Grid(a.chan, a.C, a.cells + b.cells)
    if len(grids) != 1 or len(states) != 1:
        raise TraceError(f"{describe(node)}: this operation on sampled grid features cannot be placed (supported: "
                         "reshaping, a sum over the planes, adding levels of detail)")
    s = grids[0]
    args = [s.chan if isinstance(x, fx.Node) else x for x in node.args]
    if name == "sum":
        dims = node.kwargs.get("dim", args[1] if len(args) > 1 else None)
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        if not dims:
            raise TraceError(f"{describe(node)}: sums grid features over every dimension")
        hi, lo = s.chan.amax(dims, keepdim=bool(node.kwargs.get("keepdim", False))), \
            s.chan.amin(dims, keepdim=bool(node.kwargs.get("keepdim", False)))
        if not torch.equal(hi, lo):
            raise TraceError(f"{describe(node)}: sums grid features of different channels")
        return Grid(hi, s.C, s.cells)
    if name not in GRID_VIEWS:
        raise TraceError(f"{describe(node)}: {name} of sampled grid features cannot be placed")
    if node.op == "call_method":
        chan = getattr(args[0], name)(*args[1:], **node.kwargs)
    else:
        chan = node.target(*args, **node.kwargs)
    if tuple(chan.shape) != tuple(out.shape):
        raise TraceError(f"{describe(node)}: changes the grid features' shape unlike the traced value")
    return Grid(chan, s.C, s.cells)


def _nodes(node: fx.Node) -> list:
    found: list = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(a) or a)
    return found


def place(conv, arg: fx.Node) -> Neurons:
    """Channel and cell nodes for grid features a layer reads: features in the last dimension."""
    s = conv.S[arg]
    rows = s.chan.reshape(-1, s.chan.shape[-1])
    if not torch.equal(rows, rows[:1].expand_as(rows)):
        raise TraceError(f"{describe(arg)}: grid features are read with the channels not in the last dimension")
    col = rows[0].long()
    if sorted(col.tolist()) != list(range(s.C)):
        raise TraceError(f"{describe(arg)}: reads {col.numel()} grid columns of {s.C} channels (samples concatenated "
                         "instead of summed are not placed)")
    first = conv.b.num_nodes
    chans = add_grid_channels(conv.b, s.C)
    for values, pos, level in sorted(s.cells, key=lambda c: c[2]):      # coarse levels first, as octrees
        add_storage_cells(conv.b, chans, values, pos, level)
    conv.layer.append(torch.zeros(conv.b.num_nodes - first, dtype=torch.long))
    ids = chans[col]
    conv._probe(ids, conv.V[arg], arg)
    n = Neurons(ids)
    conv.S[arg] = n
    return n


__all__ = ["GRID_VIEWS", "Grid", "grid_op", "place", "sample"]
