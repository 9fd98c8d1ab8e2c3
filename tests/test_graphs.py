"""Parameter graphs: counts, values, positions, symmetry, batching and bad input."""
import math

import networkx as nx
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from gmn_inr.fields import (ARCHITECTURES, ArchSpec, HashGridSpec, MLPSpec, OctreeField, SpecError, TriplaneField,
                            arch_spec, arch_spec_for, build_field, hash_levels)
from gmn_inr.fields.mlp import Sine
from graphs import (GraphError, ParameterGraph, UnregisteredArchitectureError, layout as L, register_converter,
                    to_graph)
from graphs.registry import _CONVERTERS


def mlp_counts(spec: ArchSpec, n_in: int) -> tuple[int, int]:
    H, W, n_out = spec.mlp.hidden_layers, spec.mlp.hidden_dim, spec.out_dim
    dims = [n_in] + [W] * H + [n_out]
    edges = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    nodes = sum(dims)
    if spec.mlp.bias:
        edges += H * W + n_out
        nodes += H + 1
    return nodes, edges


def expected_counts(field) -> tuple[int, int]:
    """The docstring formulas of each converter, written out independently."""
    spec = field.spec
    enc = spec.encoding.out_dim if spec.encoding is not None else 0
    if spec.family == "mlp":
        return mlp_counts(spec, enc)
    if spec.family == "triplane":
        R, C = spec.grid.resolution, spec.grid.channels
        n, e = mlp_counts(spec, C + enc)
        return n - C - enc + 3 * R * R + C + enc, e + 3 * R * R * C
    if spec.family == "hashgrid":
        g = spec.grid
        T = int(hash_levels(g).size.sum())
        n, e = mlp_counts(spec, g.n_levels * g.features_per_level)
        return n + T, e + T * g.features_per_level
    if spec.family == "octree":
        V = sum(field.vertices(i).shape[0] for i in range(spec.grid.n_lods))
        C = spec.grid.channels
        n, e = mlp_counts(spec, C + enc)
        return n + V, e + V * C
    raise AssertionError(spec.family)


def sphere(p):
    return p.norm(dim=-1) < 0.6


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_counts_and_values_every_architecture(name):
    spec = arch_spec(name)
    field = build_field(spec, occupancy=sphere) if spec.family == "octree" else build_field(spec)
    g = to_graph(field)
    assert (g.num_nodes, g.num_edges) == expected_counts(field)
    params = torch.cat([p.detach().reshape(-1) for p in field.parameters()])
    assert g.num_edges == params.numel()
    assert torch.equal(torch.sort(g.edge_attr[:, L.E_VALUE]).values, torch.sort(params).values)


def test_hash_graph_paper_formula_n_t_plus_f():
    # every level of HASH-11T is hashed or full: N(T+F) nodes, NTF edges in the grid part
    spec = arch_spec("HASH-11T")
    g = spec.grid
    T, N, F = 2 ** g.log2_hashmap_size, g.n_levels, g.features_per_level
    graph = to_graph(build_field(spec))
    grid_nodes = (graph.x[:, L.N_TYPE] >= L.NodeType.HASH_ENTRY_DENSE).sum() + (graph.x[:, L.N_TYPE] == L.NodeType.GRID_CHANNEL).sum()
    assert int(grid_nodes) == N * (T + F)
    assert int((graph.edge_attr[:, L.E_TYPE] == L.EdgeType.HASH).sum()) == N * T * F


def test_sequential_edges_are_the_parameters_in_order():
    seq = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), Sine(30.0), nn.Linear(16, 1))
    g = to_graph(seq)
    params = torch.cat([p.detach().reshape(-1) for p in seq.parameters()])
    assert g.num_edges == params.numel()
    # weights then bias per layer, in nn.Linear's row-major order
    assert torch.equal(g.edge_attr[:, L.E_VALUE], params)
    # edge i -> o of layer 1 holds W[o, i]
    w = seq[0].weight
    src, dst = g.edge_index[:, : w.numel()]
    assert torch.equal(g.edge_attr[: w.numel(), L.E_VALUE], w[dst - 3, src])


