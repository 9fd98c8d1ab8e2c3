import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from gmn_inr.decoder import ConditionalDecoder
from gmn_inr.embedder import Embedder
from gmn_inr.encoder import GMNEncoder, batch_graphs
from gmn_inr.fields import arch_spec_for, build_field
from graphs import to_graph


def _field(name, preset="tiny", out_dim=4, seed=0):
    torch.manual_seed(seed)
    f = build_field(arch_spec_for(name, out_dim, preset))
    with torch.no_grad():                      # move every parameter off its init distribution
        for p in f.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return f


def _permute_hidden(field, seed):
    """The same function with every hidden layer's neurons permuted (rows of W_k, columns of W_k+1)."""
    f = copy.deepcopy(field)
    g = torch.Generator().manual_seed(seed)
    layers = f.mlp.layers
    with torch.no_grad():
        for k in range(len(layers) - 1):
            p = torch.randperm(layers[k].out_features, generator=g)
            layers[k].weight.copy_(layers[k].weight[p])
            if layers[k].bias is not None:
                layers[k].bias.copy_(layers[k].bias[p])
            layers[k + 1].weight.copy_(layers[k + 1].weight[:, p])
    return f


@pytest.mark.parametrize("name", ["MLP", "TRI", "HASH", "OCT"])
def test_embedding_invariant_to_hidden_permutations(name):
    field = _field(name)
    perm = _permute_hidden(field, seed=1)
    x = torch.rand(16, 3) * 2 - 1
    assert torch.allclose(field(x), perm(x), atol=1e-5)                      # same function
    g0, g1 = to_graph(field), to_graph(perm)
    assert not torch.equal(g0.edge_attr, g1.edge_attr)                       # different weights order
    enc = GMNEncoder.from_preset("tiny").eval()
    with torch.no_grad():
        z = enc(batch_graphs([g0, g1]))
    assert (z[0] - z[1]).abs().max() < 1e-5
    # ...and not invariant to a change of the function
    other = _field(name, seed=5)
    with torch.no_grad():
        z2 = enc(batch_graphs([to_graph(other)]))
    assert (z[0] - z2[0]).abs().max() > 1e-4


def test_batching_invariance():
    graphs = [to_graph(_field(n, seed=i)) for i, n in enumerate(["MLP", "TRI", "HASH", "OCT"])]
    enc = GMNEncoder.from_preset("tiny").eval()
    with torch.no_grad():
        together = enc(batch_graphs(graphs))
        alone = torch.cat([enc(batch_graphs([g])) for g in graphs])
        single_data = enc(graphs[2].to_pyg())                 # a Data without .batch is one graph
        reordered = enc(batch_graphs(graphs[::-1])).flip(0)
    assert together.shape == (4, 32)
    assert torch.allclose(together, alone, atol=1e-6)
    assert torch.allclose(single_data[0], alone[2], atol=1e-6)
    assert torch.allclose(reordered, together, atol=1e-6)


def test_efficient_block_equals_plain_block():
    enc = GMNEncoder(hidden=24, layers=3, embed_dim=40, value_freqs=8).double()
    plain = enc.to_plain().double()
    b = batch_graphs([to_graph(_field("TRI")), to_graph(_field("MLP"))])
    out, ref = enc(b), plain(b)
    assert torch.allclose(out, ref, atol=1e-10)
    out.square().sum().backward()
    ref.square().sum().backward()
    # the gradient of W_e (edge part of W1) is the matching column block of the plain W1's gradient
    h = 24
    assert torch.allclose(enc.blocks[0].edge_w1.weight.grad, plain.blocks[0].w1.weight.grad[:, 2 * h:], atol=1e-9)
    assert torch.allclose(enc.readout.weight.grad, plain.readout.weight.grad, atol=1e-9)


