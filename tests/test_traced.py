"""The tracing converter: DeepSDF, the NeRF MLP and SIREN as their authors write them."""
import networkx as nx
import pytest
import torch
from torch import nn

from gmn_inr.io import DeepSDFDecoder, DeepSDFShape, NeRFMLP, Siren
from graphs import GraphError, TraceError, UnregisteredArchitectureError, layout as L, to_graph, trace_to_graph
from graphs.probe import probe_points


def outputs_in_order(g):
    o = g.x[:, L.N_TYPE] == L.NodeType.OUTPUT
    ids = o.nonzero().squeeze(1)
    return ids[g.x[ids, L.N_OUT].argsort()]


def edges_of(g, t):
    return g.edge_attr[:, L.E_TYPE] == t


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_siren_counts_values_and_w0_probe():
    torch.manual_seed(0)
    m = Siren(3, 16, hidden_layers=2, out_features=1, first_omega_0=30.0, hidden_omega_0=30.0)
    g = to_graph(m)                                          # no converter registered: traced
    dims = [3, 16, 16, 16, 1]
    assert g.num_nodes == sum(dims) + 4                      # + one bias node per layer
    assert g.num_edges == n_params(m)
    w = g.edge_attr[edges_of(g, L.EdgeType.WEIGHT), L.E_VALUE]
    assert torch.equal(w, torch.cat([m.net[i].linear.weight.reshape(-1) for i in range(3)] + [m.net[3].weight.reshape(-1)]))
    # sine on every hidden neuron and its incoming edges, identity on the output
    hidden = g.x[:, L.N_TYPE] == L.NodeType.HIDDEN
    assert torch.all(g.x[hidden, L.N_ACT] == L.ACTIVATIONS["sine"] / L.ACT_SCALE)
    out = outputs_in_order(g)
    assert torch.all(g.x[out, L.N_ACT] == 0)
    into_hidden = hidden[g.edge_index[1]]
    assert torch.all(g.edge_attr[into_hidden, L.E_ACT] == L.ACTIVATIONS["sine"] / L.ACT_SCALE)
    # probe rows are sin(30 (W x + b)), not sin(W x + b): w0 is in the traced forward
    d = g.dense_probe()
    first = torch.sin(30.0 * m.net[0].linear(probe_points()))
    assert torch.allclose(d[3:19].t(), first, atol=1e-6)
    assert torch.allclose(d[out].t(), m(probe_points()), atol=1e-5)


def test_deepsdf_skip_weight_norm_and_latent_code():
    torch.manual_seed(0)
    dec = DeepSDFDecoder(latent_size=8, dims=(32,) * 8)
    shape = DeepSDFShape(dec, torch.randn(8))
    g = to_graph(shape)
    assert g.num_edges == n_params(shape)                    # every parameter on exactly one edge
    # nodes: 3 xyz inputs, 8 latent inputs + their bias node, 8 layers of neurons (layer 3 is 32 - 11 wide),
    # one bias node per layer and one gain node per weight-normalised layer (0..7)
    widths = [32, 32, 32, 32 - 11, 32, 32, 32, 32, 1]
    assert g.num_nodes == 3 + 8 + 1 + sum(widths) + 9 + 8
    assert int(edges_of(g, L.EdgeType.GAIN).sum()) == sum(widths[:8])
    # gains hold g, weights the unit direction v / |v|
    lin4 = dec.lin4
    gains = g.edge_attr[edges_of(g, L.EdgeType.GAIN), L.E_VALUE]
    assert torch.equal(gains[sum(widths[:4]):sum(widths[:5])], lin4.parametrizations.weight.original0.reshape(-1))
    weights = g.edge_attr[edges_of(g, L.EdgeType.WEIGHT)]
    layer5 = weights[weights[:, L.E_LAYER] == 5 / L.LAYER_SCALE, L.E_VALUE].reshape(32, -1)
    assert torch.allclose(layer5.norm(dim=1), torch.ones(32), atol=1e-5)
    assert torch.allclose(layer5 * gains[sum(widths[:4]):sum(widths[:5])].unsqueeze(1), lin4.weight, atol=1e-6)
    # the skip: layer 4's inputs are layer 3's neurons then the network input (latent, xyz), as concatenated
    src4 = g.edge_index[0, edges_of(g, L.EdgeType.WEIGHT) & (g.edge_attr[:, L.E_LAYER] == 5 / L.LAYER_SCALE)]
    row0 = src4[:32]                                         # one row of lin4: 21 hidden + 11 inputs
    types = g.x[row0, L.N_TYPE]
    assert torch.all(types[:21] == L.NodeType.HIDDEN) and torch.all(types[21:] == L.NodeType.INPUT)
    assert torch.all(g.x[row0[21:29], L.N_POS] == 0) and torch.equal(g.x[row0[29:], L.N_POS], torch.eye(3))
    # the latent code sits on bias edges into the latent input nodes; probes of those nodes are the code
    latent_ids = row0[21:29]
    into_latent = torch.isin(g.edge_index[1], latent_ids)
    assert torch.equal(g.edge_attr[into_latent, L.E_VALUE], shape.latent.detach())
    assert torch.allclose(g.dense_probe()[latent_ids], shape.latent.detach().unsqueeze(1).expand(8, 512))
    # tanh on the output, outputs match the module (eval mode: dropout off)
    out = outputs_in_order(g)
    assert torch.all(g.x[out, L.N_ACT] == L.ACTIVATIONS["tanh"] / L.ACT_SCALE)
    shape.eval()
    assert torch.allclose(g.dense_probe()[out].t(), shape(probe_points()), atol=1e-5)
    assert shape.training is False and dec.training is False
    shape.train()
    to_graph(shape)
    assert shape.training                                    # tracing leaves the mode as it was