def test_triplane_each_value_on_its_own_cell_and_channel():
    spec = arch_spec("TRI").replace(grid=arch_spec("TRI").grid.__class__(resolution=4, channels=3))
    field = TriplaneField(spec)
    g = to_graph(field)
    R, C = 4, 3
    plane_edges = g.edge_attr[:, L.E_TYPE] == L.EdgeType.PLANE
    pos = g.edge_attr[plane_edges][:, L.E_POS]
    vals = g.edge_attr[plane_edges][:, L.E_VALUE]
    chan_nodes = (g.x[:, L.N_TYPE] == L.NodeType.GRID_CHANNEL).nonzero().squeeze(1)
    c = g.edge_index[1, plane_edges] - chan_nodes[0]
    # which plane: the axis that is exactly 0 is the one the plane lacks
    missing = (pos == 0).float().argmax(1)                        # 2 -> (x,y), 1 -> (x,z), 0 -> (y,z)
    p = torch.tensor([2, 1, 0])[missing]
    axes = torch.tensor([[0, 1], [0, 2], [1, 2]])[p]
    uv = pos.gather(1, axes)
    wi = ((uv[:, 0] + 1) * R / 2 - 0.5).round().long()
    hi = ((uv[:, 1] + 1) * R / 2 - 0.5).round().long()
    assert torch.equal(vals, field.planes.detach()[p, c, hi, wi])
    # and the edge's position is where grid_sample reads exactly that value
    with torch.no_grad():
        field.planes.zero_()
        field.planes[1, 2, 3, 0] = 1.0
    g = to_graph(field)
    k = (g.edge_attr[:, L.E_VALUE] == 1.0).nonzero().item()
    feats = field.grid_features(g.edge_attr[k, L.E_POS].unsqueeze(0))
    assert feats[0, 2].item() == pytest.approx(1.0) and feats[0, :2].abs().max() == 0


def test_no_isolated_nodes_and_every_node_reaches_an_output():
    for name in ("MLP", "TRI", "HASH", "OCT"):
        spec = arch_spec_for(name, 4, "tiny")
        field = build_field(spec, occupancy=sphere) if spec.family == "octree" else build_field(spec)
        g = to_graph(field)
        deg = torch.zeros(g.num_nodes, dtype=torch.long)
        deg.index_add_(0, g.edge_index.reshape(-1), torch.ones(2 * g.num_edges, dtype=torch.long))
        assert int((deg == 0).sum()) == 0, name
        # reverse reachability from the outputs, one hop per layer (vectorised)
        reach = g.x[:, L.N_TYPE] == L.NodeType.OUTPUT
        for _ in range(spec.mlp.hidden_layers + 3):
            hit = torch.zeros_like(reach)
            hit[g.edge_index[0, reach[g.edge_index[1]]]] = True
            reach = reach | hit
        assert bool(reach.all()), f"{name}: {int((~reach).sum())} nodes cannot reach an output"


def test_activation_is_a_feature():
    relu = build_field(arch_spec("MLP").replace(mlp=MLPSpec(activation="relu")))
    sine = build_field(arch_spec("MLP").replace(mlp=MLPSpec(activation="sine")))
    sine.load_state_dict(relu.state_dict())
    a, b = to_graph(relu), to_graph(sine)
    assert torch.equal(a.edge_attr[:, L.E_VALUE], b.edge_attr[:, L.E_VALUE])
    assert not torch.equal(a.x, b.x) and not torch.equal(a.edge_attr, b.edge_attr)


