"""Shapes of the zoo: primitive sdfs against closed forms, normalisation, classes that
differ, meshes (closed and open)."""
import math

import numpy as np
import pytest
import torch

from gmn_inr.zoo import shapes as S


def _pts(n=4000, lo=-1.5, hi=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g) * (hi - lo) + lo


def _dist_to_cloud(p, cloud):
    return torch.cdist(p, cloud).min(1).values


def _check(sdf, p, cloud, inside, tol):
    """|sdf| equals the distance to a dense surface sample (within its spacing) and the sign
    matches an independent inside test."""
    d = sdf(p)
    ref = _dist_to_cloud(p, cloud)
    assert torch.all((d.abs() - ref).abs() < tol), float((d.abs() - ref).abs().max())
    assert torch.equal(d < 0, inside(p))


def _grid2(n):
    u = torch.linspace(0, 1, n)
    a, b = torch.meshgrid(u, u, indexing="ij")
    return a.reshape(-1), b.reshape(-1)


def test_sphere_closed_form():
    p = _pts()
    assert torch.allclose(S.sd_sphere(p, 0.7), p.norm(dim=-1) - 0.7)


def test_box_closed_form_and_round_box():
    half = (0.5, 0.3, 0.2)
    p = _pts()
    # closed form outside: distance to the clamped point; inside: -(min distance to a face)
    h = torch.tensor(half)
    q = p.clamp(-h, h)
    inside = (p.abs() < h).all(-1)
    ref = torch.where(inside, -(h - p.abs()).min(-1).values, (p - q).norm(dim=-1))
    assert torch.allclose(S.sd_box(p, half), ref, atol=1e-6)
    # a rounded box is the shrunk box inflated by r
    assert torch.allclose(S.sd_round_box(p, half, 0.1), S.sd_box(p, (0.4, 0.2, 0.1)) - 0.1, atol=1e-6)


def test_cylinder_against_surface_samples():
    r, h = 0.4, 0.6
    a, b = _grid2(150)
    th = a * 2 * math.pi
    side = torch.stack([r * torch.cos(th), (b * 2 - 1) * h, r * torch.sin(th)], -1)
    rad = torch.sqrt(b) * r
    caps = [torch.stack([rad * torch.cos(th), torch.full_like(a, s * h), rad * torch.sin(th)], -1) for s in (-1, 1)]
    cloud = torch.cat([side, *caps])
    inside = lambda p: (p[:, [0, 2]].norm(dim=-1) < r) & (p[:, 1].abs() < h)  # noqa: E731
    _check(lambda p: S.sd_cylinder(p, r, h), _pts(2000), cloud, inside, tol=0.03)


def test_capsule_closed_form():
    a, b, r = (0.0, -0.5, 0.0), (0.3, 0.5, 0.1), 0.2
    p = _pts()
    A, B = torch.tensor(a), torch.tensor(b)
    t = torch.linspace(0, 1, 4001)
    seg = A + t[:, None] * (B - A)
    ref = torch.cdist(p, seg).min(1).values - r
    assert torch.allclose(S.sd_capsule(p, a, b, r), ref, atol=1e-3)


def test_torus_closed_form():
    R, r = 0.6, 0.15
    p = _pts()
    th = torch.linspace(0, 2 * math.pi, 4001)
    ring = torch.stack([R * torch.cos(th), torch.zeros_like(th), R * torch.sin(th)], -1)
    ref = torch.cdist(p, ring).min(1).values - r
    assert torch.allclose(S.sd_torus(p, R, r), ref, atol=1e-3)


def test_cone_against_surface_samples():
    h, r1, r2 = 0.5, 0.6, 0.2
    a, b = _grid2(150)
    th = a * 2 * math.pi
    y = (b * 2 - 1) * h
    rr = r1 + (y + h) / (2 * h) * (r2 - r1)
    side = torch.stack([rr * torch.cos(th), y, rr * torch.sin(th)], -1)
    caps = [torch.stack([torch.sqrt(b) * rc * torch.cos(th), torch.full_like(a, s * h),
                         torch.sqrt(b) * rc * torch.sin(th)], -1) for s, rc in ((-1, r1), (1, r2))]
    cloud = torch.cat([side, *caps])

    def inside(p):
        rad = r1 + (p[:, 1] + h) / (2 * h) * (r2 - r1)
        return (p[:, [0, 2]].norm(dim=-1) < rad) & (p[:, 1].abs() < h)

    _check(lambda p: S.sd_cone(p, h, r1, r2), _pts(2000), cloud, inside, tol=0.03)


def test_smooth_min_is_a_lower_bound():
    a, b = torch.randn(1000), torch.randn(1000)
    m = S.smooth_min(a, b, 0.2)
    assert torch.all(m <= torch.minimum(a, b) + 1e-7)
    far = (a - b).abs() >= 0.2
    assert torch.equal(m[far], torch.minimum(a, b)[far])


