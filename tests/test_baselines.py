"""The no-learning and no-message-passing baselines of benchmarks/unseen_arch.py."""
import pytest
import torch

from gmn_inr.baselines import VoxelNet, sampled_output_features, sampled_outputs
from gmn_inr.encoder import GMNEncoder, batch_graphs
from gmn_inr.fields import arch_spec_for, build_field
from gmn_inr.train import TrainConfig, train
from graphs import layout as L
from graphs import to_graph
from tiny_records import tiny_pairs


@pytest.mark.parametrize("name", ["MLP", "TRI", "HASH", "OCT", "HASH-3N"])
def test_sampled_outputs_equal_the_output_neurons_probe_rows(name):
    torch.manual_seed(3)
    field = build_field(arch_spec_for(name, 4, "tiny"))
    g = to_graph(field)
    out_nodes = (g.x[:, L.N_TYPE] == int(L.NodeType.OUTPUT)).nonzero().squeeze(1)
    rows = g.dense_probe()[out_nodes]                       # output nodes in channel order
    assert torch.equal(g.x[out_nodes, L.N_OUT], torch.arange(4) / 4)
    s = sampled_outputs(field)
    assert s.shape == rows.shape == (4, g.probe.shape[1])
    assert torch.allclose(s, rows, atol=1e-6)
    assert torch.allclose(sampled_output_features(field), torch.asinh(rows).reshape(-1), atol=1e-6)


def test_voxelnet_features_are_what_its_class_layer_reads():
    net = VoxelNet(4, 5).eval()
    v = torch.randn(3, 4, 8, 8, 8)
    f = net.features(v)
    assert f.shape == (3, 64)
    assert torch.allclose(net.net[-1](f), net(v), atol=1e-6)


def test_zero_block_encoder_reads_probes_and_trains():
    enc = GMNEncoder.from_preset("tiny", layers=0)
    assert len(enc.blocks) == 0
    pairs = tiny_pairs(3, ("MLP", "HASH"), "radiance", fit_steps=40)
    cfg = TrainConfig(preset="tiny", loss="R+C", encoder={"layers": 0}, steps=6, batch_pairs=2, rays_per_inr=16,
                      samples_per_ray=8, log_every=1)
    res = train(cfg, pairs, progress=False)
    assert len(res.encoder.blocks) == 0
    first, last = res.history[0], res.history[-1]
    assert all(torch.isfinite(torch.tensor(v)) for v in last.values())
    # the probe projection and the output readout learned: reading probe rows is all it has
    start = train(cfg, pairs, progress=False, stop_after=0).encoder
    for name in ("node_probe", "output_readout"):
        assert not torch.equal(getattr(res.encoder, name).weight, getattr(start, name).weight), name
    assert last["total"] != first["total"]


def test_negative_block_count_is_refused():
    with pytest.raises(ValueError, match="layers must be >= 0"):
        GMNEncoder.from_preset("tiny", layers=-1)


def test_weights_only_encoder_does_not_collapse():
    """The paper's graph read from the weights alone: without the architecture baseline, INRs of
    one family end (nearly) parallel after training, which is the collapse the benchmark's
    "as published" row shows; with it, different objects stay apart."""
    from graphs.transforms import paper_style

    pairs = tiny_pairs(4, ("MLP", "HASH"), "radiance", fit_steps=60)
    recs = [r for p in pairs for r in p]
    worst = {}
    for vb in (False, True):
        cfg = TrainConfig(preset="tiny", loss="C", steps=20, batch_pairs=4, lr=3e-3,
                          encoder={"probe_dim": 0, "output_readout": False, "value_baseline": vb})
        enc = train(cfg, pairs, progress=False).encoder.eval()
        with torch.no_grad():
            z = torch.nn.functional.normalize(enc(batch_graphs([paper_style(r.graph()) for r in recs])), dim=-1)
        cos = z @ z.t()
        other = torch.tensor([[a.object_id != b.object_id and a.family == b.family for b in recs] for a in recs])
        worst[vb] = float(cos[other].max())
    assert worst[False] > 0.99999            # collapsed: every pair of objects at cosine ~1
    assert worst[True] < 0.9999, worst       # apart by more than 100x the collapsed gap