@pytest.mark.parametrize("name", ["MLP", "TRI", "HASH", "OCT", "HASH-11T"])
def test_integer_features_are_scaled(name):
    spec = arch_spec(name)
    g = to_graph(build_field(spec))
    node_cols = [c for c in range(L.NODE_DIM) if c != L.N_TYPE]
    edge_cols = [c for c in range(L.EDGE_DIM) if c not in (L.E_TYPE, L.E_VALUE)]
    assert g.x[:, node_cols].abs().max() <= 1.0
    assert g.edge_attr[:, edge_cols].abs().max() <= 1.0
    assert g.x[:, L.N_TYPE].max() < L.NUM_NODE_TYPES and g.edge_attr[:, L.E_TYPE].max() < L.NUM_EDGE_TYPES


def _nx(g: ParameterGraph):
    return g.to_networkx()


def _same_node(u, v):
    # probe features of permuted neurons are sums in another order: equal up to rounding
    return u["x"] == v["x"] and len(u["probe"]) == len(v["probe"]) and \
        all(abs(a - b) <= 1e-5 for a, b in zip(u["probe"], v["probe"]))


def test_hidden_permutation_gives_isomorphic_graph():
    spec = arch_spec("MLP").replace(mlp=MLPSpec(hidden_layers=2, hidden_dim=5, bias=True),
                                    encoding=arch_spec("OCT").encoding)
    field = build_field(spec)
    perm = build_field(spec)
    perm.load_state_dict(field.state_dict())
    with torch.no_grad():
        p1, p2 = torch.randperm(5), torch.randperm(5)
        l0, l1, l2 = perm.mlp.layers
        l0.weight.copy_(l0.weight[p1]); l0.bias.copy_(l0.bias[p1])
        l1.weight.copy_(l1.weight[p2][:, p1]); l1.bias.copy_(l1.bias[p2])
        l2.weight.copy_(l2.weight[:, p2])
    x = torch.rand(10, 3) * 2 - 1
    assert torch.allclose(field(x), perm(x), atol=1e-6)
    a, b = to_graph(field), to_graph(perm)
    assert not torch.equal(a.edge_attr, b.edge_attr)
    assert nx.is_isomorphic(_nx(a), _nx(b), node_match=_same_node,
                            edge_match=lambda u, v: sorted(d["attr"] for d in u.values()) == sorted(d["attr"] for d in v.values()))
    # and a different network is not isomorphic
    with torch.no_grad():
        perm.mlp.layers[1].weight[0, 0] += 1.0
    assert not nx.is_isomorphic(_nx(a), _nx(to_graph(perm)), node_match=_same_node,
                                edge_match=lambda u, v: sorted(d["attr"] for d in u.values()) == sorted(d["attr"] for d in v.values()))


def test_mixed_batch_round_trips():
    fields = [build_field(arch_spec_for(n, 4, "tiny")) for n in ("MLP", "TRI", "HASH", "OCT")]
    graphs = [to_graph(f) for f in fields]
    batch = Batch.from_data_list([g.to_pyg() for g in graphs])
    assert batch.num_graphs == 4
    assert batch.num_nodes == sum(g.num_nodes for g in graphs)
    for g, d in zip(graphs, batch.to_data_list()):
        assert torch.equal(d.x, g.x) and torch.equal(d.edge_index, g.edge_index) and torch.equal(d.edge_attr, g.edge_attr)
    # edges never cross graphs
    assert torch.equal(batch.batch[batch.edge_index[0]], batch.batch[batch.edge_index[1]])


