"""Fault injection: kill -9 at several points of single- and multi-worker zoo builds and of
training, resume, compare with the uninterrupted result bit for bit; two builds of one zoo at once;
missing and corrupt files refitted.

Kill points use the documented test hook ``GMN_INR_FAULT=POINT:K`` (``gmn_inr.atomic.fault_point``):
the K-th time a process reaches POINT it sends itself SIGKILL, exactly as ``kill -9`` at that moment.
The multi-worker build's parent is killed from outside (``os.kill``) while its workers run.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gmn_inr.zoo import open_store
from gmn_inr.zoo.build import build_zoo, preset_config
from gmn_inr.zoo.store import ZooBusyError
from gmn_inr.zoo.writer import zoo_lock
from child import child_env

ROOT = Path(__file__).resolve().parents[1]
ARCHS = {"radiance": ("MLP", "HASH", "OCT"), "sdf": ("HASH",)}
# min_psnr 14: about half the radiance INRs fail their first fit, some pass the refit, the rest are
# dropped, so refits and gate drops are part of every kill-and-resume below
FIT = {"steps": 15, "points": 128, "pool": 2048, "surface": 256, "gate_res": 12, "gate_view": 8,
       "gate_view_samples": 16, "min_iou": -1.0, "max_sdf_err": 1e9, "min_psnr": 14.0, "min_view_psnr": -1e9}
OVER = dict(archs=ARCHS, fit=FIT, per_class=2, batch=4)      # 6 objects, 2 chunks, 24 INRs


def _cfg():
    return preset_config("tiny", **OVER)


def _fingerprint(out: Path) -> dict:
    """What must be bit-identical: each stored INR's sha256 (the file's bytes, checked on disk too) and
    the gate drops."""
    m = json.loads((out / "manifest.json").read_text())
    store = open_store(out)
    assert store.verify() == []
    return {"inrs": {k: e["sha256"] for k, e in m["inrs"].items()}, "dropped": sorted(m["dropped"]),
            "files": sorted(p.relative_to(out).as_posix() for p in (out / "inrs").rglob("*") if p.is_file())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "zoo"
    s = build_zoo(out, config=_cfg(), progress=False)
    fp = _fingerprint(out)
    assert fp["dropped"] and len(fp["inrs"]) + len(fp["dropped"]) == 24 and s["refitted"] == []
    return out, fp


BUILD = ("from gmn_inr.zoo.build import build_zoo, preset_config\n"
         "build_zoo({out!r}, config=preset_config('tiny', **{over!r}), workers={workers}, progress=False)\n")


BUILD_WAIT = BUILD.replace("progress=False)", "progress=False, wait=True)")


def _build_proc(out, workers=1, fault=None, wait=True, template=None):
    env = child_env()
    env.pop("GMN_INR_FAULT", None)
    if fault:
        env["GMN_INR_FAULT"] = fault
    code = (template or BUILD).format(out=str(out), over=OVER, workers=workers)
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if wait:
        _, err = p.communicate(timeout=300)
        return p.returncode, err.decode()
    return p


def test_single_worker_killed_at_every_kind_of_point_resumes_bit_identical(reference, tmp_path):
    out = tmp_path / "zoo"
    points = ["after_inr_write:2", "after_journal:3", "after_drop:1", "after_manifest_flush:4"]
    for fault in points:                       # one folder, killed again and again, never finished
        rc, err = _build_proc(out, fault=fault)
        assert rc == -signal.SIGKILL, (fault, err[-2000:])
    s = build_zoo(out, config=_cfg(), progress=False)
    assert s["fitted_this_run"] < 24
    assert _fingerprint(out) == reference[1]
    assert not (out / "journal.jsonl").exists()          # folded into the manifest at the end


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the workers")
def test_two_workers_parent_killed_workers_die_and_resume_is_bit_identical(reference, tmp_path):
    out = tmp_path / "zoo"
    # a worker killed by the hook: the parent reports it in one error, the next build resumes
    rc, err = _build_proc(out, workers=2, fault="after_journal:2")
    assert rc == 1 and "a build worker of" in err and "run the build again" in err
    # the parent killed with -9 from outside while both workers fit
    p = _build_proc(out, workers=2, wait=False)
    journal = out / "journal.jsonl"
    deadline = time.time() + 120
    kids = []
    while time.time() < deadline:
        kids = [k for k in _children(p.pid)] or kids
        n = len(journal.read_text().splitlines()) if journal.exists() else 0
        if n >= 2 and len(kids) >= 2:
            break
        time.sleep(0.05)
    assert len(kids) >= 2, "no worker processes seen"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    t = time.time()
    while any(_alive(k) for k in kids) and time.time() - t < 10:
        time.sleep(0.05)
    assert not any(_alive(k) for k in kids), "workers outlived their parent"
    size = journal.stat().st_size if journal.exists() else 0
    time.sleep(1.0)
    assert (journal.stat().st_size if journal.exists() else 0) == size, "something still writes into the zoo"
    # resumed in this process with one worker: the zoo does not depend on the number of workers either
    s = build_zoo(out, config=_cfg(), workers=1, progress=False)
    assert s["fitted_this_run"] < 24
    assert _fingerprint(out) == reference[1]


def test_two_builds_of_one_zoo_at_once(reference, tmp_path):
    out = tmp_path / "zoo"
    with zoo_lock(out):                                  # this process is "building" it
        with pytest.raises(ZooBusyError, match=f"being built by process {os.getpid()}"):
            build_zoo(out, config=_cfg(), progress=False)
        r = subprocess.run([sys.executable, "-m", "gmn_inr.cli", "zoo", "build", "--out", str(out)],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip() == f"gmn-inr zoo: error: zoo {out} is being built by process {os.getpid()} " \
                                   f"(wait for it, or pass --wait)"
        p = _build_proc(out, wait=False, template=BUILD_WAIT)   # wait=True (--wait): blocks until the lock is free
        time.sleep(3.0)
        assert p.poll() is None and not (out / "manifest.json").exists()
    p.stdout.close()
    p.stderr.close()
    assert p.wait(timeout=300) == 0
    assert _fingerprint(out) == reference[1]


def test_concurrent_builds_with_wait_give_one_clean_zoo(reference, tmp_path):
    out = tmp_path / "zoo"
    env = child_env()
    code = BUILD_WAIT.format(out=str(out), over=OVER, workers=1)
    ps = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(2)]
    assert [p.wait(timeout=300) for p in ps] == [0, 0]
    assert _fingerprint(out) == reference[1]


def test_missing_truncated_and_corrupt_files_are_refitted_to_the_same_bytes(reference, tmp_path):
    import shutil

    out = tmp_path / "zoo"
    shutil.copytree(reference[0], out)
    store = open_store(out)
    a, b, c = store[0], store[5], store[9]
    a.path.unlink()                                          # deleted
    b.path.write_bytes(b.path.read_bytes()[:100])            # truncated
    data = bytearray(c.path.read_bytes())
    data[-3] ^= 0x10                                         # one bit flipped
    c.path.write_bytes(bytes(data))
    # the stray copy a user left beside a record is never adopted as the record
    stray = a.path.with_name(a.arch + ".bak.safetensors")
    shutil.copy(store[1].path, stray)
    from gmn_inr.cli import main

    assert main(["zoo", "info", str(out), "--fix"]) == 0
    assert sorted([a.key, b.key, c.key]) == sorted(open_store(out).manifest["builds"][-1]["refitted"])
    fp = _fingerprint(out)
    fp["files"] = [f for f in fp["files"] if not f.endswith((".corrupt", ".bak.safetensors"))]
    assert fp == reference[1]
    assert build_zoo(out, config=_cfg(), progress=False)["fitted_this_run"] == 0


TRAIN = ("import torch; torch.set_num_threads(1)\n"
         "from tiny_records import tiny_pairs\n"
         "from gmn_inr.train import TrainConfig, train\n"
         "pairs = tiny_pairs(4, ('MLP', 'HASH'), 'radiance')\n"
         "cfg = TrainConfig(loss='R+C', steps=8, ckpt_every=2, lr=3e-3, preset='tiny', batch_pairs=4,\n"
         "                  rays_per_inr=16, samples_per_ray=8, points_per_inr=64, log_every=1, device='cpu')\n"
         "train(cfg, pairs, {out!r}, progress=False)\n")


def test_training_killed_between_and_after_checkpoints_resumes_identically(tmp_path):
    from safetensors import safe_open

    def run(out, fault=None):
        env = child_env()
        env.pop("GMN_INR_FAULT", None)
        if fault:
            env["GMN_INR_FAULT"] = fault
        code = TRAIN.format(out=str(out))
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)

    assert run(tmp_path / "full").returncode == 0
    part = tmp_path / "part"
    for fault in ("after_checkpoint_write:2", None):      # killed right after its 2nd checkpoint, resumed
        r = run(part, fault)
        assert r.returncode == (-signal.SIGKILL if fault else 0), r.stderr.decode()[-2000:]
    def tensors(p):
        with safe_open(str(p / "checkpoint.safetensors"), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    (ta, ma), (tb, mb) = tensors(tmp_path / "full"), tensors(part)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    # the history survived every kill: it lives in the checkpoint file itself
    assert json.loads(ma["history"]) == json.loads(mb["history"]) and len(json.loads(mb["history"])) == 8
    assert (tmp_path / "full" / "checkpoint.safetensors").read_bytes() == (part / "checkpoint.safetensors").read_bytes()


def test_building_one_function_then_the_rest_gives_the_same_zoo(reference, tmp_path):
    """``functions=`` (what a benchmark builds for itself): the radiance INRs first, the sdf ones in a
    later build, bit-identical to one build of everything; an unknown function is a clear error."""
    out = tmp_path / "zoo"
    build_zoo(out, config=_cfg(), progress=False, functions=["radiance"])
    assert {r.function for r in open_store(out)} == {"radiance"}
    build_zoo(out, config=_cfg(), progress=False, functions=["sdf"])
    assert _fingerprint(out) == reference[1]
    with pytest.raises(ValueError, match="no occupancy INRs"):
        build_zoo(out, config=_cfg(), progress=False, functions=["occupancy"])


def test_a_wider_config_fills_an_older_zoo_to_the_same_bits(reference, tmp_path):
    """A zoo built when a function had fewer architectures (the cpu preset's sdf/udf/occupancy were
    HASH only) is widened in place by the wider config and then equals one build of it; a config
    that differs in anything else is still refused."""
    from gmn_inr.zoo import ZooError

    out = tmp_path / "zoo"
    build_zoo(out, config=preset_config("tiny", **{**OVER, "archs": {**ARCHS, "radiance": ("MLP", "OCT")}}),
              progress=False)
    assert {r.arch for r in open_store(out) if r.function == "radiance"} <= {"MLP", "OCT"}
    build_zoo(out, config=_cfg(), progress=False)
    assert _fingerprint(out) == reference[1]
    assert json.loads((out / "manifest.json").read_text())["config"]["archs"]["radiance"] == list(ARCHS["radiance"])
    with pytest.raises(ZooError, match="different configuration"):
        build_zoo(out, config=preset_config("tiny", **{**OVER, "archs": {"radiance": ("MLP",)}}), progress=False)
    with pytest.raises(ZooError, match="different configuration"):
        build_zoo(out, config=preset_config("tiny", **{**OVER, "seed": 1}), progress=False)