def test_presets_and_defaults():
    d = GMNEncoder()
    assert (d.config.hidden, d.config.layers, d.config.embed_dim) == (128, 4, 1024)
    # the paper preset is the default sizes plus the direct probe readout (off in the bare
    # constructor so checkpoints written before it existed rebuild as they were)
    assert GMNEncoder.from_preset("paper").config == replace(d.config, probe_readout=True)
    assert not d.config.probe_readout and d.probe_readout is None
    # switching the probes or the output readout off switches the probe readout off with them
    assert GMNEncoder.from_preset("cpu", probe_dim=0).probe_readout is None
    assert GMNEncoder.from_preset("cpu", output_readout=False).probe_readout is None
    with pytest.raises(ValueError, match="probe_readout"):
        GMNEncoder.from_preset("cpu", probe_dim=0, probe_readout=True)
    assert GMNEncoder.from_preset("cpu").embed_dim < 1024
    with pytest.raises(ValueError, match="preset"):
        GMNEncoder.from_preset("huge")


def test_probe_features_are_read_only_when_asked_for():
    from graphs.transforms import paper_style

    g = to_graph(_field("HASH"))
    paper = paper_style(g)                                   # the paper's graph: no probe features
    enc = GMNEncoder.from_preset("tiny").eval()
    with pytest.raises(ValueError, match="probe features"):
        enc(batch_graphs([paper]))
    bare = GMNEncoder.from_preset("tiny", probe_dim=0, output_readout=False).eval()
    assert bare.node_probe is None and bare.output_readout is None
    with torch.no_grad():
        z = bare(batch_graphs([paper]))
        # the probes are read: changing them changes the embedding; a bare encoder ignores them
        data = g.to_pyg()
        z1 = enc(data)
        data.probe = data.probe * 2
        assert (enc(data) - z1).abs().max() > 1e-4
        assert torch.equal(bare(g.to_pyg()), bare(data))
        data.probe = data.probe[:, :5]
        with pytest.raises(ValueError, match="probe features must be"):
            enc(data)
        data = g.to_pyg()
        data.probe_index = data.probe_index + 10 ** 6
        with pytest.raises(ValueError, match="probe_index"):
            enc(data)
    assert torch.isfinite(z).all()


def test_bad_graphs_are_rejected():
    enc = GMNEncoder.from_preset("tiny")
    g = to_graph(_field("MLP")).to_pyg()
    bad = g.clone()
    bad.x = bad.x[:, :5]
    with pytest.raises(ValueError, match="node features"):
        enc(bad)
    bad = g.clone()
    bad.edge_index = bad.edge_index.clone()
    bad.edge_index[0, 0] = 10 ** 6
    with pytest.raises(ValueError, match="outside"):
        enc(bad)
    bad = g.clone()
    bad.edge_attr = bad.edge_attr.clone()
    bad.edge_attr[0, 2] = 99
    with pytest.raises(ValueError, match="edge type"):
        enc(bad)


def test_decoder_split_layers_equal_one_linear_on_the_concatenation():
    dec = ConditionalDecoder(embed_dim=8, out_dim=4, width=16, n_freqs=3).double()
    z = torch.randn(2, 8, dtype=torch.float64)
    xyz = torch.rand(2, 5, 3, dtype=torch.float64)
    first = nn.Linear(8 + 18, 16).double()
    skip = nn.Linear(8 + 18, 16).double()
    with torch.no_grad():
        first.weight.copy_(torch.cat([dec.first_z.weight, dec.first_p.weight], 1))
        first.bias.copy_(dec.first_z.bias)
        skip.weight.copy_(torch.cat([dec.skip_z.weight, dec.skip_p.weight], 1))
        skip.bias.copy_(dec.skip_z.bias)
    inp = torch.cat([z.unsqueeze(1).expand(2, 5, 8), dec.encoding(xyz)], -1)   # the nf2vec input [z; PE(x)]
    h = torch.relu(dec.hidden2(torch.relu(first(inp)))) + torch.relu(skip(inp))
    ref = dec.out(torch.relu(dec.hidden4(torch.relu(dec.hidden3(h)))))
    assert torch.allclose(dec(z, xyz), ref, atol=1e-12)
    assert dec(z, torch.rand(2, 3, 4, 3, dtype=torch.float64)).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError):
        dec(z, torch.rand(3, 5, 3, dtype=torch.float64))


