"""The headline benchmark end to end at the tiny preset (structure and honesty of its output), and a
smoke test of every other script in benchmarks/ at tiny sizes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    from gmn_inr.zoo.build import build_zoo

    out = tmp_path_factory.mktemp("zoo_tiny")
    build_zoo(out, preset="tiny", progress=False)
    return out


def test_unseen_arch_tiny_end_to_end(tiny_zoo, tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "unseen_arch.py"), "--preset", "tiny", "--zoo", str(tiny_zoo),
           "--out", str(out), "--runs", str(runs), "--steps", "12"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "unseen_arch.json").read_text())
    assert set(report) >= {"classification", "retrieval", "baselines", "timing", "meta"}
    assert set(report["classification"]) >= {"L_R", "L_R+C", "L_C"}
    for loss, table in report["classification"].items():
        assert "ALL" in table
        for train_set, row in table.items():
            assert row, (loss, train_set)
            assert all(0.0 <= v <= 1.0 for v in row.values())
    # the baselines are rows of the same tables as the encoders
    for name in ("sampled outputs", "surface distance", "L_R+C, no message passing"):
        assert set(report["classification"][name]) == set(report["classification"]["L_R+C"]), name
        assert set(report["retrieval"][name]) == set(report["retrieval"]["L_R+C"]), name
    assert set(report["retrieval"]["conversion (voxel grid + 3D CNN)"]) == set(report["retrieval"]["L_R+C"])
    assert report["timing"]["sampled outputs"] > 0 and report["timing"]["L_R+C, no message passing"] > 0
    head = report["headline"]
    for name in ("L_R+C", "sampled outputs", "surface distance", "L_R+C, no message passing",
                 "conversion (voxel grid + 3D CNN)"):
        assert head[name]["recall@1"] == report["retrieval"][name]["ALL/ALL"]["1"], name
        assert 0.0 <= head[name]["worst_unseen"] <= 1.0, name
    assert head["sampled outputs"]["worst_family"] == min(
        v for tr, row in report["classification"]["sampled outputs"].items() if tr != "ALL"
        for te, v in row.items() if te in ("MLP", "TRI", "HASH", "OCT") and te != tr)
    assert any("beats sampled outputs" in g for g in report["goals"])
    assert any("beats surface distance" in g for g in report["goals"]) and report["timing"]["surface distance"] > 0
    # the ceiling: one exact vector per object, so each INR's nearest other INR is its own object
    # in another architecture, and the goals say how far that ceiling is
    exact = "exact geometry (ceiling, no INR)"
    assert set(report["classification"][exact]) == set(report["classification"]["L_R+C"])
    assert head[exact]["recall@1"] == 1.0 and exact not in report["timing"]
    assert any("exact geometry reaches" in g for g in report["goals"])
    for loss in ("L_R", "L_R+C", "L_C"):
        assert "ALL/ALL" in report["retrieval"][loss]
        for pair, r in report["retrieval"][loss].items():
            assert set(r) == {"1", "5", "10"} and all(0.0 <= v <= 1.0 for v in r.values())
            assert r["1"] <= r["5"] <= r["10"]
    assert all(v > 0 for v in report["timing"].values())
    meta = report["meta"]
    assert meta["preset"] == "tiny" and meta["wall_seconds"] > 0
    # where the time went: every stage, and together no more than the wall time
    assert {"zoo", "training L_R+C", "evaluation L_R+C", "training L_R", "baselines", "plots"} <= set(meta["stage_seconds"])
    assert 0 < sum(meta["stage_seconds"].values()) <= meta["wall_seconds"] + 1
    # numbers come from objects the encoder never saw
    assert meta["test_objects"] and not set(meta["test_objects"]) & set(meta["train_objects"])
    assert (out / "unseen_arch.md").read_text().startswith("# unseen_arch")
    for png in ("tsne.png", "retrieval.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run reuses the trained checkpoints instead of training again
    proc2 = subprocess.run(cmd + ["--no-plots"], capture_output=True, text=True, timeout=900)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    again = json.loads((out / "unseen_arch.json").read_text())
    assert again["training"]["L_R"]["steps"] == report["training"]["L_R"]["steps"] == 12
    assert again["retrieval"] == report["retrieval"]
    # the classifiers and baselines are trained again in the second run: the same numbers (a run is
    # reproducible for a given thread count)
    assert again["classification"] == report["classification"]
    assert again["baselines"] == report["baselines"]


def test_zoo_show_renders_a_labelled_grid(tiny_zoo, tmp_path):
    """``gmn-inr zoo show``: one PNG of objects (rows, labelled by class) x families' renders."""
    out = tmp_path / "zoo.png"
    proc = subprocess.run([sys.executable, "-m", "gmn_inr.cli", "zoo", "show", str(tiny_zoo), "--out", str(out),
                           "--objects", "2", "--size", "12"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_speed_smoke(tmp_path):
    out = tmp_path / "search_speed.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "search_speed.py"), "--n", "2000", "--real", "8", "--queries", "10",
           "--preset", "tiny", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["embed"]["inrs_per_s"] > 0 and report["meta"]["n"] == 2000
    assert report["index"]["exact"]["recall@10_vs_exact"] == 1.0
    for kind, r in report["index"].items():
        assert r["build_s"] > 0 and r["query_ms_single"] > 0 and 0.0 <= r["recall@10_vs_exact"] <= 1.0
    assert "embed:" in proc.stdout and "recall@10 vs exact" in proc.stdout


# -- smoke tests: every script in benchmarks/ runs at tiny sizes, so none breaks unnoticed --
def _run(args, timeout=300):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_convert_speed_smoke(tmp_path):
    out = _run([ROOT / "benchmarks" / "convert_speed.py", "--smoke"])
    assert "batched" in out and "TRI-xyz" in out and "goal batched" in out


def test_encoder_speed_smoke(tmp_path):
    out_json = tmp_path / "encoder_speed.json"
    out = _run([ROOT / "benchmarks" / "encoder_speed.py", "--smoke", "--threads", "1", "--out", out_json])
    report = json.loads(out_json.read_text())
    assert {r["family"] for r in report["block_comparison"]} >= {"MLP", "TRI", "HASH", "OCT"}
    assert all(r["blocks_speedup"] > 0 and r["max_abs_diff"] < 1e-3 for r in report["block_comparison"])
    # the block goal's table: one block, plain vs efficient, inference and training, with the goal verdict
    goal = report["block_goal"]
    assert {r["family"] for r in goal} >= {"MLP", "TRI", "HASH", "OCT"}
    for r in goal:
        assert r["infer_ratio"] > 0 and r["train_ratio"] > 0 and r["max_abs_diff"] < 1e-3
        assert 1 < r["infer_flop_ratio"] <= 2 and isinstance(r["train_goal_met"], bool)
    assert "block goal: plain >=" in out
    assert "embedding throughput" in out
    by_batch = report["batch_sizes"]          # INRs/s per batch size, both block forms, on the CPU here
    assert {r["batch"] for r in by_batch} == {1, 2} and {r["family"] for r in by_batch} >= {"MLP", "TRI", "HASH", "OCT"}
    assert all(r["efficient_inrs_per_s"] > 0 and r["plain_inrs_per_s"] > 0 and r["plain_over_efficient"] > 0
               for r in by_batch)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_encoder_speed_device_without_cuda_is_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "encoder_speed.py"), "--goal-only", "--device", "cuda"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "sees no CUDA device" in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_check_smoke_on_cpu(tmp_path):
    out_json = tmp_path / "gpu_check.json"
    out = _run([ROOT / "benchmarks" / "gpu_check.py", "--device", "cpu", "--smoke", "--out", out_json,
                "--work", tmp_path / "work"])
    report = json.loads(out_json.read_text())
    assert report["device_arg"] == "cpu" and report["smoke"] and report["commit"]
    assert set(report["parts"]) == {"tests", "cpu_zoo", "main", "paper_zoo", "paper_train"}
    assert all("error" not in p for p in report["parts"].values()), report["parts"]
    goals = report["goals"]
    assert set(goals) == {"paper_zoo_minutes", "cpu_zoo_minutes", "inrs_per_s_cached", "inrs_per_s_files",
                          "train_step_seconds", "tests_failed_cuda_visible"}
    for g in goals.values():
        assert g["value"] is not None and g["target"] is not None and g["met"] is False    # smoke sizes meet nothing
    assert report["figures"]["tests"]["failures"] == 0
    parts = report["figures"]["paper_training"]["seconds_per_part"]
    assert parts["encoder forward"] > 0 and parts["backward"] > 0
    assert "where it goes" in out


def test_zoo_fit_speed_smoke(tmp_path):
    out_json = tmp_path / "zoo_fit_speed.json"
    _run([ROOT / "benchmarks" / "zoo_fit_speed.py", "--batch", "2", "--steps", "2", "--points", "64", "--preset", "tiny",
          "--function", "sdf", "--threads", "1", "--out", out_json])
    rows = json.loads(out_json.read_text())["rows"]
    assert {r["arch"] for r in rows} >= {"MLP", "TRI", "HASH", "OCT"}


def test_implicit_functions_smoke(tmp_path):
    from gmn_inr.zoo.build import build_zoo, preset_config

    # sdf/udf/occupancy INRs of two architectures: this script pairs them within and across
    # architectures, and the SDF INRs with the radiance INRs of the same objects (cross-modality)
    zoo = tmp_path / "zoo"
    build_zoo(zoo, config=preset_config("tiny", per_class=4, archs={"sdf": ["MLP", "HASH"], "udf": ["MLP", "HASH"],
                                                                    "occupancy": ["MLP", "HASH"],
                                                                    "radiance": ["MLP", "HASH"]},
                                            # no implicit INR dropped: both architectures reach the test split
                                            fit={"min_iou": -1.0, "max_sdf_err": 1e9}),
              progress=False, log=lambda *a: None)
    # a mesh zoo from a stand-in for CGAL's data archive: two simple meshes under two classic names
    import io
    import tarfile

    import trimesh

    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, mesh in (("armadillo", trimesh.creation.icosphere(2)), ("bear", trimesh.creation.box((1, 0.6, 0.4)))):
            data = mesh.export(file_type="off").encode()
            info = tarfile.TarInfo(f"data/meshes/{name}.off")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _run([ROOT / "benchmarks" / "cgal_meshes.py", "--preset", "tiny", "--archive", archive, "--limit", "2",
          "--out", tmp_path / "cgal", "--workers", "1"], timeout=600)
    _run([ROOT / "benchmarks" / "implicit_functions.py", "--preset", "smoke", "--zoo", zoo, "--steps", "2",
          "--out", tmp_path / "results", "--runs", tmp_path / "runs", "--threads", "1",
          "--mesh-zoo", tmp_path / "cgal"], timeout=600)
    report = json.loads((tmp_path / "results" / "implicit_functions.json").read_text())
    assert report["retrieval"] and all(0.0 <= r["mean@1"] <= 1.0 for r in report["retrieval"].values())
    assert "L2 + unified decoder, raw output rows" in report["retrieval"]
    # the geometry-head rows: the encoder has a head and retrieval read only its columns
    assert report["training"]["L2 + unified decoder, geometry head"]["geometry_dim"] > 0
    assert any(k.startswith("no learning: the geometry head at initialisation") for k in report["retrieval"])
    assert "no learning: canonical outputs at the probe points" in report["retrieval"]
    assert "no learning: canonical outputs and side at the probe points" in report["retrieval"]
    assert "no learning: canonical outputs, occupancy distance from the logit's scale" in report["retrieval"]
    assert report["training"]["L2 + unified decoder + SigLIP, geometry head"]["final"]["contrastive"] > 0
    # two architectures' implicit INRs: per-architecture and across-architecture recall, and the
    # cross-modality table by the SDF's family
    assert report["meta"]["archs"] == ["MLP", "HASH"]
    row = report["retrieval"]["L2 + unified decoder"]
    assert set(row["by_arch"]) == {"MLP", "HASH"} and 0.0 <= row["across_mean@1"] <= 1.0
    xm = report["cross_modality"]
    assert set(xm) >= {"sdf/radiance", "radiance/sdf"} and set(xm["sdf/radiance"]) == {"1", "5", "10"}
    assert {"sdf:mlp/radiance", "sdf:hashgrid/radiance"} <= set(xm["by_implicit_family"])
    assert "sdf:mlp/radiance:hashgrid" in xm["matrix"]
    md = (tmp_path / "results" / "implicit_functions.md").read_text()
    assert "Geometry <-> appearance" in md and "Real meshes" in md
    meshes = report["meshes"]
    assert meshes["n_objects"] == 2 and "L2 + unified decoder" in meshes["retrieval"]
    assert set(meshes["cross_modality"]["sdf/radiance"]) == {"1", "5", "10"}


def test_cross_function_recall_within_and_across_architectures():
    """implicit_functions' recall: within an architecture the gallery is that architecture's INRs,
    across architectures the other architectures'; a query whose object the gallery lacks does not count."""
    import importlib.util
    from types import SimpleNamespace as R

    spec = importlib.util.spec_from_file_location("implicit_functions", ROOT / "benchmarks" / "implicit_functions.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    recs = [R(object_id=o, arch=a, function=f) for o in ("o1", "o2", "o3") for a in ("HASH", "TRI")
            for f in bench.FUNCS if not (o == "o3" and a == "TRI" and f == "sdf")]
    # one direction per (object, architecture): the same object matches within its architecture only
    key = sorted({(r.object_id, r.arch) for r in recs})
    z = torch.nn.functional.one_hot(torch.tensor([key.index((r.object_id, r.arch)) for r in recs]), len(key)).float()
    out = bench.cross_function_recall(z, recs)
    # (o3 has no TRI sdf INR: its TRI queries against sdf are left out, not counted as misses)
    assert out["mean@1"] == 1.0 and set(out["by_arch"]) == {"HASH", "TRI"}
    assert all(v["mean@1"] == 1.0 for v in out["by_arch"].values())
    # across: the other architecture's INRs of the object are orthogonal, so the nearest is chance-like
    assert out["across_mean@1"] < 1.0
    # one direction per object: the same object matches across architectures too
    objs = sorted({r.object_id for r in recs})
    z = torch.nn.functional.one_hot(torch.tensor([objs.index(r.object_id) for r in recs]), len(objs)).float()
    out = bench.cross_function_recall(z, recs)
    assert out["mean@1"] == 1.0 and out["across_mean@1"] == 1.0
    assert bench.pair_columns(out) == [f"{a}/{b}" for a in bench.FUNCS for b in bench.FUNCS if a != b]
