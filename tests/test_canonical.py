"""gmn_inr.canonical: one bounded value for sdf / udf / occupancy, and the unified decoder's teacher."""
import itertools

import pytest
import torch

import gmn_inr.training.model as model_mod
from gmn_inr.canonical import (OCC_MEDIAN_DISTANCE, SURFACE_SPACING, TRUNCATION, FunctionCanonical,
                               canonical_graph, canonical_side, canonical_values, shape_teacher_pairs,
                               surface_distance)
from gmn_inr.train import TrainConfig, train
from graphs import GraphError, batch_graphs
from graphs.layout import N_TYPE, NodeType
from tiny_records import tiny_records

FUNCS = ("sdf", "udf", "occupancy")


def test_canonical_values_agree_across_functions_and_ignore_the_logit_scale():
    sdf = torch.linspace(-0.5, 0.8, 512)
    # a logit that is a monotone, non-linear function of the distance, at two different scales
    logit = -torch.sinh(sdf * 3)
    occ1, occ5 = canonical_values(logit, "occupancy"), canonical_values(5 * logit, "occupancy")
    assert torch.allclose(occ1, occ5)                                  # the scale is divided out
    assert torch.equal(canonical_values(sdf, "sdf"), canonical_values(sdf.abs(), "udf"))
    for f, v in (("sdf", sdf), ("udf", sdf.abs()), ("occupancy", logit)):
        c = canonical_values(v, f)
        assert float(c.min()) >= 0 and float(c.max()) <= 1 + 1e-6
    # the median probe point of an occupancy INR sits at OCC_MEDIAN_DISTANCE (before truncation)
    a = logit.abs()
    assert torch.isclose(canonical_values(a.median() * torch.ones(3), "occupancy")[0],
                         torch.tensor(min(OCC_MEDIAN_DISTANCE, TRUNCATION) / TRUNCATION))
    # the surface (zero crossing) is the canonical minimum for every function
    i0 = int(sdf.abs().argmin())
    for f, v in (("sdf", sdf), ("occupancy", logit)):
        assert int(canonical_values(v, f).argmin()) == i0
    x = torch.randn(4, 3)
    assert canonical_values(x, "radiance") is x
    with pytest.raises(ValueError, match="unknown function"):
        canonical_values(sdf, "density")


@pytest.fixture(scope="module")
def implicit_records():
    """Two sphere objects, an sdf, a udf and an occupancy HASH INR each."""
    return {f: tiny_records(2, ("HASH",), f, fit_steps=80) for f in FUNCS}


def test_canonical_graph_rewrites_only_the_output_rows(implicit_records):
    rec = implicit_records["occupancy"]["obj0"][0]
    g = rec.graph()
    c = FunctionCanonical(rec).graph()
    is_out = g.x[g.probe_index, N_TYPE] == int(NodeType.OUTPUT)
    assert int(is_out.sum()) == 1
    assert torch.equal(c.probe[~is_out], g.probe[~is_out])
    # an occupancy INR's row: its distance from its own sign changes, not its logit's scale
    surface = surface_distance(rec.field(), "occupancy")
    assert torch.allclose(c.probe[is_out], canonical_values(g.probe[is_out], "occupancy", surface))
    assert not torch.allclose(c.probe[is_out], canonical_values(g.probe[is_out], "occupancy"))
    assert not torch.allclose(c.probe[is_out], g.probe[is_out])
    assert c.x is g.x and c.edge_attr is g.edge_attr
    assert canonical_graph(g, "radiance") is g


def test_side_is_inside_outside_where_the_function_tells_it():
    sdf = torch.linspace(-0.5, 0.8, 64)
    logit = -torch.sinh(sdf * 3) * 40          # flat: saturated logits keep only their sign
    inside = torch.where(sdf < 0, 1.0, -1.0)
    assert torch.equal(canonical_side(sdf, "sdf"), inside)
    assert torch.equal(canonical_side(logit, "occupancy"), inside)
    assert torch.equal(canonical_side(sdf.abs(), "udf"), torch.zeros(64))      # a udf has no sign
    with pytest.raises(ValueError, match="unknown function"):
        canonical_side(sdf, "density")


