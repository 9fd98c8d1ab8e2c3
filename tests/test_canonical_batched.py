"""gmn_inr.canonical.surface_distances: many INRs' surface distances in one batched pass equal
each INR's :func:`surface_distance` alone (fitted INRs of every family, and analytic spheres)."""
import pytest
import torch

from gmn_inr.canonical import TRUNCATION, surface_distance, surface_distances
from tiny_records import tiny_records


class _Sphere(torch.nn.Module):
    """A sphere's sdf, or a graded occupancy logit of it: ``[P, 3] -> [P, 1]``."""

    def __init__(self, centre, radius: float, function: str):
        super().__init__()
        self.register_buffer("centre", torch.tensor(centre))
        self.radius, self.function = radius, function

    def forward(self, xyz):
        sdf = (xyz - self.centre).norm(dim=-1, keepdim=True) - self.radius
        return sdf if self.function == "sdf" else -4 * sdf / 0.05


@pytest.mark.parametrize("function", ["sdf", "occupancy"])
def test_batched_surface_distances_equal_one_at_a_time(function):
    g = torch.Generator().manual_seed(1)
    fields = [_Sphere(((torch.rand(3, generator=g) - 0.5) * 0.4).tolist(), 0.2 + 0.4 * float(torch.rand((), generator=g)),
                      function) for _ in range(5)]
    fields.append(_Sphere((0.0, 0.0, 0.0), 5.0, function))        # no surface in the box: all truncated
    one = torch.stack([surface_distance(f, function) for f in fields])
    many = surface_distances(fields, function)
    assert many.shape == one.shape == (6, one.shape[1])
    torch.testing.assert_close(many, one, rtol=0, atol=1e-6)
    near = one[:5] < TRUNCATION
    assert int(near.sum()) > 100 and bool((one[5] == TRUNCATION).all())    # shells found, and none where none is


def test_batched_surface_distances_of_fitted_inrs_of_every_family():
    recs = [r for rs in tiny_records(2, ("MLP", "TRI", "HASH", "OCT"), "occupancy", fit_steps=20).values() for r in rs]
    fields = [r.field() for r in recs]
    one = torch.stack([surface_distance(f, "occupancy") for f in fields])
    torch.testing.assert_close(surface_distances(fields, "occupancy"), one, rtol=0, atol=1e-6)


@pytest.mark.cuda
def test_surface_distances_on_cuda_match_the_cpu_and_leave_the_fields():
    fields = [_Sphere((0.1 * i, 0.0, -0.05), 0.3 + 0.05 * i, "occupancy") for i in range(4)]
    cpu = surface_distances(fields, "occupancy")
    gpu = surface_distances(fields, "occupancy", device="cuda")
    assert gpu.device.type == "cuda" and all(f.centre.device.type == "cpu" for f in fields)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)