def test_deepsdf_old_style_weight_norm_and_layernorm():
    torch.manual_seed(0)
    dec = DeepSDFDecoder(latent_size=0, dims=(16,) * 4, latent_in=(2,), weight_norm=False)
    g = to_graph(dec)
    assert g.num_edges == n_params(dec)
    ln = edges_of(g, L.EdgeType.NORM_SCALE)
    assert int(ln.sum()) == 16 * 4 - 3                        # bn0..bn3 (layer 1 is 16 - 3 wide: the skip)
    assert torch.equal(g.edge_attr[ln, L.E_VALUE][:16], dec.bn0.weight.detach())
    dec.eval()
    assert torch.allclose(g.dense_probe()[outputs_in_order(g)].t(), dec(probe_points()), atol=1e-5)
    # nn.utils.weight_norm (DeepSDF's own: hooks, weight_g / weight_v)
    with pytest.warns(FutureWarning):
        lin = nn.utils.weight_norm(nn.Linear(3, 5))
    seq_like = nn.Module()
    seq_like.lin, seq_like.out = lin, nn.Linear(5, 1)
    seq_like.forward = lambda x: seq_like.out(torch.relu(seq_like.lin(x)))
    seq_like.__class__ = type("TwoLayer", (nn.Module,), {"forward": lambda self, x: self.out(torch.relu(self.lin(x)))})
    g2 = to_graph(seq_like)
    assert torch.equal(g2.edge_attr[edges_of(g2, L.EdgeType.GAIN), L.E_VALUE], lin.weight_g.detach().reshape(-1))
    assert g2.num_edges == n_params(seq_like)


def test_nerf_mlp_heads_skip_and_view_branch():
    torch.manual_seed(0)
    m = NeRFMLP(D=4, W=16, multires=2, multires_views=1, skips=(2,))
    g = to_graph(m)
    assert g.num_edges == n_params(m)
    n_in = m.input_ch + m.input_ch_views                     # 15 + 9
    assert g.num_nodes == n_in + 4 * 16 + 4 + (16 + 1 + 8 + 3) + 4     # trunk + bias, heads + bias
    out = outputs_in_order(g)
    assert out.numel() == 4                                  # r, g, b, sigma in the module's order
    m.eval()
    x = m.gmn_probe_inputs(probe_points())[0]
    assert torch.allclose(g.dense_probe()[out].t(), m(x), atol=1e-5)
    # sigma is read from the trunk (layer 4), rgb from the view branch (layer 7)
    assert g.x[out[3], L.N_LAYER] * L.LAYER_SCALE == 5 and g.x[out[0], L.N_LAYER] * L.LAYER_SCALE == 7
    # the skip: pts_linears[3] reads the encoded xyz (input nodes) first, then layer 3's neurons
    lay4 = edges_of(g, L.EdgeType.WEIGHT) & (g.edge_attr[:, L.E_LAYER] == 4 / L.LAYER_SCALE)
    src = g.edge_index[0, lay4][:15 + 16]
    assert torch.all(g.x[src[:15], L.N_TYPE] == L.NodeType.INPUT) and torch.all(g.x[src[15:], L.N_TYPE] == L.NodeType.HIDDEN)
    # the view branch reads feature_linear's neurons then the encoded view direction
    lay6 = edges_of(g, L.EdgeType.WEIGHT) & (g.edge_attr[:, L.E_LAYER] == 6 / L.LAYER_SCALE)
    src6 = g.edge_index[0, lay6][:16 + 9]
    assert torch.equal(src6[16:], torch.arange(15, 24))
    # the feature layer and density head have no activation; the trunk and view branch are ReLU
    relu = L.ACTIVATIONS["relu"] / L.ACT_SCALE
    assert torch.all(g.x[g.edge_index[1, lay6], L.N_ACT] == relu)