def test_embedder_accepts_fields_graphs_and_records(tmp_path):
    from tiny_records import tiny_records

    recs = tiny_records(2, ("MLP", "HASH"))["obj1"]
    emb = Embedder(GMNEncoder.from_preset("tiny"), batch_size=1)
    from_records = emb.embed(recs)
    from_fields = emb.embed([r.field() for r in recs])
    from_graphs = emb.embed([r.graph() for r in recs], batch_size=2)
    assert from_records.shape == (2, 32) and not from_records.requires_grad
    assert torch.allclose(from_records, from_fields, atol=1e-6)
    assert torch.allclose(from_records, from_graphs, atol=1e-6)
    assert emb.embed(recs[0]).shape == (1, 32)
    path = emb.save(tmp_path / "enc.safetensors")
    again = Embedder.from_checkpoint(path)
    assert torch.allclose(again.embed(recs), from_records, atol=1e-6)
    with pytest.raises(TypeError, match="cannot embed"):
        emb.embed([42])


def test_chunked_readout_without_grad_equals_the_full_one(monkeypatch):
    enc = GMNEncoder.from_preset("tiny")
    b = batch_graphs([to_graph(_field("TRI")), to_graph(_field("HASH"))])
    full = enc(b).detach()
    monkeypatch.setattr(GMNEncoder, "READOUT_CHUNK", 100)
    with torch.no_grad():
        chunked = enc(b)
    assert torch.allclose(full, chunked, atol=1e-6)


def test_probe_readout_reads_each_output_channel_with_its_own_map():
    g = to_graph(_field("HASH"))
    enc = GMNEncoder.from_preset("tiny").eval()
    assert enc.probe_readout is not None
    from graphs import layout as L
    x = g.x
    is_out = x[:, L.N_TYPE] == int(L.NodeType.OUTPUT)
    term = enc._output_probe_term(x, is_out, g.probe, g.probe_index)
    rows = g.dense_probe()[is_out]                                 # [4, K], channels r, g, b, sigma
    d = enc.config.embed_dim
    w = enc.probe_readout.weight.view(4, d, -1)                    # [C, D, K]
    want = torch.stack([w[c] @ torch.asinh(rows[c]) for c in range(4)])
    assert torch.allclose(term, want, atol=1e-5)
    # swapping two channels' rows changes the embedding: the readout knows which channel is which
    swapped = g.probe.clone()
    out_rows = is_out[g.probe_index].nonzero().squeeze(1)
    swapped[out_rows[[0, 3]]] = swapped[out_rows[[3, 0]]]
    g2 = type(g)(g.x, g.edge_index, g.edge_attr, spec=g.spec, name=g.name, probe=swapped, probe_index=g.probe_index)
    with torch.no_grad():
        z = enc(batch_graphs([g, g2]))
    assert (z[0] - z[1]).abs().max() > 1e-4


def test_value_baseline_removes_what_the_architecture_alone_contributes():
    enc = GMNEncoder.from_preset("tiny", probe_dim=0, output_readout=False, value_baseline=True).eval()
    field = _field("TRI")
    zero = copy.deepcopy(field)
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    with torch.no_grad():
        z = enc(batch_graphs([to_graph(field), to_graph(zero), to_graph(_field("TRI", seed=4))]))
    assert z[1].abs().max() == 0                     # an all-zero INR is the architecture alone
    assert z[0].norm() > 1e-3 and (z[0] - z[2]).norm() > 1e-4
    # without the baseline, two INRs of one architecture are nearly parallel (cosine ~ 1)
    plain = GMNEncoder.from_preset("tiny", probe_dim=0, output_readout=False).eval()
    plain.load_state_dict(enc.state_dict())
    with torch.no_grad():
        zp = plain(batch_graphs([to_graph(field), to_graph(_field("TRI", seed=4))]))
    cos = torch.nn.functional.cosine_similarity
    assert cos(zp[0], zp[1], dim=0) > cos(z[0], z[2], dim=0)


