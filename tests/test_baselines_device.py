"""The baselines honour a device: distillation runs where asked (the caller's teacher left where it
is), sampled outputs and grids run where the field is."""
import pytest
import torch

from gmn_inr.baselines import distill, sample_grid, sampled_outputs
from gmn_inr.fields import arch_spec_for
from tiny_records import tiny_records


@pytest.fixture(scope="module")
def teacher():
    return tiny_records(1, ("HASH",), "radiance", fit_steps=5)["obj0"][0].field()


def test_distillation_with_device_cpu_is_the_default_fit(teacher):
    spec = arch_spec_for("MLP", 4, "tiny")
    a = distill(teacher, spec, steps=3, n_points=64, seed=1)
    b = distill(teacher, spec, steps=3, n_points=64, seed=1, device="cpu")
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert p.device.type == "cpu" and torch.equal(p, q), n


@pytest.mark.cuda
def test_baselines_on_cuda_agree_with_the_cpu(teacher):
    spec = arch_spec_for("MLP", 4, "tiny")
    cpu = distill(teacher, spec, steps=3, n_points=64, seed=1)
    gpu = distill(teacher, spec, steps=3, n_points=64, seed=1, device="cuda")
    assert next(teacher.parameters()).device.type == "cpu"
    for (n, p), (_, q) in zip(cpu.state_dict().items(), gpu.state_dict().items()):
        assert q.device.type == "cpu"
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=n)
    import copy
    on_gpu = copy.deepcopy(teacher).cuda()
    torch.testing.assert_close(sampled_outputs(on_gpu).cpu(), sampled_outputs(teacher), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sample_grid(on_gpu, 8).cpu(), sample_grid(teacher, 8), rtol=1e-4, atol=1e-4)