def _nx(g):
    return g.to_networkx()


def test_permuting_hidden_neurons_gives_an_isomorphic_graph():
    torch.manual_seed(0)
    dec = DeepSDFDecoder(latent_size=2, dims=(6,) * 4, latent_in=(2,), weight_norm=True)
    shape = DeepSDFShape(dec, torch.randn(2))
    perm_shape = DeepSDFShape(DeepSDFDecoder(2, dims=(6,) * 4, latent_in=(2,), weight_norm=True), shape.latent)
    perm_shape.load_state_dict(shape.state_dict())
    p = torch.randperm(6)
    d = perm_shape.decoder
    with torch.no_grad():                     # permute layer 2's neurons (lin2 rows, lin3 columns)
        pw = d.lin2.parametrizations.weight
        pw.original0.copy_(pw.original0[p]); pw.original1.copy_(pw.original1[p]); d.lin2.bias.copy_(d.lin2.bias[p])
        d.lin3.parametrizations.weight.original1.copy_(d.lin3.parametrizations.weight.original1[:, p])
    shape.eval(), perm_shape.eval()
    x = torch.rand(20, 3) * 2 - 1
    assert torch.allclose(shape(x), perm_shape(x), atol=1e-6)
    a, b = to_graph(shape), to_graph(perm_shape)
    assert not torch.equal(a.edge_attr, b.edge_attr)

    def node_match(u, v):
        return u["x"] == v["x"] and all(abs(s - t) <= 1e-5 for s, t in zip(u["probe"], v["probe"]))

    def edge_match(u, v):        # v / |v| of a layer whose columns were permuted: equal up to rounding
        a, b = sorted(d["attr"] for d in u.values()), sorted(d["attr"] for d in v.values())
        return len(a) == len(b) and all(abs(s - t) <= 1e-6 for x, y in zip(a, b) for s, t in zip(x, y))

    assert nx.is_isomorphic(_nx(a), _nx(b), node_match=node_match, edge_match=edge_match)
    with torch.no_grad():
        d.lin3.bias[0] += 1.0
    assert not nx.is_isomorphic(_nx(a), _nx(to_graph(perm_shape)), node_match=node_match, edge_match=edge_match)


def test_traced_graphs_embed():
    from gmn_inr import Embedder
    from gmn_inr.encoder import GMNEncoder

    torch.manual_seed(0)
    emb = Embedder(GMNEncoder.from_preset("tiny"))
    z = emb.embed([Siren(3, 8, 1, 1), DeepSDFShape(DeepSDFDecoder(4, dims=(8,) * 4, latent_in=(2,)), torch.randn(4)),
                   NeRFMLP(D=3, W=8, multires=1, multires_views=1, skips=(1,))])
    assert z.shape == (3, emb.embed_dim) and torch.isfinite(z).all()


class _Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        return torch.cumsum(self.lin(x), -1)


class _Encoded(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        return self.lin(torch.sin(x))


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(torch.relu(self.lin(x)))


class _Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.spare = nn.Linear(3, 2), nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x)


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.lin(x)
        return x


def test_errors_name_the_operation_and_the_source_line():
    with pytest.raises(UnregisteredArchitectureError, match=r"(?s)cumsum.*register_converter"):
        to_graph(_Cumsum())
    with pytest.raises(GraphError, match=r"cumsum \(node cumsum\) at File .*test_traced.py\", line \d+: "
                                         r"return torch.cumsum\(self.lin\(x\), -1\)"):       # also a GraphError
        to_graph(_Cumsum())
    with pytest.raises(TraceError, match=r"parameter 'lin.weight' is used twice"):
        trace_to_graph(_Shared())
    with pytest.raises(TraceError, match=r"spare\.weight"):
        trace_to_graph(_Unused())
    with pytest.raises(TraceError, match=r"control flow on the values of a tensor computed from the input .* "
                                         r"line \d+: if x.sum\(\) > 0:"):
        trace_to_graph(_Branchy())


def test_a_function_of_the_input_becomes_input_nodes():
    torch.manual_seed(0)
    m = _Encoded()
    g = trace_to_graph(m)
    assert g.num_edges == n_params(m)
    inputs = (g.x[:, L.N_TYPE] == L.NodeType.INPUT).nonzero().squeeze(1)
    assert inputs.numel() == 3 + 3                 # x, y, z (unused) and sin(x), sin(y), sin(z)
    d = g.dense_probe()
    assert torch.allclose(d[inputs[3:]].t(), torch.sin(probe_points()))
    assert torch.equal(g.x[inputs[3:], L.N_POS], torch.zeros(3, 3))    # not affine in an axis
    assert torch.allclose(d[outputs_in_order(g)].t(), m(probe_points()), atol=1e-6)
