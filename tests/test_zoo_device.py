"""The zoo's device path: ``build_zoo(device=..., batch=...)``.

On the CPU it writes the bytes the build always wrote (the digest below is of every INR file of
this small zoo, built before the device path existed, with the pinned torch 2.13.0 CPU wheel and
one thread); another batch size gives the same INRs; a build killed and resumed on the device path
equals an uninterrupted one. The CUDA tests run where a GPU is visible.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gmn_inr.zoo.build import build_zoo, fit_batch_size, preset_config

ROOT = Path(__file__).resolve().parents[1]
ARCHS = {"radiance": ("MLP", "HASH", "OCT"), "sdf": ("HASH",)}
FIT = {"steps": 15, "points": 128, "pool": 2048, "surface": 256, "gate_res": 12, "gate_view": 8,
       "gate_view_samples": 16, "min_iou": -1.0, "max_sdf_err": 1e9, "min_psnr": 14.0, "min_view_psnr": -1e9}
OVER = dict(archs=ARCHS, fit=FIT, per_class=2, batch=4)      # 6 objects, 24 INRs, one dropped by the gate
#: sha256 of the sorted "key sha256" lines of every stored INR of this zoo, as the CPU build wrote
#: it before the device path (torch 2.13.0+cpu, one thread)
CPU_DIGEST = "f043ab80ff1216cbf994dbeef57e80c1c3651eaf51d77be4c3c0d2b80a72fe01"
PINNED = torch.__version__.startswith("2.13.0") and not torch.version.cuda


def _cfg():
    return preset_config("tiny", **OVER)


def _digest(out: Path) -> str:
    m = json.loads((out / "manifest.json").read_text())
    lines = sorted(f"{k} {e['sha256']}" for k, e in m["inrs"].items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _tensors(out: Path) -> dict:
    m = json.loads((out / "manifest.json").read_text())
    return {k: load_file(out / e["path"]) for k, e in m["inrs"].items()}


@pytest.fixture(scope="module")
def cpu_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu") / "zoo"
    build_zoo(out, config=_cfg(), progress=False, device="cpu")
    return out


@pytest.mark.skipif(not PINNED, reason=f"the digest is of the torch 2.13.0 CPU build; this is {torch.__version__}")
def test_a_cpu_build_through_the_device_path_is_the_old_bytes(cpu_zoo):
    assert torch.get_num_threads() == 1            # the digest was taken on one thread (tests/conftest.py)
    assert _digest(cpu_zoo) == CPU_DIGEST


def test_another_batch_size_gives_the_same_inrs(cpu_zoo, tmp_path):
    out = tmp_path / "zoo"
    build_zoo(out, config=_cfg(), progress=False, device="cpu", batch=5)      # chunks of 5 objects, not 4
    ref, new = _tensors(cpu_zoo), _tensors(out)
    assert ref.keys() == new.keys() and len(ref) == 23
    for k in ref:
        assert ref[k].keys() == new[k].keys()
        for n in ref[k]:
            torch.testing.assert_close(new[k][n], ref[k][n], rtol=0, atol=1e-6, msg=f"{k} {n}")


def test_a_build_killed_on_the_device_path_resumes_to_the_same_bytes(cpu_zoo, tmp_path):
    out = tmp_path / "zoo"
    code = ("from gmn_inr.zoo.build import build_zoo, preset_config\n"
            f"build_zoo({str(out)!r}, config=preset_config('tiny', **{OVER!r}), progress=False, device='cpu', "
            "batch=3)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "GMN_INR_FAULT": "after_inr_write:5"}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    s = build_zoo(out, config=_cfg(), progress=False, device="cpu", batch=3)
    assert 0 < s["fitted_this_run"] < 24
    assert _digest(out) == _digest(cpu_zoo)


def test_device_and_batch_are_checked():
    assert fit_batch_size(_cfg(), "cpu") == 4
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        build_zoo("/nonexistent/never", config=_cfg(), device="gpu", progress=False)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        build_zoo("/nonexistent/never", config=_cfg(), batch=0, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            build_zoo("/nonexistent/never", config=_cfg(), device="cuda", progress=False)


@pytest.mark.parametrize("arch", ["MLP", "TRI", "HASH", "OCT"])
def test_the_fit_and_the_gate_view_stay_on_their_device(arch):
    """The meta device stands in for a GPU here: any tensor the device path left on the CPU would
    meet a meta tensor and raise, as it would meet a CUDA one."""
    from gmn_inr.fields import arch_spec_for
    from gmn_inr.zoo.batch import FieldStack
    from gmn_inr.zoo.fit import FitConfig
    from gmn_inr.zoo.gate import render_gate_views

    spec = arch_spec_for(arch, 4, "tiny")
    occ = None
    if arch == "OCT":
        r = 2 ** spec.grid.lods[-1]
        occ = [torch.rand(r, r, r, generator=torch.Generator().manual_seed(b)) > 0.5 for b in range(2)]
    stack = FieldStack(spec, occ, 2, [11, 12], device="meta")
    y = stack.forward(torch.zeros(2, 5, 3, device="meta"))
    assert y.shape == (2, 5, 4) and y.device.type == "meta"
    y.sum().backward()
    torch.optim.Adam(list(stack.params.values())).step()
    views = render_gate_views(lambda p: stack.forward(p.reshape(2, -1, 3)).reshape(*p.shape[:-1], 4), 2,
                              FitConfig(gate_view=4, gate_view_samples=8), device="meta")
    assert views.shape == (2, 16, 3) and views.device.type == "meta"


@pytest.mark.cuda
def test_a_cuda_build_is_a_function_of_its_keys(tmp_path):
    """On the GPU: a killed-and-resumed build gives the bytes of an uninterrupted one, another batch
    size the same INRs to float tolerance (not bits: the device's kernels may sum in another order)."""
    assert fit_batch_size(_cfg(), "cuda") >= 256
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build_zoo(a, config=_cfg(), progress=False, device="cuda")
    code = ("from gmn_inr.zoo.build import build_zoo, preset_config\n"
            f"build_zoo({str(b)!r}, config=preset_config('tiny', **{OVER!r}), progress=False, device='cuda')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GMN_INR_FAULT": "after_inr_write:5"}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    build_zoo(b, config=_cfg(), progress=False, device="cuda")
    assert _digest(b) == _digest(a)
    build_zoo(c, config=_cfg(), progress=False, device="cuda", batch=2)
    ta, tc = _tensors(a), _tensors(c)
    assert len(ta.keys() & tc.keys()) >= 20
    for k in ta.keys() & tc.keys():
        for n in ta[k]:
            torch.testing.assert_close(tc[k][n], ta[k][n], rtol=1e-4, atol=1e-4, msg=f"{k} {n}")


def test_zoo_build_with_an_unknown_device_is_one_line(tmp_path, capsys):
    from gmn_inr.cli import main

    for device, says in (("gpu", "unknown device 'gpu'"),) + ((("cuda", "CUDA is not available"),)
                                                            if not torch.cuda.is_available() else ()):
        rc = main(["zoo", "build", "--out", str(tmp_path / "z"), "--device", device, "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err
    assert not (tmp_path / "z" / "manifest.json").exists()


@pytest.mark.parametrize("steps,block", [(17, 8), (3, 8), (16, 4)])
def test_prefetched_point_indices_are_the_inline_draws(steps, block):
    from gmn_inr.zoo.fit import point_indices

    def gens():
        return [torch.Generator().manual_seed(s) for s in (5, 99, 1234)]

    inline = list(point_indices(gens(), 1000, 64, steps, torch.device("cpu")))
    ahead = list(point_indices(gens(), 1000, 64, steps, torch.device("cpu"), prefetch=True, block=block))
    assert len(inline) == len(ahead) == steps
    assert all(a.shape == (3, 64) and torch.equal(a, b) for a, b in zip(inline, ahead))


def test_a_mesh_is_sampled_on_the_cpu_whatever_the_device(tmp_path):
    """Only shapes that run on any device (``on_device``: the procedural ones) sample there; a
    mesh's samples come from the CPU path even when the build asks for a GPU."""
    from gmn_inr.zoo.fit import FitConfig
    from gmn_inr.zoo.samples import prepare_samples
    from gmn_inr.zoo.shapes import make_shape

    cfg = FitConfig(pool=512, surface=64, gate_res=4)

    class CpuOnly:
        on_device = False

        def __init__(self, shape):
            self.shape, self.object_id = shape, shape.object_id

        def sample_surface(self, n, generator=None):            # no device argument: must not get one
            return self.shape.sample_surface(n, generator=generator)

        def sdf_and_color(self, p):
            assert p.device.type == "cpu"
            return self.shape.sdf_and_color(p)

    shape = make_shape("chair", 1, object_id="chair-1", label=0)
    a = prepare_samples(CpuOnly(shape), cfg, seed=3, device="cuda")
    b = prepare_samples(shape, cfg, seed=3)
    assert torch.equal(a.points, b.points) and torch.equal(a.sdf, b.sdf) and torch.equal(a.gate_sdf, b.gate_sdf)


@pytest.mark.cuda
def test_sampling_on_cuda_gives_the_shapes_truth():
    from gmn_inr.zoo.fit import FitConfig
    from gmn_inr.zoo.samples import prepare_samples
    from gmn_inr.zoo.shapes import make_shape

    cfg = FitConfig(pool=4096, surface=512, gate_res=8)
    shape = make_shape("chair", 1, object_id="chair-1", label=0)
    s = prepare_samples(shape, cfg, seed=3, device="cuda")
    assert s.points.device.type == "cpu" and s.points.shape == (4096, 3)
    assert float(shape.sdf(s.surface).abs().max()) < 3e-3            # on the surface, by the CPU's sdf
    torch.testing.assert_close(s.sdf, shape.sdf(s.points), rtol=1e-4, atol=1e-5)