def test_geometry_graphs_carry_the_side_and_batch_only_with_their_kind(implicit_records):
    sdf_rec, udf_rec = implicit_records["sdf"]["obj0"][0], implicit_records["udf"]["obj0"][0]
    g = sdf_rec.graph()
    out = g.x[g.probe_index, N_TYPE] == int(NodeType.OUTPUT)
    geo = FunctionCanonical(sdf_rec, geometry=True).graph().validate()
    assert torch.equal(geo.side, torch.where(g.probe[out][0] < 0, 1.0, -1.0))
    assert bool((geo.side == 1).any()) and bool((geo.side == -1).any())      # a sphere inside the probes
    assert torch.equal(FunctionCanonical(udf_rec, geometry=True).graph().side, torch.zeros(g.probe.shape[1]))
    assert FunctionCanonical(sdf_rec).graph().side is None                     # only geometry mode sets it
    assert batch_graphs([geo, geo]).side.shape == (2, g.probe.shape[1])
    with pytest.raises(ValueError, match="side row"):
        batch_graphs([geo, g])
    import dataclasses
    with pytest.raises(GraphError, match="side"):
        dataclasses.replace(geo, side=geo.side[:-1]).validate()
    with pytest.raises(GraphError, match="side"):
        dataclasses.replace(geo, side=geo.side * 0.5).validate()


def test_unified_decoder_target_is_the_shapes_udf_for_every_function_pair(implicit_records, monkeypatch):
    """With the unified decoder, every INR of every (sdf, udf), (sdf, occ), (udf, occ) pair is
    reconstructed against |its object's SDF INR| at the query points: the shape's UDF."""
    by_obj = {o: {f: implicit_records[f][o][0] for f in FUNCS} for o in ("obj0", "obj1")}
    pairs = [(fs[a], fs[b]) for fs in by_obj.values() for a, b in itertools.combinations(FUNCS, 2)]
    shape_pairs = shape_teacher_pairs([(FunctionCanonical(a), FunctionCanonical(b)) for a, b in pairs])
    assert len(shape_pairs) == len(pairs) == 6
    seen = []
    real_points, real_loss = model_mod.implicit_query_points, model_mod.implicit_loss

    def points(teacher, *a, **k):
        xyz, v = real_points(teacher, *a, **k)
        seen.append(xyz)
        return xyz, v

    targets = []

    def loss(pred, target, function, reduction="mean"):
        assert function == "udf"
        targets.append(target.detach())
        return real_loss(pred, target, function, reduction)

    monkeypatch.setattr(model_mod, "implicit_query_points", points)
    monkeypatch.setattr(model_mod, "implicit_loss", loss)
    cfg = TrainConfig(preset="tiny", loss="R", unified="udf", steps=1, batch_pairs=6, points_per_inr=64,
                      functions=["udf"])
    train(cfg, shape_pairs, progress=False)
    (tgt,) = targets                                                     # one head, one batch
    assert tgt.shape == (12, 64) and len(seen) == 12
    # the loop's batch order: all A's then all B's, in its shuffled order; match by points
    recs = [r for p in shape_pairs for r in p]
    matched = 0
    for xyz, t in zip(seen, tgt):
        # the teacher of each INR is its object's SDF INR, so the target is |sdf| there
        cands = [r for r in recs if torch.allclose(r.field()(xyz)[:, 0].abs(), t, atol=1e-6)]
        assert cands, "a target is not |an SDF INR| at its points"
        assert all(r.field() is by_obj[r.object_id]["sdf"].field() for r in cands)
        matched += 1
    assert matched == 12
    assert sorted(r.input_function for r in recs) == sorted(FUNCS * 4)


class _SphereField(torch.nn.Module):
    """A sphere's sdf, or a saturated occupancy logit of it (flat away from the surface, as the
    cpu zoo's tri-plane occupancy INRs are): ``[P, 3] -> [P, 1]``."""

    def __init__(self, centre, radius: float, function: str):
        super().__init__()
        self.centre, self.radius, self.function = torch.tensor(centre), radius, function

    def forward(self, xyz):
        sdf = (xyz - self.centre).norm(dim=-1, keepdim=True) - self.radius
        return sdf if self.function == "sdf" else -40 * torch.tanh(sdf * 200)


