"""One encoder for geometry and appearance: an object's SDF INR finds its NeRF."""
import pytest
import torch

from gmn_inr.canonical import GEOMETRY_CHANNEL, FunctionCanonical, canonical_geometry
from gmn_inr.encoder import GEOMETRY_CHANNEL as ENCODER_GEOMETRY_CHANNEL
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
    assert set(rec) == {"sdf/radiance", "radiance/sdf", "by_family", "by_implicit_family", "matrix"}
    assert 0 <= rec["sdf/radiance"]["1"] <= 1 and set(rec["matrix"]) == {f"sdf:{f}/radiance:{g}" for f in
                                                                        {r.family for r in test if r.function == "sdf"}
                                                                        for g in ("hashgrid", "mlp")}


def _geometry_model(loss: str, geometry_dim: int = 8):
    from gmn_inr.training.model import GMNModel

    cfg = TrainConfig(preset="tiny", loss=loss, batch_pairs=2, rays_per_inr=8, samples_per_ray=6, points_per_inr=32,
                      functions=["radiance", "sdf"], encoder={"geometry_dim": geometry_dim})
    torch.manual_seed(0)
    model = GMNModel(cfg, ["radiance", "sdf"])
    with torch.no_grad():                     # away from its zero init, so that a gradient path would show
        model.encoder.geometry_state.weight.normal_()
    return model


def _xmod_batch(records):
    pairs = cross_modal_pairs(records, radiance_archs=("MLP", "HASH"))
    chosen = [p for p in pairs if p[0].function == "sdf"][:2]       # two objects' (SDF, NeRF) pairs
    recs = [a for a, _ in chosen] + [b for _, b in chosen]
    return batch_graphs([r.graph() for r in recs]), recs


def test_rendering_loss_never_reaches_the_geometry_head_and_alignment_only_reaches_it(records):
    """With a geometry head the reconstruction terms read the other columns only, SigLIP and L2
    the geometry columns only: gradients show which parameters each term can move."""
    batch, recs = _xmod_batch(records)
    seeds = list(range(len(recs)))
    model = _geometry_model("R")
    enc = model.encoder
    terms = model(batch, recs, seeds, len(recs))
    assert set(terms) == {"render", "implicit"}
    (terms["render"] + terms["implicit"]).backward()
    for p in (enc.geometry_probe.weight, enc.geometry_state.weight):
        assert p.grad is None or not p.grad.any()
    assert enc.readout.weight.grad.abs().sum() > 0 and enc.probe_readout.weight.grad.abs().sum() > 0

    model = _geometry_model("C")
    enc = model.encoder
    terms = model(batch, recs, seeds, len(recs), labels=None)
    (terms["contrastive"]).backward()
    assert enc.geometry_probe.weight.grad.abs().sum() > 0 and enc.geometry_state.weight.grad.abs().sum() > 0
    assert enc.blocks[0].node_proj.weight.grad.abs().sum() > 0          # through the geometry neuron's state
    for p in (enc.readout.weight, enc.output_readout.weight, enc.probe_readout.weight):
        assert p.grad is None or not p.grad.any()


