"""Modules written the way the anchors' projects write them (our own code, their idioms: Python
control flow on constants and shapes, getattr by name, iteration over nn.Sequential, dict inputs
and outputs, clone().detach().requires_grad_(), matmul with a permuted weight and an in-place bias,
hook-style weight norm, latent codes) convert with every parameter on one edge and exact probes."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs import layout as L, to_graph, trace_to_graph
from graphs.probe import probe_points


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def outputs_in_order(g):
    ids = (g.x[:, L.N_TYPE] == L.NodeType.OUTPUT).nonzero().squeeze(1)
    return ids[g.x[ids, L.N_OUT].argsort()]


def check(g, m, out):
    assert g.num_edges == n_params(m)                                   # every parameter on one edge
    values = g.edge_attr[:, L.E_VALUE]
    assert values.numel() == n_params(m)
    assert torch.allclose(g.dense_probe()[outputs_in_order(g)].t(), out, atol=1e-5)


class AutoDecoder(nn.Module):
    """DeepSDF's decoder idioms: layers named lin0..linN found with getattr, the latent code and xyz
    re-fed by `layer in self.latent_in`, xyz_in_all, hook-style weight norm, LayerNorm when not
    weight-normalised, dropout flags, `hasattr(self, "th")`."""

    def __init__(self, latent_size, dims, dropout=None, dropout_prob=0.0, norm_layers=(), latent_in=(),
                 weight_norm=False, xyz_in_all=None, use_tanh=False, latent_dropout=False):
        super().__init__()
        dims = [latent_size + 3] + list(dims) + [1]
        self.num_layers = len(dims)
        self.norm_layers, self.latent_in, self.latent_dropout = norm_layers, latent_in, latent_dropout
        self.xyz_in_all, self.weight_norm = xyz_in_all, weight_norm
        for layer in range(0, self.num_layers - 1):
            if layer + 1 in latent_in:
                out_dim = dims[layer + 1] - dims[0]
            else:
                out_dim = dims[layer + 1]
                if self.xyz_in_all and layer != self.num_layers - 2:
                    out_dim -= 3
            lin = nn.Linear(dims[layer], out_dim)
            if weight_norm and layer in self.norm_layers:
                lin = nn.utils.weight_norm(lin)
            setattr(self, "lin" + str(layer), lin)
            if (not weight_norm) and self.norm_layers is not None and layer in self.norm_layers:
                setattr(self, "bn" + str(layer), nn.LayerNorm(out_dim))
        self.use_tanh = use_tanh
        if use_tanh:
            self.tanh = nn.Tanh()
        self.relu = nn.ReLU()
        self.dropout_prob, self.dropout = dropout_prob, dropout
        self.th = nn.Tanh()

    def forward(self, input):
        xyz = input[:, -3:]
        if input.shape[1] > 3 and self.latent_dropout:
            latent_vecs = F.dropout(input[:, :-3], p=0.2, training=self.training)
            x = torch.cat([latent_vecs, xyz], 1)
        else:
            x = input
        for layer in range(0, self.num_layers - 1):
            lin = getattr(self, "lin" + str(layer))
            if layer in self.latent_in:
                x = torch.cat([x, input], 1)
            elif layer != 0 and self.xyz_in_all:
                x = torch.cat([x, xyz], 1)
            x = lin(x)
            if layer == self.num_layers - 2 and self.use_tanh:
                x = self.tanh(x)
            if layer < self.num_layers - 2:
                if self.norm_layers is not None and layer in self.norm_layers and not self.weight_norm:
                    x = getattr(self, "bn" + str(layer))(x)
                x = self.relu(x)
                if self.dropout is not None and layer in self.dropout:
                    x = F.dropout(x, p=self.dropout_prob, training=self.training)
        if hasattr(self, "th"):
            x = self.th(x)
        return x


@pytest.mark.parametrize("kw", [
    dict(weight_norm=True, norm_layers=(0, 1, 2, 3), latent_in=(2,), dropout=(0, 1, 2), dropout_prob=0.2),
    dict(weight_norm=False, norm_layers=(0, 1, 2), latent_in=(), xyz_in_all=True, latent_dropout=True),
])
def test_deepsdf_style_decoder(kw):
    torch.manual_seed(0)
    with pytest.warns(FutureWarning) if kw["weight_norm"] else _nothing():
        m = AutoDecoder(4, [16, 16, 16, 16], **kw)
    g = trace_to_graph(m, xyz_columns=(-3, -2, -1))
    x = torch.zeros(probe_points().shape[0], 7)
    x[:, 4:] = probe_points()
    m.eval()
    check(g, m, m(x))
    if kw["weight_norm"]:
        assert int((g.edge_attr[:, L.E_TYPE] == L.EdgeType.GAIN).sum()) == sum(
            getattr(m, f"lin{k}").weight_g.numel() for k in range(4))
    else:
        assert int((g.edge_attr[:, L.E_TYPE] == L.EdgeType.NORM_SCALE).sum()) == 3 * 13


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# -- siren's modules.py idioms -----------------------------------------------------------------
class MetaModule(nn.Module):
    pass


def get_subdict(params, key):
    if params is None:
        return None
    return OrderedDict((k[len(key) + 1:], v) for k, v in params.items() if k.startswith(key + "."))


class BatchLinear(nn.Linear, MetaModule):
    """x @ W^T through matmul of a permuted weight, the bias added in place."""

    def forward(self, input, params=None):
        if params is None:
            params = OrderedDict(self.named_parameters())
        bias = params.get("bias", None)
        weight = params["weight"]
        output = input.matmul(weight.permute(*[i for i in range(len(weight.shape) - 2)], -1, -2))
        output += bias.unsqueeze(-2)
        return output


class SineAct(nn.Module):
    def forward(self, input):
        return torch.sin(30 * input)


class MetaSequential(nn.Sequential, MetaModule):
    def forward(self, input, params=None):
        for name, module in self._modules.items():
            if isinstance(module, MetaModule):
                input = module(input, params=get_subdict(params, name))
            else:
                input = module(input)
        return input


class FCBlock(MetaModule):
    def __init__(self, in_features, out_features, num_hidden_layers, hidden_features, outermost_linear=False,
                 nonlinearity="relu"):
        super().__init__()
        nl = {"sine": SineAct, "relu": lambda: nn.ReLU(inplace=True)}[nonlinearity]
        net = [MetaSequential(BatchLinear(in_features, hidden_features), nl())]
        for _ in range(num_hidden_layers):
            net.append(MetaSequential(BatchLinear(hidden_features, hidden_features), nl()))
        if outermost_linear:
            net.append(MetaSequential(BatchLinear(hidden_features, out_features)))
        else:
            net.append(MetaSequential(BatchLinear(hidden_features, out_features), nl()))
        self.net = MetaSequential(*net)

    def forward(self, coords, params=None, **kwargs):
        if params is None:
            params = OrderedDict(self.named_parameters())
        return self.net(coords, params=get_subdict(params, "net"))


class SingleBVPNet(MetaModule):
    def __init__(self, out_features=1, type="sine", in_features=3, mode="mlp", hidden_features=32,
                 num_hidden_layers=2):
        super().__init__()
        self.mode = mode
        self.downsample = False
        self.net = FCBlock(in_features, out_features, num_hidden_layers, hidden_features, outermost_linear=True,
                           nonlinearity=type)

    def forward(self, model_input, params=None):
        if params is None:
            params = OrderedDict(self.named_parameters())
        coords_org = model_input["coords"].clone().detach().requires_grad_(True)
        coords = coords_org
        if self.downsample:
            coords = coords * 0.5
        output = self.net(coords, get_subdict(params, "net"))
        return {"model_in": coords_org, "model_out": output}


@pytest.mark.parametrize("act", ["sine", "relu"])
def test_siren_fcblock_and_single_bvp_net(act):
    torch.manual_seed(0)
    block = FCBlock(3, 2, 2, 16, outermost_linear=True, nonlinearity=act)
    g = trace_to_graph(block)
    check(g, block, block(probe_points()))
    hidden = g.x[:, L.N_TYPE] == L.NodeType.HIDDEN
    assert torch.all(g.x[hidden, L.N_ACT] == L.ACTIVATIONS[act] / L.ACT_SCALE)
    bvp = SingleBVPNet(type=act)
    g = to_graph(bvp)                            # a dict {"coords": x} in, a dict out: the input is not an output
    check(g, bvp, bvp({"coords": probe_points()})["model_out"])
    assert outputs_in_order(g).numel() == 1


class NotebookSineLayer(nn.Module):
    def __init__(self, in_features, out_features, bias=True, is_first=False, omega_0=30):
        super().__init__()
        self.omega_0, self.is_first = omega_0, is_first
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, input):
        return torch.sin(self.omega_0 * self.linear(input))


class NotebookSiren(nn.Module):
    def __init__(self, in_features, hidden_features, hidden_layers, out_features, outermost_linear=False):
        super().__init__()
        self.net = [NotebookSineLayer(in_features, hidden_features, is_first=True)]
        for i in range(hidden_layers):
            self.net.append(NotebookSineLayer(hidden_features, hidden_features))
        if outermost_linear:
            self.net.append(nn.Linear(hidden_features, out_features))
        else:
            self.net.append(NotebookSineLayer(hidden_features, out_features))
        self.net = nn.Sequential(*self.net)

    def forward(self, coords):
        coords = coords.clone().detach().requires_grad_(True)
        output = self.net(coords)
        return output, coords


def test_notebook_siren_and_a_sequential_of_sine_layers():
    torch.manual_seed(0)
    m = NotebookSiren(3, 16, 2, 1, outermost_linear=True)
    g = to_graph(m)
    check(g, m, m(probe_points())[0])
    seq = nn.Sequential(NotebookSineLayer(3, 8, is_first=True), NotebookSineLayer(8, 8), nn.Linear(8, 1))
    g = to_graph(seq)                            # not Linear / activation items: traced, not refused
    check(g, seq, seq(probe_points()))
    d = g.dense_probe()
    first = (g.x[:, L.N_LAYER] * L.LAYER_SCALE == 1) & (g.x[:, L.N_TYPE] == L.NodeType.HIDDEN)
    assert torch.allclose(d[first].t(), torch.sin(30 * seq[0].linear(probe_points())), atol=1e-6)


def test_plain_sequential_keeps_its_converter():
    seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    assert torch.equal(to_graph(seq).edge_attr, trace_to_graph(seq).edge_attr)