def test_a_flat_occupancy_inr_finds_its_sdf_by_its_sign_changes_or_its_side():
    """From its logit's scale a saturated occupancy INR's canonical row is nearly constant and finds
    the wrong sphere; its distance from its sign changes (the canonical row when the field is at
    hand) finds its own sphere's SDF, and so does the logit's scale with the side row."""
    from gmn_inr.baselines import sampled_outputs
    from gmn_inr.canonical import canonical_features, canonical_output_features
    from gmn_inr.tasks import recall_at_k

    # centres and radii off the probe grid: no probe point lies in the logit's thin graded band
    spheres = [((x, y, 0.05), r) for x in (-0.23, 0.27) for y in (-0.26, 0.24) for r in (0.33, 0.47)]
    ids = torch.arange(len(spheres))
    recall = {}
    for side in (False, True):
        sdf = torch.stack([canonical_output_features(_SphereField(c, r, "sdf"), "sdf", side=side) for c, r in spheres])
        scale = torch.stack([canonical_features(sampled_outputs(_SphereField(c, r, "occupancy")), "occupancy", side=side)
                             for c, r in spheres])
        signs = torch.stack([canonical_output_features(_SphereField(c, r, "occupancy"), "occupancy", side=side)
                             for c, r in spheres])
        recall["scale", side] = recall_at_k(scale, ids, sdf, ids, ks=(1,))["1"]
        recall["signs", side] = recall_at_k(signs, ids, sdf, ids, ks=(1,))["1"]
    assert recall["scale", False] < 0.5
    assert recall["scale", True] == 1.0 and recall["signs", False] == 1.0 and recall["signs", True] == 1.0


def test_surface_distance_is_the_distance_to_the_sign_change_whatever_the_logit():
    """A sphere's occupancy, graded or saturated, at any logit scale, and its sdf: the distance to
    the sign change is the sphere's |sdf| (truncated) to within the grid's spacing."""
    from graphs.probe import probe_points

    centre, radius = (0.03, -0.07, 0.11), 0.41
    truth = ((probe_points() - torch.tensor(centre)).norm(dim=-1) - radius).abs().clamp_max(TRUNCATION)

    class Graded(_SphereField):
        def forward(self, xyz):
            return -3 * torch.sinh(4 * ((xyz - self.centre).norm(dim=-1, keepdim=True) - self.radius))

    sdf = _SphereField(centre, radius, "sdf")
    graded = surface_distance(Graded(centre, radius, "occupancy"), "occupancy")
    saturated = surface_distance(_SphereField(centre, radius, "occupancy"), "occupancy")
    assert float((surface_distance(sdf, "sdf") - truth).abs().max()) < SURFACE_SPACING / 2
    assert float((graded - truth).abs().max()) < SURFACE_SPACING / 2
    assert float((saturated - truth).abs().max()) < SURFACE_SPACING
    near = truth < TRUNCATION
    assert int(near.sum()) > 50 and bool((graded[near] < TRUNCATION).all())   # the shell is found
    assert torch.isclose(graded.max(), torch.tensor(TRUNCATION))               # clamped beyond it

    class Scaled(Graded):
        def forward(self, xyz):
            return 7 * super().forward(xyz)

    # a crossing sits at a / (a - b) along its edge: a logit's scale cannot move it
    assert torch.allclose(surface_distance(Scaled(centre, radius, "occupancy"), "occupancy"), graded, atol=1e-6)

    class Infinite(_SphereField):
        def forward(self, xyz):
            return super().forward(xyz) * float("inf")

    # logits beyond float range: a crossing between two infinities sits mid-edge, never NaN
    assert float((surface_distance(Infinite(centre, radius, "occupancy"), "occupancy") - truth).abs().max()) < SURFACE_SPACING
    far = _SphereField((5.0, 5.0, 5.0), 0.5, "occupancy")                  # no surface in the box
    assert torch.equal(surface_distance(far, "occupancy"), torch.full_like(truth, TRUNCATION))
    with pytest.raises(ValueError, match="no inside and outside"):
        surface_distance(sdf, "udf")
    with pytest.raises(ValueError, match=r"\[K, 3\]"):
        surface_distance(sdf, "sdf", torch.zeros(5, 2))
    with pytest.raises(ValueError, match="occupancy INRs only"):
        canonical_values(truth, "sdf", truth)
    with pytest.raises(ValueError, match="one distance per point"):
        canonical_values(truth, "occupancy", truth[:-1])
