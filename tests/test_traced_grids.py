"""Feature grids written the way NGLOD and the tri-plane NeRFs write them (grid_sample of a
parameter, levels of detail added in place, planes summed, `len(...)`) trace with every used
parameter on one edge and exact output probes."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs import TraceError, layout as L, to_graph, trace_to_graph
from graphs.probe import probe_points


def outputs_in_order(g):
    ids = (g.x[:, L.N_TYPE] == L.NodeType.OUTPUT).nonzero().squeeze(1)
    return ids[g.x[ids, L.N_OUT].argsort()]


class FeatureVolume(nn.Module):
    def __init__(self, fdim, fsize):
        super().__init__()
        self.fsize, self.fdim = fsize, fdim
        self.fm = nn.Parameter(torch.randn(1, fdim, fsize + 1, fsize + 1, fsize + 1) * 0.1)

    def forward(self, x):
        N = x.shape[0]
        if x.shape[1] == 3:
            sample_coords = x.reshape(1, N, 1, 1, 3)
            sample = F.grid_sample(self.fm, sample_coords, align_corners=True, padding_mode="border")[0, :, :, 0, 0]
            return sample.transpose(0, 1)
        raise NotImplementedError


class OctreeSDF(nn.Module):
    """NGLOD's idioms: a dense feature volume per level of detail, features summed over the levels
    in place, cat(xyz, features) into a decoder per level, control flow on `lod`."""

    def __init__(self, feature_dim=4, hidden_dim=8, base_lod=1, num_lods=2, pos_invariant=False):
        super().__init__()
        self.num_lods, self.pos_invariant = num_lods, pos_invariant
        self.lod = num_lods - 1
        self.features = nn.ModuleList([FeatureVolume(feature_dim, 2 ** (i + base_lod)) for i in range(num_lods)])
        self.input_dim = feature_dim + (0 if pos_invariant else 3)
        self.louts = nn.ModuleList([nn.Sequential(nn.Linear(self.input_dim, hidden_dim), nn.ReLU(),
                                                  nn.Linear(hidden_dim, 1)) for _ in range(num_lods)])

    def forward(self, x, lod=None):
        return self.sdf(x, lod)

    def sdf(self, x, lod=None, return_lst=False):
        if lod is None:
            lod = self.lod
        lst, samples = [], []
        for i in range(self.num_lods):
            sample = self.features[i](x)
            samples.append(sample)
            if i > 0:
                samples[i] += samples[i - 1]
            ex_sample = samples[i]
            if not self.pos_invariant:
                ex_sample = torch.cat([x, ex_sample], dim=-1)
            lst.append(self.louts[i](ex_sample))
            if i == lod:
                break
        return lst if return_lst else lst[-1]


@pytest.mark.parametrize("lod", [0, 1])
def test_nglod_octree_sdf_one_level_at_a_time(lod):
    torch.manual_seed(0)
    m = OctreeSDF()
    g = trace_to_graph(m, example=lambda p: (p, lod), allow_unused=True)
    used = [m.features[i].fm for i in range(lod + 1)] + list(m.louts[lod].parameters())
    assert g.num_edges == sum(p.numel() for p in used)                 # every used parameter on one edge
    cells = g.x[:, L.N_TYPE] == L.node_type("cell")
    assert int(cells.sum()) == sum((2 ** (i + 1) + 1) ** 3 for i in range(lod + 1))
    assert int((g.x[:, L.N_TYPE] == L.node_type("channel")).sum()) == 4          # shared by the levels
    with torch.no_grad():
        assert torch.allclose(g.dense_probe()[outputs_in_order(g)].t(), m(probe_points(), lod), atol=1e-5)
    # vertex (x, y, z) of the coarsest volume sits at its grid position, its edges hold fm[0, :, z, y, x]
    pos = g.x[cells][:27, L.N_POS]
    assert torch.allclose(pos[1], torch.tensor([0.0, -1.0, -1.0]))        # index (0, 0, 1): x = 0
    into = g.edge_index[1][torch.isin(g.edge_index[0], cells.nonzero().squeeze(1)[1:2])]
    assert into.numel() == 4
    vals = g.edge_attr[torch.isin(g.edge_index[0], cells.nonzero().squeeze(1)[1:2]), L.E_VALUE]
    assert torch.equal(vals, m.features[0].fm[0, :, 0, 0, 1].detach())
    if lod == 0:                                  # the finer level's parameters are named unless allowed
        with pytest.raises(TraceError, match=r"features\.1\.fm"):
            trace_to_graph(m, example=lambda p: (p, lod))


class TriplaneField(nn.Module):
    """A tri-plane NeRF's idioms (gmnerf): planes [3, R, R, C] permuted channels-first, sampled at
    (x, y), (x, z), (y, z) of the box-normalised input with align_corners, summed over the planes;
    MLP input cat(frequency encoding, features); `len(...)` on the plane list; no biases, sine."""

    def __init__(self, res=6, feat=4, n_freqs=2, hidden=16, layers=2, aabb=(-0.7,) * 3 + (0.7,) * 3):
        super().__init__()
        self.triplane = nn.Parameter(torch.normal(0, 0.1, (3, res, res, feat)))
        self.register_buffer("aabb", torch.tensor(aabb))
        self.n_freqs = n_freqs
        self.planes = [(0, 1), (0, 2), (1, 2)]
        dims = [3 * 2 * n_freqs + feat] + [hidden] * layers + [4]
        self.mlp = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:]))

    def encode(self, u):
        return torch.cat([f(2 ** k * math.pi * u[..., a:a + 1]) for a in range(3) for k in range(self.n_freqs)
                          for f in (torch.sin, torch.cos)], -1)

    def forward(self, x):
        u = (x - self.aabb[:3]) / (self.aabb[3:] - self.aabb[:3])
        coords = 2 * u - 1
        planes = self.triplane.permute(0, 3, 1, 2)
        grid = torch.stack([coords[..., list(self.planes[i])] for i in range(len(self.planes))]).unsqueeze(1)
        feats = F.grid_sample(planes, grid, align_corners=True).sum(0).squeeze(1).t()
        h = torch.cat([self.encode(u), feats], -1)
        for i, lin in enumerate(self.mlp):
            h = lin(h)
            if i < len(self.mlp) - 1:
                h = torch.sin(h)
        return h


def test_triplane_field_summed_planes():
    torch.manual_seed(0)
    m = TriplaneField()
    g = to_graph(m)
    assert g.num_edges == sum(p.numel() for p in m.parameters())
    assert int((g.x[:, L.N_TYPE] == L.node_type("cell")).sum()) == 3 * 6 * 6
    with torch.no_grad():
        assert torch.allclose(g.dense_probe()[outputs_in_order(g)].t(), m(probe_points()), atol=1e-5)
    # plane (x, z) cell (h, w) = (1, 4): x / 0.7 = 2 * 4 / 5 - 1 (width), z / 0.7 = 2 * 1 / 5 - 1 (height), y = 0
    cells = (g.x[:, L.N_TYPE] == L.node_type("cell")).nonzero().squeeze(1)
    c = cells[36 + 1 * 6 + 4]
    assert torch.allclose(g.x[c, L.N_POS], torch.tensor([0.7 * 0.6, 0.0, 0.7 * -0.6]), atol=1e-6)
    vals = g.edge_attr[g.edge_index[0] == c, L.E_VALUE]
    assert torch.equal(vals, m.triplane[1, 1, 4].detach())


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.triplane = nn.Parameter(torch.randn(3, 4, 5, 5))
        self.lin = nn.Linear(3 + 12, 1)

    def forward(self, x):
        grid = torch.stack([x[..., [0, 1]], x[..., [0, 2]], x[..., [1, 2]]]).unsqueeze(1)
        feats = F.grid_sample(self.triplane, grid, align_corners=True)[:, :, 0].permute(2, 0, 1).reshape(x.shape[0], -1)
        return self.lin(torch.cat([x, feats], -1))


def test_concatenated_planes_are_refused_by_name():
    with pytest.raises(Exception, match="samples concatenated instead of summed"):
        trace_to_graph(_Concat())
