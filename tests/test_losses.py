import math

import pytest
import torch
import torch.nn.functional as F

from gmn_inr.losses import (LossWeights, SigLIP, combine, convert_target, implicit_loss, implicit_query_points,
                            l2_alignment, rendering_loss, siglip_loss)


def _siglip_by_hand(u, v, t, b):
    """The SigLIP formula (docs/reference.md, "SigLIP") written out term by term:
    L = -1/|B| sum_j sum_k log sigmoid(l_jk (exp(t) u_j . v_k + b)), l_jj = 1 else -1."""
    n = u.shape[0]
    total = 0.0
    for j in range(n):
        for k in range(n):
            l = 1.0 if j == k else -1.0
            z = l * (math.exp(t) * float(u[j] @ v[k]) + b)
            total += math.log(1.0 / (1.0 + math.exp(-z)))
    return -total / n


def test_siglip_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    u = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=-1)
    v = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=-1)
    for t, b in [(math.log(10), -10.0), (0.3, 1.5), (2.0, 0.0)]:
        got = siglip_loss(u, v, torch.tensor(t, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
        assert abs(got.item() - _siglip_by_hand(u, v, t, b)) < 1e-10


def test_siglip_module_init_and_gradients():
    m = SigLIP()
    assert abs(m.log_t.item() - math.log(10)) < 1e-7 and m.b.item() == -10.0
    u = torch.randn(4, 8, requires_grad=True)
    v = u.detach() + 0.01 * torch.randn(4, 8)
    loss = m(u, v)
    loss.backward()
    assert m.log_t.grad is not None and m.b.grad is not None and u.grad.abs().sum() > 0
    # matched pairs give a lower loss than shuffled ones
    assert m(v, v) < m(v, v.roll(1, 0))
    with pytest.raises(ValueError):
        siglip_loss(torch.zeros(3, 2), torch.zeros(4, 2), torch.tensor(0.0), torch.tensor(0.0))


def test_rendering_loss_weights_foreground_and_background():
    pred = torch.zeros(1, 4, 3)
    target = torch.tensor([[[1.0] * 3, [0.0] * 3, [0.5] * 3, [0.0] * 3]])
    acc = torch.tensor([[0.9, 0.9, 0.1, 0.1]])
    # fg rays: errors 1 (smooth-L1 = 0.5) and 0 -> mean 0.25; bg rays: 0.5 (0.125) and 0 -> 0.0625
    got = rendering_loss(pred, target, acc)
    assert torch.allclose(got, torch.tensor(0.8 * 0.25 + 0.2 * 0.0625))
    per = rendering_loss(pred.expand(2, 4, 3), target.expand(2, 4, 3), acc.expand(2, 4), reduction="none")
    assert per.shape == (2,)
    # no foreground ray at all: that term is 0, not NaN
    assert torch.isfinite(rendering_loss(pred, target, torch.zeros(1, 4)))


def test_implicit_loss_and_conversions():
    t = torch.tensor([[0.05, -0.5, 0.3]])
    assert implicit_loss(t, t, "sdf") == 0
    # errors beyond the clamp band do not count: both -0.5 and -0.9 clamp to -0.1
    assert implicit_loss(torch.tensor([[0.05, -0.9, 0.3]]), t, "sdf") == 0
    assert implicit_loss(t + 0.01, t, "udf") > 0
    # a prediction beyond the band keeps its gradient towards a target inside it
    p = torch.tensor([[0.7, -0.5, 0.3]], requires_grad=True)
    loss = implicit_loss(p, t, "sdf")
    assert abs(loss.item() - 0.65 / 3) < 1e-6
    loss.backward()
    assert p.grad[0, 0] > 0 and p.grad[0, 1] == 0 and p.grad[0, 2] == 0
    logits = torch.tensor([[3.0, -2.0]])
    assert implicit_loss(logits, logits, "occupancy") < implicit_loss(-logits, logits, "occupancy")
    assert torch.equal(convert_target(t, "sdf", "udf"), t.abs())
    assert (convert_target(torch.tensor([-0.1, 0.1]), "sdf", "occupancy") * torch.tensor([1, -1]) > 0).all()
    with pytest.raises(ValueError, match="cannot express"):
        convert_target(t, "udf", "sdf")
    with pytest.raises(ValueError):
        implicit_loss(t, t, "radiance")


def test_query_points_concentrate_near_the_surface():
    sphere = lambda x: (x.norm(dim=-1, keepdim=True) - 0.5)
    xyz, val = implicit_query_points(sphere, 400, torch.Generator().manual_seed(0), near_fraction=0.5)
    assert xyz.shape == (400, 3) and val.shape == (400,)
    assert xyz.abs().max() <= 1.0
    far, near = val[:200].abs(), val[200:].abs()
    assert near.mean() < 0.25 * far.mean()
    assert torch.allclose(val, sphere(xyz).squeeze(-1))


def test_l2_and_combination_switches():
    u, v = torch.zeros(2, 3), torch.ones(2, 3)
    assert l2_alignment(u, v) == 3.0
    terms = {"render": torch.tensor(1.0), "contrastive": torch.tensor(2.0), "l2": torch.tensor(4.0)}
    assert combine(terms, LossWeights.named("R")) == 1.0
    assert torch.allclose(combine(terms, LossWeights.named("R+C")), torch.tensor(1.04))
    assert combine(terms, LossWeights.named("C")) == 2.0
    assert torch.allclose(combine(terms, LossWeights(1.0, 0.5, 0.25)), torch.tensor(3.0))
    with pytest.raises(ValueError):
        combine({"render": torch.tensor(1.0)}, LossWeights.named("C"))
    with pytest.raises(ValueError):
        LossWeights.named("X")


def test_siglip_labels_make_repeated_objects_positives():
    from gmn_inr.losses import same_object_labels, siglip_loss

    g = torch.Generator().manual_seed(3)
    u = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    t, b = torch.tensor(0.7), torch.tensor(-2.0)
    labels = same_object_labels(["a", "b", "a", "c"])
    assert labels[0, 2] == 1 and labels[2, 0] == 1 and labels[0, 1] == -1 and bool((labels.diagonal() == 1).all())
    want = 0.0
    for j in range(4):
        for k in range(4):
            z = 1.0 if labels[j, k] > 0 else -1.0
            want -= math.log(1 / (1 + math.exp(-z * (math.exp(0.7) * float(u[j] @ v[k]) - 2.0))))
    assert abs(float(siglip_loss(u, v, t, b, labels)) - want / 4) < 1e-5
    # with all-distinct objects the labels are the plain 2I - 1
    assert torch.equal(same_object_labels(["x", "y", "z"]), 2 * torch.eye(3) - 1)
    assert float(siglip_loss(u, v, t, b, labels)) != float(siglip_loss(u, v, t, b))
