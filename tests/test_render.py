import copy
import math

import pytest
import torch

from gmn_inr.losses import rendering_loss
from gmn_inr.render import (camera_rays, composite, orbit_cameras, random_rays, ray_aabb, render_image,
                            sample_along_rays, volume_render)
from tiny_records import tiny_records


def test_orbit_cameras_look_at_origin():
    c2w = orbit_cameras(8, radius=3.0, elevation=(-20, 40), seed=3)
    assert c2w.shape == (8, 4, 4)
    eye = c2w[:, :3, 3]
    assert torch.allclose(eye.norm(dim=-1), torch.full((8,), 3.0), atol=1e-5)
    forward = -c2w[:, :3, 2]                          # cameras look down -z
    assert torch.allclose(forward, -eye / 3.0, atol=1e-5)
    rot = c2w[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand(8, 3, 3), atol=1e-5)
    assert torch.equal(orbit_cameras(4, seed=1), orbit_cameras(4, seed=1))
    with pytest.raises(ValueError):
        orbit_cameras(2, radius=1.0)


def test_centre_ray_hits_origin_and_box():
    c2w = orbit_cameras(1, elevation=30.0)[0]
    o, d = camera_rays(c2w, 5, 5)
    assert o.shape == d.shape == (25, 3)
    centre = d[12]
    # the ray through the central pixel passes through the origin
    t = -(o[12] @ centre)
    assert (o[12] + t * centre).norm() < 1e-5
    near, far, hit = ray_aabb(o, d)
    assert hit.all() and (far > near).all()


def test_ray_aabb_known_values():
    o = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far, hit = ray_aabb(o, d)
    assert torch.allclose(near[0], torch.tensor(2.0)) and torch.allclose(far[0], torch.tensor(4.0))
    assert hit.tolist() == [True, False]
    pts, t, delta = sample_along_rays(o, d, 4)
    assert pts.shape == (2, 4, 3)
    assert torch.allclose(t[0], torch.tensor([2.25, 2.75, 3.25, 3.75]))
    assert torch.all(delta[1] == 0)                   # a missing ray gets no opacity


def test_composite_matches_closed_form():
    # constant density over length L: opacity 1 - exp(-sigma L), colour c * acc + bg * (1 - acc)
    S, sigma, L = 50, 0.7, 2.0
    rgb = torch.tensor([0.2, 0.4, 0.6]).expand(1, S, 3)
    col, acc, w = composite(rgb, torch.full((1, S), sigma), torch.full((1, S), L / S), bg=1.0)
    want = 1 - math.exp(-sigma * L)
    assert torch.allclose(acc, torch.tensor([want]), atol=1e-6)
    assert torch.allclose(col[0], torch.tensor([0.2, 0.4, 0.6]) * want + (1 - want), atol=1e-6)
    assert torch.allclose(w.sum(-1), acc)


def test_empty_field_renders_background():
    empty = lambda x: torch.cat([torch.zeros_like(x), torch.full_like(x[..., :1], -30.0)], dim=-1)
    o, d = random_rays(32, torch.Generator().manual_seed(0))
    rgb, acc = volume_render(empty, o, d, 16, bg=torch.tensor([0.1, 0.2, 0.3]))
    assert acc.max() < 1e-6
    assert torch.allclose(rgb, torch.tensor([0.1, 0.2, 0.3]).expand(32, 3), atol=1e-5)


def test_copy_renders_identically_and_a_change_does_not():
    field = tiny_records(1, ("HASH",))["obj0"][0].field()
    twin = copy.deepcopy(field)
    changed = copy.deepcopy(field)
    with torch.no_grad():
        changed.mlp.layers[-1].weight.mul_(-1.0)
    g = torch.Generator().manual_seed(0)
    o, d = random_rays(64, g, batch=(1,))
    renders = []
    for f in (field, twin, changed):
        renders.append(volume_render(f, o, d, 16, stratified=True, generator=torch.Generator().manual_seed(5)))
    (c0, a0), (c1, _), (c2, _) = renders
    assert rendering_loss(c1, c0, a0).item() == 0.0
    assert rendering_loss(c2, c0, a0).item() > 1e-4
    assert (c2 - c0).abs().max() > 1e-2


def test_render_image_and_bad_field():
    field = tiny_records(1, ("MLP",))["obj0"][0].field()
    img = render_image(field, orbit_cameras(1)[0], 8, 6, n_samples=8)
    assert img.shape == (8, 6, 3) and img.min() >= 0 and img.max() <= 1
    o, d = random_rays(4)
    with pytest.raises(ValueError, match="raw"):
        volume_render(lambda x: x, o, d, 8)
