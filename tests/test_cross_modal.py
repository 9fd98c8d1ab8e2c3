"""One encoder for geometry and appearance: an object's SDF INR finds its NeRF."""
import pytest
import torch

from gmn_inr.canonical import GEOMETRY_CHANNEL, FunctionCanonical, canonical_geometry
from gmn_inr.cross_modal import cross_modal_pairs, cross_modal_recall
from gmn_inr.train import TrainConfig, evaluate, train
from graphs import batch_graphs
from graphs.layout import N_OUT, N_TYPE, OUT_SCALE, NodeType
from tiny_records import tiny_records

N_OBJ = 4


@pytest.fixture(scope="module")
def records():
    rad = tiny_records(N_OBJ, ("MLP", "HASH"), "radiance", seed=3)
    sdf = tiny_records(N_OBJ, ("HASH",), "sdf", seed=3)         # same seed: the same spheres
    return [r for o in sorted(rad) for r in rad[o] + sdf[o]]


def _same_vs_other(encoder, pairs):
    """Mean distance between one object's SDF and NeRF embeddings, and between an SDF and the
    NeRFs of the other objects (embeddings normalised)."""
    encoder.eval()
    xm = [(a, b) for a, b in pairs if a.function == "sdf"]
    with torch.no_grad():
        za = torch.nn.functional.normalize(encoder(batch_graphs([a.graph() for a, _ in xm])), dim=-1)
        zb = torch.nn.functional.normalize(encoder(batch_graphs([b.graph() for _, b in xm])), dim=-1)
    d = torch.cdist(za, zb)
    same = torch.tensor([[a.object_id == b.object_id for _, b in xm] for a, _ in xm])
    return float(d[same].mean()), float(d[~same].mean())


def test_geometry_rows_are_one_quantity_for_sdf_and_nerf(records):
    from gmn_inr.baselines import sampled_outputs

    by = {(r.object_id, r.function, r.arch): r for r in records}
    sdf = canonical_geometry(sampled_outputs(by[("obj0", "sdf", "HASH")].field()), "sdf")
    nerf = canonical_geometry(sampled_outputs(by[("obj0", "radiance", "HASH")].field()), "radiance")
    other = canonical_geometry(sampled_outputs(by[("obj1", "radiance", "HASH")].field()), "radiance")
    cos = torch.nn.functional.cosine_similarity
    assert cos(sdf, nerf, dim=0) > cos(sdf, other, dim=0)
    # in geometry mode the SDF's output neuron reads through the density channel
    g = FunctionCanonical(by[("obj0", "sdf", "HASH")], geometry=True).graph()
    out = g.x[:, N_TYPE] == int(NodeType.OUTPUT)
    assert torch.all((g.x[out, N_OUT] * OUT_SCALE).round() == GEOMETRY_CHANNEL)


def test_cross_modal_training_lowers_every_term_and_pairs_sdf_with_its_nerf(records):
    pairs = cross_modal_pairs(records, radiance_archs=("MLP", "HASH"))
    assert len(pairs) == N_OBJ * 3 and sum(a.function == "sdf" for a, _ in pairs) == N_OBJ * 2
    cfg = TrainConfig(preset="tiny", loss="R+C+L2", contrastive_weight=0.2, l2_weight=0.05, steps=200, lr=3e-3,
                      batch_pairs=4, rays_per_inr=32, samples_per_ray=12, points_per_inr=128, log_every=5,
                      functions=["radiance", "sdf"])
    start = train(cfg, pairs, stop_after=0, progress=False)
    before = evaluate(start.model, pairs)
    same0, other0 = _same_vs_other(start.encoder, pairs)
    res = train(cfg, pairs, progress=False)
    after = evaluate(res.model, pairs)
    assert set(before) == {"render", "implicit", "contrastive", "l2"}
    for k in before:
        assert after[k] < 0.85 * before[k], (k, before[k], after[k])
    same, other = _same_vs_other(res.encoder, pairs)
    assert same < other, (same, other)
    assert not same0 < 0.8 * other0, "the untrained encoder already separates the objects: the check tests nothing"
    assert same < 0.8 * other
    # the recall helper reads the same embeddings
    test = [FunctionCanonical(r, geometry=True) for r in records]
    with torch.no_grad():
        z = res.encoder.eval()(batch_graphs([r.graph() for r in test]))
    rec = cross_modal_recall(z, test)
    assert set(rec) == {"sdf/radiance", "radiance/sdf", "by_family"} and 0 <= rec["sdf/radiance"]["1"] <= 1
