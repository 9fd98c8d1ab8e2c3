"""TriplaneSpec conventions (align_corners, summed / concatenated planes, encoding order): the
field equals a hand-written evaluation of the formula, the graph's structure and probe rows
follow the convention, and specs that do not use them serialise exactly as before."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from gmn_inr.fields import ArchSpec, FrequencySpec, MLPSpec, SpecError, TriplaneField, TriplaneSpec, build_field
from gmn_inr.fields.spec import arch_spec
from graphs import layout as L
from graphs import to_batch, to_graph
from graphs.probe import probe_points
from graphs.template import clear_cache
from graphs.triplane import plane_cell_positions

R, C = 5, 3
ENC = FrequencySpec(n_freqs=2, include_input=True, style="nerf")
CONVENTIONS = list(itertools.product([False, True], ["sum", "concat"], [False, True]))


def _spec(align, agg, enc_first, act="relu"):
    return ArchSpec(family="triplane", out_dim=4, encoding=ENC,
                    mlp=MLPSpec(hidden_layers=2, hidden_dim=8, activation=act, bias=True, w0=1.0),
                    grid=TriplaneSpec(resolution=R, channels=C, align_corners=align, aggregate=agg,
                                      encoding_first=enc_first))


def _bilinear(plane, u, v, align):
    """Plane ``[C, R, R]`` at ``(u, v)`` in [-1, 1] (u: width, v: height), zero outside: written
    from the definition, not with grid_sample."""
    n = plane.shape[-1]
    to_px = (lambda t: (t + 1) / 2 * (n - 1)) if align else (lambda t: ((t + 1) * n - 1) / 2)
    x, y = to_px(u), to_px(v)
    x0, y0 = torch.floor(x).long(), torch.floor(y).long()
    out = torch.zeros(plane.shape[0], u.shape[0], dtype=plane.dtype)
    for dx, dy in itertools.product((0, 1), (0, 1)):           # the four corners, vectorised over points
        xi, yi = x0 + dx, y0 + dy
        w = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
        ok = (xi >= 0) & (xi < n) & (yi >= 0) & (yi < n)
        vals = plane[:, yi.clamp(0, n - 1), xi.clamp(0, n - 1)]  # [C, M]
        out += vals * (w * ok)
    return out.t()                                              # [M, C]


def _nerf_pe(xyz):
    k = torch.arange(2, dtype=xyz.dtype)
    ang = xyz.unsqueeze(-2) * (2.0 ** k).unsqueeze(-1)          # [M, F, 3]
    return torch.cat([xyz, torch.stack([ang.sin(), ang.cos()], -2).reshape(xyz.shape[0], -1)], -1)


def _by_hand(field, xyz, align, agg, enc_first):
    planes = field.planes.detach().double()
    pairs = ((0, 1), (0, 2), (1, 2))
    feats = [_bilinear(planes[p], xyz[:, a], xyz[:, b], align) for p, (a, b) in enumerate(pairs)]
    g = torch.cat(feats, -1) if agg == "concat" else sum(feats)
    h = torch.cat([_nerf_pe(xyz), g], -1) if enc_first else torch.cat([g, _nerf_pe(xyz)], -1)
    lins = field.mlp.layers
    for lin in lins[:-1]:
        h = torch.relu(h @ lin.weight.double().t() + lin.bias.double())
    return h @ lins[-1].weight.double().t() + lins[-1].bias.double()


@pytest.mark.parametrize("align,agg,enc_first", CONVENTIONS)
def test_field_equals_hand_evaluation(align, agg, enc_first):
    torch.manual_seed(0)
    field = build_field(_spec(align, agg, enc_first)).eval()
    with torch.no_grad():
        field.planes.normal_()
    xyz = torch.rand(300, 3) * 2.2 - 1.1                        # a little outside the box too (zero padding)
    got = field(xyz).double()
    want = _by_hand(field, xyz.double(), align, agg, enc_first)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    # the features alone, against grid_sample with the flag, read plane by plane
    uv = {0: (0, 1), 1: (0, 2), 2: (1, 2)}
    per = [F.grid_sample(field.planes[p:p + 1].detach(), xyz[None, None, :, list(uv[p])], align_corners=align)[0, :, 0].t()
           for p in range(3)]
    ref = torch.cat(per, -1) if agg == "concat" else per[0] + per[1] + per[2]
    assert torch.allclose(field.grid_features(xyz), ref, atol=1e-6)


def test_conventions_change_the_function():
    torch.manual_seed(1)
    base = build_field(_spec(False, "sum", False)).eval()
    xyz = torch.rand(50, 3) * 2 - 1
    aligned = build_field(_spec(True, "sum", False)).eval()
    aligned.load_state_dict(base.state_dict())
    assert not torch.allclose(base(xyz), aligned(xyz))
    assert build_field(_spec(False, "concat", False)).mlp.layers[0].in_features == 3 * C + ENC.out_dim
    assert build_field(_spec(False, "sum", True)).mlp.layers[0].in_features == C + ENC.out_dim


@pytest.mark.parametrize("align,agg,enc_first", CONVENTIONS)
def test_graph_counts_order_and_probes(align, agg, enc_first):
    clear_cache()
    torch.manual_seed(2)
    field = build_field(_spec(align, agg, enc_first, act="sine")).eval()
    n_chan = 3 * C if agg == "concat" else C
    D, W, H = ENC.out_dim, 8, 2
    g = to_graph(field)
    assert g.num_nodes == 3 * R * R + n_chan + D + H * W + 4 + (H + 1)
    n_mlp = (n_chan + D) * W + W + W * W + W + 4 * W + 4
    assert g.num_edges == 3 * R * R * C + n_mlp
    # plane edges go to their channel node: concatenated planes to 3C distinct ones
    plane = g.edge_attr[:, L.E_TYPE] == L.EdgeType.PLANE
    assert g.edge_index[1, plane].unique().numel() == n_chan
    # probe rows by node: grid channel nodes hold the features, encoding input nodes the encoding
    pts = probe_points()
    with torch.no_grad():
        enc, feats = field.encoding(pts).t(), field.grid_features(pts).t()
        out = field(pts).t()
    chans = (g.x[:, L.N_TYPE] == L.NodeType.GRID_CHANNEL).nonzero().squeeze(1)
    ins = (g.x[:, L.N_TYPE] == L.NodeType.INPUT).nonzero().squeeze(1)
    assert torch.allclose(g.probe[torch.searchsorted(g.probe_index, chans)], feats, atol=1e-6)
    assert torch.allclose(g.probe[torch.searchsorted(g.probe_index, ins)], enc, atol=1e-6)
    # the first layer's edges read the weight's columns in the MLP's input order
    w0 = field.mlp.layers[0].weight.detach()
    from_enc = torch.isin(g.edge_index[0], ins)                 # only the first layer reads input nodes
    enc_cols = w0[:, :D] if enc_first else w0[:, n_chan:]
    assert torch.equal(g.edge_attr[from_enc, L.E_VALUE], enc_cols.reshape(-1))
    out_nodes = (g.x[:, L.N_TYPE] == L.NodeType.OUTPUT).nonzero().squeeze(1)
    rows = torch.searchsorted(g.probe_index, out_nodes)
    assert torch.allclose(g.probe[rows], out, atol=1e-5)
    # the builder path and the template path agree, and so does the batched conversion
    from graphs.mlp import field_to_graph
    from graphs.triplane import add_triplane
    b = field_to_graph(field, lambda bb, f: add_triplane(bb, f.planes, f.align_corners, f.concat), template=False)
    assert torch.equal(b.x, g.x) and torch.equal(b.edge_index, g.edge_index) and torch.equal(b.probe, g.probe)
    other = build_field(field.spec).eval()
    batch = to_batch([field, other])
    assert torch.equal(batch.probe[:g.probe.shape[0]], g.probe)


def test_cell_positions_follow_align_corners():
    pos_t = plane_cell_positions(4, align_corners=True)
    pos_f = plane_cell_positions(4, align_corners=False)
    # plane (x, y): width is x, height is y; corner cells sit at +-1 when aligned, +-(1 - 1/R) otherwise
    assert pos_t[0, 0, 0].tolist() == [-1.0, -1.0, 0.0] and pos_t[0, 3, 3].tolist() == [1.0, 1.0, 0.0]
    assert pos_t[2, 0, 3].tolist() == [0.0, 1.0, -1.0]
    assert pos_f[0, 0, 3].tolist() == [0.75, -0.75, 0.0]


def test_serialisation_keeps_old_specs_and_round_trips_new():
    old = arch_spec("TRI")
    assert set(old.to_dict()["grid"]) == {"resolution", "channels"}
    new = _spec(True, "concat", True)
    assert ArchSpec.from_json(new.to_json()) == new
    assert ArchSpec.from_json(old.to_json()) == old
    field = build_field(new)
    assert isinstance(field, TriplaneField)
    for bad in (dict(aggregate="mean"), dict(align_corners=1), dict(encoding_first="yes")):
        with pytest.raises(SpecError):
            TriplaneSpec(**bad).validate()
    # the cpu / tiny analogue keeps the conventions
    assert TriplaneSpec(align_corners=True, aggregate="concat", encoding_first=True).scaled("tiny").aggregate == "concat"