def test_bad_input_gives_clear_errors():
    f = build_field(arch_spec("MLP"))
    with torch.no_grad():
        f.mlp.layers[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"mlp\.layers\.1\.weight.*NaN"):
        to_graph(f)
    with torch.no_grad():
        f.mlp.layers[1].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        to_graph(f)
    with pytest.raises(GraphError, match="layer 2"):
        to_graph(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(7, 1)))
    with pytest.raises(GraphError, match="Conv1d"):
        to_graph(nn.Sequential(nn.Linear(3, 8), nn.Conv1d(1, 1, 1)))

    class Mystery(nn.Module):
        pass

    with pytest.raises(UnregisteredArchitectureError, match=r"(?s)Mystery.*register_converter"):
        to_graph(Mystery())
    with pytest.raises(TypeError):
        to_graph("not a module")
    with pytest.raises(SpecError, match="hidden_layers"):
        arch_spec("MLP").replace(mlp=MLPSpec(hidden_layers=0))
    with pytest.raises(SpecError, match="features_per_level"):
        ArchSpec(family="hashgrid", grid=HashGridSpec(features_per_level=3))
    with pytest.raises(SpecError, match="unknown architecture"):
        arch_spec("HASH-99Z")
    with pytest.raises(SpecError, match="family"):
        ArchSpec(family="nerfish")


def test_registry_decorator_and_entry_points(monkeypatch):
    import graphs.registry as reg

    class Plugged(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))

    def fake_entry_points(group):
        assert group == reg.ENTRY_POINT_GROUP

        class EP:
            name, value = "plugged", "plugin:register"

            def load(self):
                @register_converter(Plugged)
                def convert(m):
                    return to_graph(nn.Sequential(nn.Linear(2, 1)))
                return convert
        return [EP()]

    monkeypatch.setattr(reg, "_entry_points_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points", fake_entry_points)
    try:
        g = to_graph(Plugged())
        assert g.num_edges == 3
    finally:
        _CONVERTERS.pop(Plugged, None)


def test_octree_sparse_and_reload():
    from gmn_inr.fields import load_field

    spec = arch_spec("OCT", out_dim=1)
    dense = OctreeField(spec)
    sparse = OctreeField(spec, occupancy=sphere)
    assert to_graph(sparse).num_nodes < to_graph(dense).num_nodes
    again = load_field(spec, sparse.state_dict())
    x = torch.rand(100, 3) * 2 - 1
    assert torch.equal(again(x), sparse(x))
    assert torch.equal(to_graph(again).edge_attr, to_graph(sparse).edge_attr)


def test_fields_build_with_no_arguments_at_table7():
    from gmn_inr.fields import HashGridField, MLPField, OctreeField

    assert build_field(arch_spec("MLP")).mlp.layers[0].in_features == 144
    assert MLPField().spec == arch_spec("MLP")
    assert TriplaneField().planes.shape == (3, 16, 32, 32)
    assert HashGridField().grid.params.numel() == 4 * 4096 * 2
    assert OctreeField().spec.grid.channels == 8
    for name in ARCHITECTURES:
        s = arch_spec(name)
        assert ArchSpec.from_json(s.to_json()) == s
    with pytest.raises(SpecError, match="JSON"):
        ArchSpec.from_json("{not json")


def test_paper_style_ablation_graph():
    from graphs.transforms import paper_style

    g = to_graph(build_field(arch_spec("HASH-11T")))
    p = paper_style(g)
    hash_e = p.edge_attr[:, L.E_TYPE] == L.EdgeType.HASH
    # entry column: raw local index 0..T-1, as the paper feeds it; level column: table index
    entries = p.edge_attr[hash_e, L.E_ENTRY]
    assert entries.max() == 2 ** 11 - 1 and torch.equal(entries, entries.round())
    assert set(p.edge_attr[hash_e, L.E_LEVEL].unique().tolist()) == {0.0, 1.0, 2.0, 3.0}
    assert p.edge_attr[:, L.E_POS].abs().max() == 0 and p.x[:, L.N_ACT].abs().max() == 0
    assert torch.equal(p.edge_attr[:, L.E_VALUE], g.edge_attr[:, L.E_VALUE])
    assert g.probe is not None and p.probe is None          # the paper's graph has no probe features
    # the first F edges of level 1 hold entry 0, the last ones entry T-1
    lvl1 = (p.edge_attr[:, L.E_LEVEL] == 1) & hash_e
    assert p.edge_attr[lvl1, L.E_ENTRY][:2].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("name", ["MLP", "TRI", "HASH", "OCT", "Sequential"])
