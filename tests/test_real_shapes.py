"""The real-shape zoo (KiCad part models) on a small library written here, ``--init shared``, and the
real_shapes benchmark's smoke test."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gmn_inr.fields import TRAINING_ARCHITECTURES
from gmn_inr.zoo import kicad as K
from kicad_fixtures import write_library

ROOT = Path(__file__).resolve().parents[1]


def test_parse_vrml_triangulates_polygons_and_reads_materials():
    text = """#VRML V2.0 utf8
Shape { appearance Appearance {material DEF RED Material { ambientIntensity 0.2 diffuseColor 1 0 0 } } }
Shape { geometry IndexedFaceSet { coordIndex [0,1,2,3,-1,0,2,4,-1]
coord Coordinate { point [0 0 0, 1 0 0, 1 1 0, 0 1 0, 0.5 0.5 1] } }
appearance Appearance{material USE RED } }
Shape { geometry IndexedFaceSet { coordIndex [0,1,2]
coord Coordinate { point [0 0 2,1 0 2,0 1 2] } }
appearance Appearance{material DEF BLUE Material { diffuseColor 0 0 1 } } }
"""
    v, f, c = K.parse_vrml(text)
    assert v.shape == (8, 3)
    # the quad is two fan triangles, then the triangle, then the last shape's (indices offset by 5)
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [0, 2, 4], [5, 6, 7]]
    assert c.tolist() == [[1, 0, 0]] * 3 + [[0, 0, 1]]
    with pytest.raises(K.UnsupportedVRML, match="Transform"):
        K.parse_vrml("Transform { children [ " + text + " ] }")
    with pytest.raises(K.UnsupportedVRML, match="no IndexedFaceSet"):
        K.parse_vrml("#VRML V2.0 utf8\nShape { }")


def test_labels_come_from_the_catalogue():
    assert K.label_of("Connector_PinHeader_2.54mm", "PinHeader_1x07_P2.54mm_Horizontal") == "pins-1x07"
    assert K.label_of("Connector_PinHeader_1.00mm", "PinHeader_2x07_P1.00mm_Vertical") == "pins-2x07"
    assert K.label_of("Connector_PinHeader_1.00mm", "PinHeader_1x40_P1.00mm_Vertical") is None    # past 1x20
    assert K.label_of("Connector_PinHeader_1.00mm", "PinHeader_2x11_P1.00mm_Vertical") is None    # past 2x10
    assert K.label_of("Connector_PinSocket_2.54mm", "PinSocket_1x05_P2.54mm_Vertical") is None
    assert K.label_of("Package_SO", "TSSOP-20_4.4x6.5mm_P0.65mm") is None
    assert K.label_of("Resistor_SMD", "R_0402_1005Metric") is None


def test_catalogue_dedupes_and_counts(tmp_path):
    root = write_library(tmp_path / "models")
    entries, counts = K.catalogue(root)
    names = sorted(e.path.name for e in entries)
    twins = {"PinHeader_1x03_P2.54mm_Copy.wrl", "PinHeader_1x03_P2.54mm_Vertical_SMD_Pin1Left.wrl"}
    assert counts["duplicates"] == 1 and len(twins & set(names)) == 1       # the same bytes kept once
    assert {e.class_name for e in entries} == {"pins-1x02", "pins-1x03", "pins-2x04"}
    stats = K.write_mesh_folder(entries, tmp_path / "meshes")
    assert [Path(p).name for p, _ in stats["skipped"]] == ["PinHeader_1x02_P2.54mm_Transformed.wrl"]
    assert stats["written"] == len(entries) - 1
    again = K.write_mesh_folder(entries, tmp_path / "meshes")           # resumable: nothing converted twice
    assert again["written"] == 0 and again["kept"] == stats["written"]
    with pytest.raises(FileNotFoundError, match="apt-get install -y kicad-packages3d"):
        K.catalogue(tmp_path / "nowhere")


def test_mesh_keeps_material_colours_and_exact_distance(tmp_path):
    from gmn_inr.zoo.meshes import MeshShape

    root = write_library(tmp_path / "models", packages=False)
    entries, _ = K.catalogue(root)
    K.write_mesh_folder(entries, tmp_path / "meshes")
    shape = MeshShape(next((tmp_path / "meshes" / "pins-1x03").glob("*Vertical.ply")))
    grid = MeshShape(next((tmp_path / "meshes" / "pins-1x03").glob("*Vertical.ply")), sign="grid", sign_res=24,
                     n_samples=50_000)
    p = torch.rand(2000, 3) * 1.6 - 0.8
    d, col = shape.sdf_and_color(p)
    assert (d < 0).any() and (d > 0).any()
    # the two sign methods agree away from the surface; the exact distance is below the sampled one
    far = d.abs() > 0.05
    assert ((d[far] < 0) == (grid.sdf(p)[far] < 0)).float().mean() > 0.99
    assert (d.abs() <= grid.sdf(p).abs() + 0.01).all()
    body, pin = torch.tensor([0.15, 0.15, 0.15]), torch.tensor([0.86, 0.74, 0.50])
    assert all(torch.allclose(c, body, atol=0.01) or torch.allclose(c, pin, atol=0.01) for c in col)


def _tiny_real_config(init="per-inr", archs=("MLP",)):
    cfg = K.real_zoo_config("tiny", unseen=[], init=init)
    return dataclasses.replace(cfg, archs={"radiance": archs, "sdf": archs},
                               fit=dataclasses.replace(cfg.fit, steps=60))


def test_real_zoo_builder_labels_resume_and_gate(tmp_path):
    from gmn_inr.zoo import open_store
    from gmn_inr.zoo.build import BuildInterrupted, build_zoo

    root = write_library(tmp_path / "models", packages=False)
    meshes = K.prepare_kicad(root, tmp_path / "meshes", log=lambda *_: None)
    cfg = _tiny_real_config()
    # a gate no radiance INR can pass (colour PSNR >= 99 dB) and one every sdf INR passes
    cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, min_psnr=99.0, min_iou=0.0, max_sdf_err=1.0))
    build_zoo(tmp_path / "a", config=cfg, meshes=meshes, progress=False)
    with pytest.raises(BuildInterrupted):
        build_zoo(tmp_path / "b", config=cfg, meshes=meshes, progress=False, stop_after=2)
    build_zoo(tmp_path / "b", config=cfg, meshes=meshes, progress=False)
    a, b = open_store(tmp_path / "a"), open_store(tmp_path / "b")
    assert sorted(a.classes) == ["pins-1x02", "pins-1x03"] and len(a.objects) == 6
    for o, m in a.objects.items():
        assert m["class_name"] == ("pins-1x02" if "1x02" in o else "pins-1x03") and m["label"] == a.classes.index(
            m["class_name"])
    # killed after 2 INRs and rerun: the same INRs, bit for bit
    fa = {e: (tmp_path / "a" / v["path"]).read_bytes() for e, v in a.manifest["inrs"].items()}
    fb = {e: (tmp_path / "b" / v["path"]).read_bytes() for e, v in b.manifest["inrs"].items()}
    assert fa == fb and set(a.manifest["dropped"]) == set(b.manifest["dropped"])
    # the quality gate: every radiance INR dropped (after its refit) and counted, every sdf INR stored
    assert {e["function"] for e in a.manifest["inrs"].values()} == {"sdf"} and len(fa) == 6
    assert len(a.manifest["dropped"]) == 6
    assert all(v["gate"]["passed"] for v in a.manifest["inrs"].values())


def test_shared_init_same_start_within_an_architecture_different_fits(tmp_path, monkeypatch):
    import gmn_inr.zoo.fit as fit_mod
    from gmn_inr.zoo import open_store
    from gmn_inr.zoo.build import build_zoo, init_seed

    starts = {}
    real_stack = fit_mod.FieldStack

    def spy(spec, occs, B, seeds, **kw):
        st = real_stack(spec, occs, B, seeds, **kw)
        starts.setdefault((spec.name, spec.out_dim), []).extend(
            {n: p[b].detach().clone() for n, p in st.params.items()} for b in range(B))
        return st

    monkeypatch.setattr(fit_mod, "FieldStack", spy)
    root = write_library(tmp_path / "models", packages=False)
    meshes = K.prepare_kicad(root, tmp_path / "meshes", log=lambda *_: None)
    cfg = _tiny_real_config("shared", archs=("MLP", "TRI"))
    lenient = dataclasses.replace(cfg.fit, min_iou=0.0, max_sdf_err=1.0, min_psnr=0.0, min_view_psnr=0.0)
    cfg = dataclasses.replace(cfg, batch=2, fit=lenient)                      # several batches, every INR kept
    build_zoo(tmp_path / "z", config=cfg, meshes=meshes, progress=False)
    assert init_seed(cfg, "MLP") == init_seed(dataclasses.replace(cfg, name="other"), "MLP") != init_seed(cfg, "TRI")
    assert {a for a, _ in starts} == {"MLP", "TRI"}
    for arch, inits in starts.items():          # (arch, out_dim): radiance and sdf INRs of one architecture
        assert len(inits) >= 5
        for other in inits[1:]:                     # every INR of one architecture (and function) starts equal
            assert all(torch.equal(other[n], inits[0][n]) for n in inits[0]), arch
    store = open_store(tmp_path / "z")
    recs = [r for r in store if r.function == "sdf" and r.arch == "MLP"]
    w = [torch.cat([p.reshape(-1) for p in r.field().parameters()]) for r in recs]
    assert len(w) >= 2 and not torch.equal(w[0], w[1])          # fitted to different objects: different
    assert store.manifest["config"]["init"] == "shared"
    # the default writes the config it always wrote (no "init" key), so older zoos resume unchanged
    assert "init" not in _tiny_real_config().to_json_dict()
    starts.clear()
    build_zoo(tmp_path / "p", config=_tiny_real_config("per-inr", archs=("MLP",)), meshes=meshes, progress=False)
    per = starts[("MLP", 1)]
    assert not torch.equal(per[0]["mlp.layers.0.weight"], per[1]["mlp.layers.0.weight"])


@pytest.fixture(scope="module")
def real_zoos(tmp_path_factory):
    from gmn_inr.zoo.build import build_zoo

    tmp = tmp_path_factory.mktemp("real")
    root = write_library(tmp / "models")
    meshes = K.prepare_kicad(root, tmp / "meshes", log=lambda *_: None)
    zoos = {}
    for init in ("per-inr", "shared"):
        cfg = K.real_zoo_config("tiny", unseen=["MLP-2L"], init=init)
        # the built-in architectures only: a plug-in family another test registered in this process would
        # be fitted too, and the benchmark's own process does not load it
        cfg = dataclasses.replace(cfg, archs={"radiance": TRAINING_ARCHITECTURES + ("MLP-2L",)},
                                  fit=dataclasses.replace(cfg.fit, steps=40, min_iou=0.0, min_psnr=0.0,
                                                          min_view_psnr=0.0, max_sdf_err=1.0))
        build_zoo(tmp / init, config=cfg, meshes=meshes, progress=False)
        zoos[init] = tmp / init
    return zoos


def test_real_shapes_smoke(real_zoos, tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "real_shapes.py"), "--preset", "smoke", "--out", str(out),
           "--runs", str(tmp_path / "runs"), "--steps", "2", "--threads", "1",
           "--zoo", f"per-INR init={real_zoos['per-inr']}", "--zoo", f"shared init={real_zoos['shared']}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads((out / "real_shapes.json").read_text())
    assert rep["meta"]["n_classes"] == 3 and rep["meta"]["n_objects"] == 9
    assert set(rep["zoos"]) == {"per-INR init", "shared init"}
    h = rep["headroom"]
    assert all(0 <= h[k] <= 1 for k in ("probe points (8^3)", "16^3", "dense (32^3)"))
    kinds = {"learned", "no learning, probe points", "no learning, dense", "ceiling, probe points", "ceiling, dense"}
    for name, z in rep["zoos"].items():
        head = z["headline"]
        assert {"L_R+C", "L_R+C, no message passing"} <= set(head)
        assert any("weights only" in row for row in head)
        assert set(z["kinds"].values()) == kinds and set(z["kinds"]) == set(head) == set(z["seconds_per_inr"])
        for row, hd in head.items():
            assert set(hd) == {"recall@1", "worst_unseen", "worst_family"}
            assert hd["recall@1"] is not None and 0 <= hd["recall@1"] <= 1, row
            assert hd["worst_unseen"] is not None, row              # MLP-2L is classified on every row
        # one exact vector per object: its nearest other INR is the same object in another architecture
        assert head["exact geometry (ceiling, no INR)"]["recall@1"] == 1.0
        assert all(v >= 0 for v in z["seconds_per_inr"].values())
        assert any("weights-only" in g for g in z["goals"]) == ("shared" in name)
        assert "MLP-2L" in z["classification"]["L_R+C"]["ALL"]
        assert z["digest"]["files"] == len(list(Path(z["zoo"]).rglob("*.safetensors"))) > 0
    assert rep["meta"]["cpu_capability"] and rep["meta"]["torch"]
    md = (out / "real_shapes.md").read_text()
    assert md.startswith("# real_shapes") and "per-INR init" in md and "shared init" in md
    # the zoos side by side, one thread each: every INR row as the one-thread run above gave it
    side = cmd[:cmd.index("--out")] + ["--out", str(tmp_path / "side"), "--runs", str(tmp_path / "side_runs"),
                                       "--steps", "2", "--threads", "2", "--jobs", "2"] + cmd[cmd.index("--zoo"):]
    proc = subprocess.run(side, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep2 = json.loads((tmp_path / "side" / "real_shapes.json").read_text())
    assert rep2["meta"]["jobs"] == 2 and "side by side" in (tmp_path / "side" / "real_shapes.md").read_text()
    for name, z in rep["zoos"].items():
        z2 = rep2["zoos"][name]
        assert z["threads"] == z2["threads"] == 1
        rows = [r for r, k in z["kinds"].items() if not k.startswith("ceiling")]
        assert {r: z2["headline"][r] for r in rows} == {r: z["headline"][r] for r in rows}


def test_real_shapes_needs_a_zoo_or_headroom(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_shapes.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "--zoo NAME=DIR" in proc.stderr


def test_kicad_zoo_cli_errors_without_the_package(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gmn_inr.cli", "zoo", "build", "--kicad", str(tmp_path / "none"),
                           "--out", str(tmp_path / "z")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "kicad-packages3d" in proc.stderr and "Traceback" not in proc.stderr


def test_headroom_only_in_shards(tmp_path):
    """The headroom table without a zoo: two shard runs fill the exact-vector cache, a third reads it."""
    root = write_library(tmp_path / "models")
    base = [sys.executable, str(ROOT / "benchmarks" / "real_shapes.py"), "--headroom-only", "--preset", "smoke",
            "--kicad", str(root), "--meshes", str(tmp_path / "meshes"), "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out"), "--threads", "1"]
    for shard in ("0/2", "1/2"):
        proc = subprocess.run(base + ["--shard", shard], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 9
    assert not (tmp_path / "out" / "real_shapes_headroom.json").exists()
    proc = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rep = json.loads((tmp_path / "out" / "real_shapes_headroom.json").read_text())
    h = rep["headroom"]
    assert h["n_objects"] == 9 and h["n_classes"] == 3 and abs(h["chance"] - 1 / 3) < 1e-9
    assert all(0 <= h[k] <= 1 for k in ("probe points (8^3)", "16^3", "dense (32^3)"))
    assert rep["zoos"] == {} and "ceiling, dense" not in json.dumps(rep)