def test_shapes_are_normalised_exact_and_deterministic():
    for name in S.CLASSES:
        shp = S.make_shape(name, 3)
        again = S.make_shape(name, 3)
        p = _pts(3000, -1, 1)
        assert torch.equal(shp.sdf(p), again.sdf(p))
        occ = S.occupancy_grid(shp, 40)
        assert occ.any(), name
        idx = occ.nonzero().float()
        cell = 2 / 40
        assert (idx.min(0).values * cell - 1 >= -S.EXTENT - cell).all() and ((idx.max(0).values + 1) * cell - 1 <= S.EXTENT + cell).all()
        # points on the surface have sdf ~ 0; sdf is 1-Lipschitz (a distance bound)
        surf = shp.sample_surface(200, torch.Generator().manual_seed(0))
        assert shp.sdf(surf).abs().max() < 3e-3
        q = p + 0.01 * torch.randn_like(p)
        assert ((shp.sdf(q) - shp.sdf(p)).abs() <= (q - p).norm(dim=-1) + 1e-5).all(), name
        col = shp.color(p)
        assert col.shape == (3000, 3) and (col >= 0).all() and (col <= 1).all()


def test_classes_differ_nearest_neighbour_beats_chance():
    """1-NN on 24^3 occupancy grids of ground-truth shapes: 3 reference objects per class,
    2 queries per class. Chance is 1/12."""
    res = 24
    ref, ref_y, qry, qry_y = [], [], [], []
    for ci, name in enumerate(S.CLASSES):
        for k in range(5):
            g = S.occupancy_grid(S.make_shape(name, 1000 + k), res).reshape(-1).float()
            (ref if k < 3 else qry).append(g)
            (ref_y if k < 3 else qry_y).append(ci)
    R, Q = torch.stack(ref), torch.stack(qry)
    # Jaccard distance between occupancy grids
    inter = Q @ R.T
    union = Q.sum(1, keepdim=True) + R.sum(1) - inter
    pred = torch.tensor(ref_y)[(inter / union).argmax(1)]
    acc = (pred == torch.tensor(qry_y)).float().mean().item()
    assert acc >= 0.6, acc


def test_objects_within_a_class_differ():
    a, b = S.make_shape("chair", 0), S.make_shape("chair", 1)
    ga, gb = S.occupancy_grid(a, 32), S.occupancy_grid(b, 32)
    iou = (ga & gb).sum() / (ga | gb).sum()
    assert iou < 0.9


def test_unknown_class_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown shape class"):
        S.make_shape("spaceship", 0)


def test_winding_number_closed_and_open_mesh():
    trimesh = pytest.importorskip("trimesh")
    box = trimesh.creation.box(extents=(1, 1, 1))
    tris = torch.tensor(box.vertices[box.faces], dtype=torch.float32)
    p = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0.3, 0.2, -0.1]])
    w = S.winding_number(p, tris)
    assert torch.allclose(w, torch.tensor([1.0, 0.0, 1.0]), atol=1e-4)
    # an open box (top removed): the centre is still "half inside", far points outside
    keep = box.triangles_center[:, 2] < 0.49
    w = S.winding_number(p, tris[torch.as_tensor(keep)])
    assert 0.5 < w[0] < 1.0 and abs(w[1]) < 0.1


def test_mesh_shape_signed_distance(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    path = tmp_path / "ball.obj"
    sphere.export(path)
    shp = S.MeshShape(path, n_samples=40_000, sign_res=16)
    p = _pts(500, -1, 1, seed=1)
    # normalised to radius EXTENT: the sdf of a sphere of radius 0.8 (mesh is faceted: ~1e-2)
    ref = p.norm(dim=-1) - S.EXTENT
    assert (shp.sdf(p) - ref).abs().max() < 0.03
    assert shp.color(p).shape == (500, 3)
    # an open mesh (a few faces removed) still gets signs right away from the hole
    open_mesh = sphere.copy()
    open_mesh.update_faces(np.arange(len(open_mesh.faces)) >= 5)
    shp2 = S.MeshShape(open_mesh, n_samples=40_000, sign_res=16)
    q = torch.tensor([[0.0, 0, 0], [0.9, 0.9, 0.9], [0.2, -0.1, 0.3]])
    assert torch.equal(shp2.sdf(q) < 0, torch.tensor([True, False, True]))


def test_mesh_loading_errors(tmp_path):
    pytest.importorskip("trimesh")
    bad = tmp_path / "x.obj"
    bad.write_text("this is not a mesh\n")
    with pytest.raises(ValueError):
        S.load_mesh(bad)
    with pytest.raises(FileNotFoundError):
        S.mesh_objects(tmp_path / "nope")