def test_probe_features_are_the_networks_activations(name):
    from graphs.probe import NUM_PROBES, probe_points

    torch.manual_seed(0)
    if name == "Sequential":
        net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 2))
        inputs = torch.cat([probe_points(), torch.zeros(NUM_PROBES, 2)], dim=1)     # x, y, z, then 0
    else:
        net = build_field(arch_spec_for(name, 4, "tiny"))
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * torch.randn_like(p))
        inputs = probe_points()
    g = to_graph(net).validate()
    dense = g.dense_probe()
    assert dense.shape == (g.num_nodes, NUM_PROBES)
    t = g.x[:, L.N_TYPE]
    with torch.no_grad():
        want = net(inputs)                                                      # [K, n_out]
    out = dense[t == L.NodeType.OUTPUT]
    assert torch.allclose(out.t(), want, atol=1e-5, rtol=1e-5)
    assert torch.all(dense[t == L.NodeType.BIAS] == 1)
    storage = g.x[:, L.N_LAYER] < 0                                             # plane cells, entries, vertices
    has = torch.zeros(g.num_nodes, dtype=torch.bool)
    has[g.probe_index] = True
    assert torch.equal(has, ~storage)                                           # every neuron, no storage node
    if name in ("TRI", "HASH", "OCT"):                                          # grid channels: interpolated features
        with torch.no_grad():
            feats = net.grid_features(probe_points())
        assert torch.allclose(dense[t == L.NodeType.GRID_CHANNEL], feats.t(), atol=1e-6)
    # probe_index is offset per graph in a batch
    b = Batch.from_data_list([g.to_pyg(), g.to_pyg()])
    assert torch.equal(b.probe_index, torch.cat([g.probe_index, g.probe_index + g.num_nodes]))
    # a NaN at a probe point is rejected
    bad = ParameterGraph(g.x, g.edge_index, g.edge_attr, probe=g.probe.clone(), probe_index=g.probe_index)
    bad.probe[0, 0] = float("nan")
    with pytest.raises(GraphError, match="probe"):
        bad.validate()
    bad = ParameterGraph(g.x, g.edge_index, g.edge_attr, probe=g.probe, probe_index=g.probe_index + g.num_nodes)
    with pytest.raises(GraphError, match="probe_index"):
        bad.validate()


# -- templates and batched conversion ------------------------------------------------------
@pytest.mark.parametrize("arch", ["MLP", "TRI-8C", "HASH-3N", "OCT"])
def test_to_batch_equals_one_at_a_time(arch):
    """graphs.to_batch gives exactly Batch.from_data_list of the one-at-a-time graphs."""
    from torch_geometric.data import Batch

    from gmn_inr.fields import arch_spec_for, build_field
    from graphs import to_batch

    fields = []
    for seed in range(3):
        torch.manual_seed(seed)
        spec = arch_spec_for(arch, 4, "tiny")
        fields.append(build_field(spec, occupancy=lambda p: p.norm(dim=-1) < 0.6) if spec.family == "octree"
                      else build_field(spec))
    want = Batch.from_data_list([to_graph(f).to_pyg() for f in fields])
    got = to_batch(fields)
    assert list(got.keys()) == list(want.keys()) and got.num_graphs == want.num_graphs == 3
    for k in want.keys():
        if torch.is_tensor(want[k]):
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    for a, b in zip(got.to_data_list(), want.to_data_list()):
        assert all(torch.equal(a[k], b[k]) for k in b.keys() if torch.is_tensor(b[k]))


def test_template_path_still_rejects_nan():
    from gmn_inr.fields import arch_spec_for, build_field

    f = build_field(arch_spec_for("TRI", 4, "tiny"))
    to_graph(f)                                        # template cached
    with torch.no_grad():
        f.planes[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"planes.*NaN"):
        to_graph(f)