def _plain_grads_as_efficient(plain, h):
    """The plain block's parameter gradients re-arranged under the efficient block's names."""
    g = {k: p.grad for k, p in plain.named_parameters()}
    w1, w2 = g["w1.weight"], g["w2.weight"]                  # W1 = [W1s | W1t | W1e], W2 = [W2s | W2e]
    out = {k: v for k, v in g.items() if not k.startswith(("w1.", "w2."))}
    out["node_proj.weight"] = torch.cat([w1[:, :h], w2[:, :h], w1[:, h:2 * h]])
    out.update({"edge_w1.weight": w1[:, 2 * h:], "edge_w1.bias": g["w1.bias"],
                "edge_w2.weight": w2[:, h:], "edge_w2.bias": g["w2.bias"]})
    return out


@pytest.mark.parametrize("case", ["random", "no_edges", "every_node_receives"])
def test_efficient_block_gradients_equal_plain_block(case):
    """GMNLayer (hand-written backward, and its composed-ops form) against the plain block on random
    graphs with duplicate edges, self-loops and nodes that receive nothing: outputs and every
    gradient (inputs and parameters) equal up to float64 rounding, in training mode."""
    from gmn_inr.encoder import ConcatGMNLayer, GMNLayer

    torch.manual_seed(3)
    n, n_edges, h = 40, 0 if case == "no_edges" else 260, 8
    src = torch.randint(0, n, (n_edges,))
    dst = torch.randint(0, n, (n_edges,)) if case == "every_node_receives" else torch.randint(0, n // 4, (n_edges,))
    if case == "every_node_receives":
        src, dst = torch.cat([src, torch.arange(n)]), torch.cat([dst, torch.arange(n).flip(0)])
    inv_deg = (1.0 / torch.bincount(dst, minlength=n).clamp_min(1).double()).unsqueeze(1)
    eff = GMNLayer(h).double().train()
    with torch.no_grad():
        for p in eff.parameters():                           # off the init (LayerNorm affine included)
            p.add_(0.3 * torch.randn_like(p))
    plain = ConcatGMNLayer.from_efficient(eff).train()
    x0, e0 = torch.randn(n, h, dtype=torch.double), torch.randn(src.shape[0], h, dtype=torch.double)
    wx, we = torch.randn(n, h, dtype=torch.double), torch.randn(src.shape[0], h, dtype=torch.double)
    results = []
    for layer, call in ((eff, eff.forward), (eff, eff.forward_composed), (plain, plain.forward)):
        layer.zero_grad(set_to_none=True)
        x, e = x0.clone().requires_grad_(), e0.clone().requires_grad_()
        xo, eo = call(x, e, src, dst, inv_deg)
        ((xo * wx).sum() + (eo * we).tanh().sum()).backward()
        grads = (dict(_plain_grads_as_efficient(layer, h)) if layer is plain
                 else {k: p.grad for k, p in layer.named_parameters()})
        results.append((xo.detach(), eo.detach(), x.grad, e.grad, grads))
    ref = results[-1]
    for got in results[:-1]:
        for a, b in zip(got[:4], ref[:4]):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
        assert got[4].keys() == ref[4].keys()
        for k in ref[4]:
            assert torch.allclose(got[4][k], ref[4][k], rtol=1e-10, atol=1e-10), k


def test_value_norm_reads_values_relative_to_their_group():
    g = to_graph(_field("HASH"))
    ea = g.edge_attr.clone()
    v, log_rms = GMNEncoder._normalised_values(ea, None)
    scaled = ea.clone()
    scaled[:, 0] *= 10.0
    v2, log_rms2 = GMNEncoder._normalised_values(scaled, None)
    assert torch.allclose(v, v2, atol=1e-5)                  # a group's scale is read apart ...
    assert torch.allclose(log_rms2, log_rms + 0.25, atol=1e-5)   # ... as log10(RMS) / 4
    from graphs import layout as L
    for t in ea[:, L.E_TYPE].unique():                       # each group has unit RMS
        sel = ea[:, L.E_TYPE] == t
        lvl = ea[sel, L.E_LEVEL]
        for lv in lvl.unique():
            grp = v[sel][lvl == lv]
            layers = ea[sel][lvl == lv, L.E_LAYER]
            for ly in layers.unique():
                rms = grp[layers == ly].square().mean().sqrt()
                assert abs(float(rms) - 1.0) < 1e-4


def test_embed_norm_standardises_in_training_and_uses_running_stats_in_eval():
    graphs = [to_graph(_field(n, seed=i)) for i, n in enumerate(["MLP", "TRI", "HASH", "OCT"])]
    enc = GMNEncoder.from_preset("tiny", embed_norm=True)
    z = enc(batch_graphs(graphs))
    assert torch.allclose(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4)
    assert not torch.equal(enc.embed_var, torch.ones_like(enc.embed_var))       # running stats moved
    enc.eval()
    with torch.no_grad():
        one = torch.cat([enc(batch_graphs([g])) for g in graphs])
        all_ = enc(batch_graphs(graphs))
    assert torch.allclose(one, all_, atol=1e-5)          # eval: an embedding does not depend on its batch


def test_chunked_pooled_readout_equals_autograd():
    """blocks.pooled_relu_linear (chunked forward, recomputing backward) against index_add(relu(linear))
    differentiated by autograd: same sums, same gradients for e, W and b, whatever the chunk."""
    from gmn_inr.blocks import pooled_relu_linear

    torch.manual_seed(0)
    e = torch.randn(1000, 8, dtype=torch.float64, requires_grad=True)
    graph = torch.sort(torch.randint(0, 5, (1000,))).values
    lin = torch.nn.Linear(8, 6).double()
    g = torch.randn(5, 6, dtype=torch.float64)
    ref = torch.zeros(5, 6, dtype=torch.float64).index_add(0, graph, torch.relu(lin(e)))
    ref_grads = torch.autograd.grad((ref * g).sum(), [e, lin.weight, lin.bias])
    for chunk in (7, 256, 4096):
        out = pooled_relu_linear(e, graph, 5, lin, chunk)
        assert torch.allclose(out, ref, atol=1e-12)
        grads = torch.autograd.grad((out * g).sum(), [e, lin.weight, lin.bias])
        for a, b in zip(grads, ref_grads):
            assert torch.allclose(a, b, atol=1e-12)


def test_identical_sources_are_computed_once_with_the_same_embedding_and_gradients():
    """A hash grid's hashed entries of one level receive no edge and start bit-identical: the
    encoder runs its blocks on one node per such group, and the embedding and every parameter's
    gradient equal those of the encoder that runs every node (float64, so only summation order
    differs)."""
    from gmn_inr.blocks import shared_sources

    graphs = [to_graph(_field("HASH")), to_graph(_field("MLP")), to_graph(_field("HASH", seed=1))]
    b = batch_graphs(graphs)
    n = b.x.shape[0]
    src, dst = b.edge_index
    keep, node_map = shared_sources(b.x, dst, b.probe_index)
    assert keep.shape[0] < n // 2                                    # most hash entries merge
    assert torch.equal(node_map.index_select(0, keep), torch.arange(keep.shape[0]))
    # only nodes without incoming edges or probe rows merge, and only onto bit-identical rows
    merged = torch.ones(n, dtype=torch.bool)
    merged[keep] = False
    receives = torch.bincount(dst, minlength=n) > 0
    assert not (merged & receives).any() and not merged[b.probe_index].any()
    assert torch.equal(b.x, b.x[keep][node_map])
    # a graph with nothing to merge (an MLP's nodes all differ) is left as it is
    m = batch_graphs([to_graph(_field("MLP"))])
    assert shared_sources(m.x, m.edge_index[1], m.probe_index) is None

    torch.manual_seed(0)
    enc = GMNEncoder.from_preset("tiny").double()
    ref = GMNEncoder.from_preset("tiny", merge_sources=False).double()
    ref.load_state_dict(enc.state_dict())
    z, z_ref = enc(b), ref(b)
    assert torch.allclose(z, z_ref, atol=1e-12)
    z.square().sum().backward()
    z_ref.square().sum().backward()
    for (name, p), q in zip(enc.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-10, rtol=1e-8), name