def test_geometry_head_reads_the_geometry_row_and_no_colour_row(records):
    """The geometry columns move with the density/SDF output neuron's probe row and not with the
    r, g, b output rows; at init (state term 0) they are a linear map of that row alone."""
    enc = _geometry_model("C").encoder.eval()
    rad = next(FunctionCanonical(r, geometry=True) for r in records if r.function == "radiance")
    g = rad.graph()
    node_x = g.x[g.probe_index]
    out = node_x[:, N_TYPE] == int(NodeType.OUTPUT)
    chan = (node_x[:, N_OUT] * OUT_SCALE).round().long()
    colour, geo = out & (chan != GEOMETRY_CHANNEL), out & (chan == GEOMETRY_CHANNEL)
    assert int(colour.sum()) == 3 and int(geo.sum()) == 1

    def geometry_columns(graph):
        with torch.no_grad():
            return enc.split_geometry(enc(batch_graphs([graph])))

    import dataclasses
    rest0, geo0 = geometry_columns(g)
    probe = g.probe.clone()
    probe[colour] = torch.rand_like(probe[colour]) * 5
    rest1, geo1 = geometry_columns(dataclasses.replace(g, probe=probe))
    assert torch.allclose(geo0, geo1, atol=1e-6) and not torch.allclose(rest0, rest1)
    probe = g.probe.clone()
    probe[geo] = torch.rand_like(probe[geo])
    assert not torch.allclose(geo0, geometry_columns(dataclasses.replace(g, probe=probe))[1])
    # the side row (inside/outside at the probe points) moves the geometry columns and nothing else
    flipped = dataclasses.replace(g, side=-g.side)
    rest2, geo2 = geometry_columns(flipped)
    assert torch.equal(rest0, rest2) and not torch.allclose(geo0, geo2)
    with torch.no_grad():
        enc.geometry_state.weight.zero_()
        expected = enc.geometry_probe(torch.asinh(g.probe[geo])) + enc.geometry_side(g.side.unsqueeze(0))
    assert torch.allclose(geometry_columns(g)[1], expected, atol=1e-5)


def test_geometry_head_off_leaves_the_encoder_unchanged():
    from gmn_inr.encoder import GMNEncoder

    torch.manual_seed(0)
    plain = GMNEncoder.from_preset("tiny")
    torch.manual_seed(0)
    zero = GMNEncoder.from_preset("tiny", geometry_dim=0)
    torch.manual_seed(0)
    geo = GMNEncoder.from_preset("tiny", geometry_dim=8)
    assert plain.state_dict().keys() == zero.state_dict().keys()
    assert not any(k.startswith("geometry") for k in plain.state_dict())
    assert plain.decoded_dim == plain.embed_dim and geo.decoded_dim == geo.embed_dim - 8
    # the head is created last: every parameter the two share starts the same (the readouts narrower)
    assert torch.equal(plain.node_probe.weight, geo.node_probe.weight)
    with pytest.raises(ValueError):
        GMNEncoder.from_preset("tiny", geometry_dim=32)               # = embed_dim: no columns left


def test_encoder_and_canonical_agree_on_the_geometry_channel():
    assert ENCODER_GEOMETRY_CHANNEL == GEOMETRY_CHANNEL


def test_cross_modal_pairs_and_recall_with_sdfs_of_several_families():
    rad = tiny_records(2, ("MLP", "HASH"), "radiance", seed=5)
    sdf = tiny_records(2, ("MLP", "HASH"), "sdf", seed=5)
    recs = [r for o in sorted(rad) for r in rad[o] + sdf[o]]
    pairs = cross_modal_pairs(recs, implicit_archs=("HASH", "MLP"), radiance_archs=("MLP", "HASH"))
    # per object: 2 SDFs x 2 NeRFs + 1 NeRF pair, the SDF of each family against each NeRF
    assert len(pairs) == 2 * 5
    assert {(a.arch, b.arch) for a, b in pairs if a.function == "sdf"} == {(s, n) for s in ("HASH", "MLP")
                                                                           for n in ("MLP", "HASH")}
    with pytest.raises(TypeError, match="sequence"):
        cross_modal_pairs(recs, implicit_archs="HASH")
    # a one-hot embedding per object: every recall is 1, whatever the family of either side
    test = [FunctionCanonical(r, geometry=True) for r in recs]
    objs = sorted({r.object_id for r in test})
    z = torch.nn.functional.one_hot(torch.tensor([objs.index(r.object_id) for r in test]), len(objs)).float()
    rec = cross_modal_recall(z, test)
    assert set(rec["by_implicit_family"]) == {"sdf:mlp/radiance", "radiance/sdf:mlp", "sdf:hashgrid/radiance",
                                              "radiance/sdf:hashgrid"}
    assert len(rec["matrix"]) == 4 and all(v["1"] == 1.0 for v in rec["matrix"].values())
    assert rec["sdf/radiance"]["1"] == rec["radiance/sdf"]["1"] == 1.0
