"""The headline benchmark on real, labelled shapes with fine-grained classes (KiCad's 3D part models).

    apt-get install -y kicad-packages3d
    gmn-inr zoo build --preset cpu --kicad --out zoo_cache/real --workers 2
    gmn-inr zoo build --preset cpu --kicad --init shared --out zoo_cache/real_shared --workers 2
    python benchmarks/real_shapes.py --zoo "per-INR init=zoo_cache/real" \
        --zoo "shared init=zoo_cache/real_shared" --jobs 2
    python benchmarks/real_shapes.py --headroom-only [--kicad /usr/share/kicad/3dmodels]

Before anything is trained (``--headroom-only``: no zoo needed, the catalogue's objects and the
zoo's split): each object's exact truncated signed distance at the 512 probe points and dense
(32^3 over the probe cube), through the benchmark's classifier, so the classes are known to
leave room above an 8^3 reading. Then, on every zoo (one per initialisation, the same objects):
the headline table of ``unseen_arch.py`` (recall@1 ALL/ALL, worst unseen variant, worst other
family) for L_R+C, its zero-block twin and the paper's weights-only encoder, beside the
no-learning rows (sampled outputs at the probe points; sampled outputs on a dense 16^3 grid,
4,096 points; the surface distance) and the two ceilings (the headroom's classifiers, trained once
on the train objects' exact vectors, tested on each architecture's test INRs), with seconds per INR; classification
of every unseen variant and cross-architecture retrieval. Writes ``OUT/real_shapes.{json,md}``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import itertools
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import gmn_inr  # noqa: F401  (first: it shortens OpenMP's spin-wait before torch loads)
import torch

from gmn_inr.bench import (BENCH_PRESETS, WEIGHTS_ONLY, PaperGraphRecord, classification_table, embed_records,
                           git_commit, log, no_learning_rows, retrieval_table, time_direct_embedding)
from gmn_inr.bench_report import EXACT, NO_MESSAGE_PASSING, SAMPLED, SURFACE, _pct, headline_table
from gmn_inr.fields import TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES
from gmn_inr.provenance import files_digest, machine_meta

WEIGHTS = "paper's encoder, weights only"
DENSE = "sampled outputs, dense (4,096 points)"
EXACT_DENSE = "exact geometry, dense 32^3 (ceiling, no INR)"
#: every row's kind (the JSON's ``kinds``)
KINDS = {"L_R+C": "learned", NO_MESSAGE_PASSING: "learned", WEIGHTS: "learned",
         SAMPLED: "no learning, probe points", DENSE: "no learning, dense", SURFACE: "no learning, dense",
         EXACT: "ceiling, probe points", EXACT_DENSE: "ceiling, dense"}
#: the encoders trained on each zoo: (graph, encoder overrides)
ENCODERS = {"L_R+C": (False, {}), NO_MESSAGE_PASSING: (False, {"layers": 0}), WEIGHTS: (True, WEIGHTS_ONLY)}
DENSE_RES, CEILING_RES = 16, 32
#: INRs an encoder's seconds per INR are timed on (file read, conversion, encoder), spread over the architectures
TIMED_INRS = 1024


def cube_grid(res: int) -> torch.Tensor:
    """``[res^3, 3]`` cell centres over the probe points' cube (their spacing's half beyond them)."""
    from graphs.probe import PROBE_AXIS
    from gmn_inr.fields import cell_centres

    half = max(abs(a) for a in PROBE_AXIS) + (PROBE_AXIS[1] - PROBE_AXIS[0]) / 2
    return cell_centres(res, -half, half)


class ExactGeometry:
    """Each object's exact truncated signed distance at every point set of ``point_sets`` (a name ->
    ``[K, 3]``), computed together the first time the object is asked for (one mesh load)."""

    def __init__(self, point_sets: dict, cache_dir=None):
        self.point_sets = point_sets
        self.cache: dict = {}
        self.seconds = 0.0
        #: ``cache_dir``: one safetensors file per object, so several processes (``--shard``) share the work
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def vectors(self, descs: dict, key: str) -> dict:
        return {o: self.of(o, d)[key] for o, d in sorted(descs.items())}

    def of(self, o: str, d: dict) -> dict:
        from safetensors.torch import load_file

        from gmn_inr.atomic import atomic_write_bytes, safetensors_bytes
        from gmn_inr.canonical import TRUNCATION
        from gmn_inr.zoo.build import shape_of

        if o in self.cache:
            return self.cache[o]
        f = self.cache_dir / f"{o}.safetensors" if self.cache_dir else None
        if f is not None and f.exists():
            self.cache[o] = {k.replace("|", " "): v for k, v in load_file(f).items()}
            return self.cache[o]
        t0 = time.perf_counter()
        shape = shape_of(o, d)
        self.cache[o] = {k: shape.sdf(p).reshape(-1).clamp(-TRUNCATION, TRUNCATION) for k, p in self.point_sets.items()}
        self.seconds += time.perf_counter() - t0
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(f, safetensors_bytes({k.replace(" ", "|"): v for k, v in self.cache[o].items()}))
        return self.cache[o]


def point_sets() -> dict:
    from graphs.probe import probe_points

    return {"probe points (8^3)": probe_points(), "16^3": cube_grid(16), f"dense ({CEILING_RES}^3)": cube_grid(CEILING_RES)}


def headroom(descs: dict, n_classes: int, bp, exact: ExactGeometry) -> tuple[dict, dict]:
    """Test accuracy of the benchmark's classifier on each object's exact geometry (train objects ->
    test objects): at the 512 probe points, on a 16^3 and on a 32^3 grid of the probe cube. The
    classifier is trained as the encoders' on ALL is: each train object once per training
    architecture (as many steps). Returns ``(report, {point set: classifier})``; the ceiling rows
    of every zoo reuse the classifiers."""
    from gmn_inr.tasks import ClassifierConfig, accuracy, train_classifier

    out, models = {"n_objects": len(descs), "n_classes": n_classes, "chance": 1 / n_classes}, {}
    labels = {o: d["label"] for o, d in descs.items()}
    train = [o for o in sorted(descs) if descs[o]["split"] == "train"]
    test = [o for o in sorted(descs) if descs[o]["split"] == "test"]
    copies = len(TRAINING_ARCHITECTURES)
    for name in exact.point_sets:
        v = exact.vectors(descs, name)
        torch.manual_seed(0)
        model = train_classifier(torch.stack([v[o] for o in train]).repeat(copies, 1),
                                 torch.tensor([labels[o] for o in train]).repeat(copies), n_classes,
                                 ClassifierConfig(epochs=bp.classifier_epochs, hidden=bp.classifier_hidden,
                                                  batch_size=64))
        models[name] = model
        zt, yt = torch.stack([v[o] for o in test]), torch.tensor([labels[o] for o in test])
        out[name] = accuracy(model, zt, yt)
        # the same classifier's accuracy within each class set (class name up to the pin count: pins-1x, pins-2x)
        groups = sorted({descs[o]["class_name"][:-2] for o in test})
        out[f"{name} by class set"] = {g: accuracy(model, zt[idx], yt[idx]) for g in groups
                                       for idx in [torch.tensor([i for i, o in enumerate(test)
                                                                 if descs[o]["class_name"][:-2] == g])]}
        log(f"headroom: exact geometry at {name}: {_pct(out[name])}% of {len(test)} test objects; "
            + ", ".join(f"{g} {_pct(a)}%" for g, a in out[f"{name} by class set"].items()))
    return out, models


def catalogue_objects(kicad_root, meshes: Path, preset: str, per_class=None) -> tuple[list, dict]:
    """The real-shape zoo's objects and splits without fitting anything (``--headroom-only``)."""
    from collections import defaultdict

    from gmn_inr.zoo.build import assign_splits, object_descriptions
    from gmn_inr.zoo.kicad import prepare_kicad, real_zoo_config

    cfg = real_zoo_config(preset)
    classes, descs = object_descriptions(cfg, prepare_kicad(kicad_root, meshes, log=log, per_class=per_class))
    by_class = defaultdict(list)
    for o, d in descs.items():
        by_class[d["class_name"]].append(o)
    for o, s in assign_splits(by_class, cfg.splits, cfg.seed).items():
        descs[o]["split"] = s
    return classes, descs


def store_descs(store) -> dict:
    """``{object_id: desc}`` of a zoo's objects, as :func:`gmn_inr.zoo.build.shape_of` reads them."""
    out = {}
    for o, m in store.objects.items():
        out[o] = {"kind": "mesh" if m.get("source", "procedural") != "procedural" else "procedural",
                  "class_name": m["class_name"], "label": m["label"], "split": m["split"], "path": m.get("source"),
                  "seed": m.get("seed")}
    return out


def evaluate_zoo(name: str, zoo: Path, runs: Path, bp, device: str, exact: ExactGeometry, ceilings: dict) -> dict:
    """Every row of the headline table on one zoo's radiance INRs (``ceilings``: the headroom's
    classifiers, by point set)."""
    from gmn_inr.baselines import output_features, sampled_output_features
    from gmn_inr.canonical import canonical_output_features
    from gmn_inr.train import TrainConfig, train
    from gmn_inr.zoo import open_store
    from gmn_inr.zoo.dataset import PairDataset

    training, unseen = TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES
    store = open_store(zoo)
    recs = [r for r in store if r.function == "radiance"]
    if not recs:
        raise SystemExit(f"{zoo} holds no radiance INRs")
    n_classes = len(store.classes)
    pairs = PairDataset(store, split="train", archs=training, function="radiance")
    log(f"{name}: {len(recs)} radiance INRs, {n_classes} classes, {len(pairs)} training pairs")
    rep = {"classification": {}, "retrieval": {}, "seconds_per_inr": {}, "training": {}, "zoo": str(zoo)}
    for row, (paper, enc) in ENCODERS.items():
        cfg = TrainConfig.for_preset(bp.encoder, loss="R+C", steps=bp.steps, seed=0, ckpt_every=max(10, bp.steps // 10),
                                     encoder=enc, device=device)
        run_dir = runs / row.replace("+", "p").replace(", ", "_").replace(" ", "_").replace("'", "")
        log(f"{name}: training {row} ({bp.steps} steps) -> {run_dir}")
        tp = [(PaperGraphRecord(a), PaperGraphRecord(b)) for a, b in pairs] if paper else pairs
        res = train(cfg, tp, out_dir=run_dir, resume=True)
        rep["training"][row] = {"seconds": res.seconds, "steps": res.step}
        ev = [PaperGraphRecord(r) for r in recs] if paper else recs
        z, _ = embed_records(res.encoder, ev, device)
        rep["seconds_per_inr"][row] = time_direct_embedding(res.encoder, ev, device, sample=TIMED_INRS)
        rep["classification"][row], _ = classification_table(z, recs, n_classes, bp, training, unseen)
        rep["retrieval"][row] = retrieval_table(z, recs, training)
    dense = cube_grid(DENSE_RES)
    rows = {SAMPLED: sampled_output_features,
            DENSE: lambda f: output_features(f(dense).t()),
            SURFACE: lambda f: canonical_output_features(f, "radiance")}
    for row, feats in rows.items():
        cls, ret, secs = no_learning_rows(recs, n_classes, bp, feats, row, training, unseen)
        rep["classification"][row], rep["retrieval"][row], rep["seconds_per_inr"][row] = cls, ret, secs
    descs = store_descs(store)
    for row, key in ((EXACT, "probe points (8^3)"), (EXACT_DENSE, f"dense ({CEILING_RES}^3)")):
        t0 = exact.seconds
        v = exact.vectors({r.object_id: descs[r.object_id] for r in recs}, key)
        z = torch.stack([v[r.object_id] for r in recs])
        # every INR carries its object's exact vector, so a classifier trained on ALL's or one family's INRs
        # would see the train objects' vectors again: the headroom's, trained on each train object once
        # per training architecture, stands for each of them
        rep["classification"][row], _ = classification_table(z, recs, n_classes, bp, training, unseen,
                                                             classifier=ceilings[key])
        rep["retrieval"][row] = retrieval_table(z, recs, training)
        # per object, not per INR: the ground truth is computed from the mesh, once per object (0 when cached)
        rep["seconds_per_inr"][row] = (exact.seconds - t0) / max(1, len({r.object_id for r in recs}))
    rep["headline"] = headline_table(rep, training, unseen)
    rep["kinds"] = {row: KINDS[row] for row in rep["headline"]}
    rep["goals"] = zoo_goals(rep, name)
    rep["n_inrs"], rep["n_objects"] = len(recs), len({r.object_id for r in recs})
    rep["digest"] = files_digest(Path(zoo) / "inrs")       # which INR bytes these numbers come from
    return rep


def _zoo_worker(threads: int) -> None:
    """A ``--jobs`` process: the threads it is given, and the allocator the training tunes."""
    from gmn_inr.train import tune_malloc

    tune_malloc()
    torch.set_num_threads(threads)


def zoo_goals(rep: dict, name: str) -> list[str]:
    head, secs, out = rep["headline"], rep["seconds_per_inr"], []
    ours = head["L_R+C"]
    keys = ("recall@1", "worst_unseen")

    def cmp(other: str, margin: float) -> tuple[bool, str]:
        th = head[other]
        ok = all(ours[k] is not None and th[k] is not None and ours[k] >= th[k] + margin for k in keys)
        return ok, ", ".join(f"{k} {_pct(ours[k])} vs {_pct(th[k])}" for k in keys)

    for other in (NO_MESSAGE_PASSING, SAMPLED):
        ok, txt = cmp(other, 0.05)
        out.append(f"[{name}] L_R+C leads {other} by >= 5 points on recall@1 ALL/ALL and the worst unseen "
                   f"variant: {txt} -> {'met' if ok else 'missed'}")
    for other in (DENSE, SURFACE):
        ok, txt = cmp(other, 0.0)
        fast = secs["L_R+C"] < secs[other]
        out.append(f"[{name}] L_R+C at least level with {other} on both, at less time per INR: {txt}, "
                   f"{secs['L_R+C']:.4f} vs {secs[other]:.4f} s/INR -> {'met' if ok and fast else 'missed'}")
    c, d = head[EXACT]["worst_unseen"], head[EXACT_DENSE]["worst_unseen"]
    out.append(f"[{name}] headroom: exact geometry at the probe points <= 85% on the worst unseen variant and the "
               f"dense reading >= 10 points above it: {_pct(c)} vs {_pct(d)} -> "
               f"{'met' if c is not None and d is not None and c <= 0.85 and d >= c + 0.10 else 'missed'}")
    if "shared" in name:
        r1 = head[WEIGHTS]["recall@1"]
        fam = {a: v for a, v in rep["classification"][WEIGHTS].get("ALL", {}).items() if a in TRAINING_ARCHITECTURES}
        ok = r1 is not None and r1 >= 0.10 and fam and all(v >= 0.5 for v in fam.values())
        out.append(f"[{name}] the paper's weights-only encoder reaches >= 10% recall@1 ALL/ALL ({_pct(r1)}) and "
                   f">= 50% classification on every training family ("
                   + ", ".join(f"{a} {_pct(v)}" for a, v in fam.items()) + f") -> {'met' if ok else 'missed'}")
    return out


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"# real_shapes — KiCad part models, {m['n_classes']} classes, {m['n_objects']} objects", "",
             f"{m['date']}, commit `{m['commit']}`, wall {m['wall_seconds'] / 60:.1f} min, bench preset "
             f"`{m['preset']}`" + (f" ({m['steps']} training steps per encoder)" if report["zoos"] else "")
             + (f", {m['jobs']} zoos evaluated side by side" if m.get("jobs", 1) > 1 and len(report["zoos"]) > 1
                else "")
             + ". Accuracies and recalls in %.", ""]
    if m.get("scale"):
        lines += [f"Scale of this run: {m['scale']}", ""]
    h = report.get("headroom")
    if h:
        lines += ["## Headroom before training: exact geometry of each object (no INR), test accuracy", "",
                  f"{h['n_objects']} objects, {h['n_classes']} classes, chance {_pct(h['chance'])}%.", "",
                  "| reading | accuracy |", "|---|---|"]
        sets = sorted({g for k, v in h.items() if k.endswith("by class set") for g in v})
        lines[-2:] = ["| reading | accuracy | " + " | ".join(f"class set {g}NN" for g in sets) + " |",
                      "|---|---|" + "---|" * len(sets)]
        lines += [f"| {k} | {_pct(v)} | " + " | ".join(_pct(h.get(f"{k} by class set", {}).get(g)) for g in sets) + " |"
                  for k, v in h.items() if k not in ("n_objects", "n_classes", "chance") and not isinstance(v, dict)]
        lines.append("")
    for zname, z in report["zoos"].items():
        lines += [f"## {zname} ({z['n_inrs']} radiance INRs of {z['n_objects']} objects, `{z['zoo']}`)", "",
                  "| method | kind | recall@1 ALL/ALL | worst unseen variant | worst other family | s/INR |",
                  "|---|---|---|---|---|---|"]
        for row, hd in z["headline"].items():
            lines.append(f"| {row} | {z['kinds'][row]} | {_pct(hd['recall@1'])} | {_pct(hd['worst_unseen'])} | "
                         f"{_pct(hd['worst_family'])} | {z['seconds_per_inr'][row]:.4f} |")
        lines.append("")
        for row, table in z["classification"].items():
            tests = list(table.get("ALL", {}))
            lines += [f"**{row}**, classifier on ALL: " + ", ".join(f"{a} {_pct(table['ALL'][a])}" for a in tests), ""]
        pairs = list(z["retrieval"]["L_R+C"])
        lines += ["| retrieval recall@1 | " + " | ".join(pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
        lines += [f"| {row} | " + " | ".join(_pct(t.get(p, {}).get("1")) for p in pairs) + " |"
                  for row, t in z["retrieval"].items()]
        lines += ["", "Goals:", ""] + [f"- {g}" for g in z["goals"]] + [""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", action="append", default=[], metavar="NAME=DIR",
                    help="a built real-shape zoo and its row name (repeat: one per initialisation)")
    ap.add_argument("--preset", default="cpu", choices=tuple(BENCH_PRESETS))
    ap.add_argument("--out", default="results")
    ap.add_argument("--runs", default="runs/real", help="checkpoint directory (reused and resumed)")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's training steps per encoder")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--headroom-only", action="store_true", help="only the exact-geometry headroom table (no zoo)")
    ap.add_argument("--kicad", default="/usr/share/kicad/3dmodels", help="with --headroom-only: the models")
    ap.add_argument("--meshes", default="zoo_cache/real_meshes", help="with --headroom-only: converted meshes")
    ap.add_argument("--per-class", type=int, default=None, help="with --headroom-only: models kept per class "
                                                                "(as `zoo build --kicad --per-class`)")
    ap.add_argument("--cache", default=None, help="folder of each object's exact vectors (shared by --shard runs)")
    ap.add_argument("--shard", default=None, metavar="K/N", help="with --cache: only compute the exact vectors of "
                                                                  "every N-th object from the K-th, then exit")
    ap.add_argument("--scale", default="", help="a sentence saying at what scale this run was made (into the md)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1, help="evaluate up to this many zoos side by side, each in its own "
                                                        "process with --threads / JOBS threads")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    bp = BENCH_PRESETS[args.preset]
    if args.steps:
        bp = replace(bp, steps=args.steps)
    from gmn_inr.train import tune_malloc

    tune_malloc()
    torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    zoos = []
    for z in args.zoo:
        if "=" not in z:
            raise SystemExit(f"--zoo takes NAME=DIR, got {z!r}")
        zoos.append(tuple(z.split("=", 1)))
    if not zoos and not args.headroom_only:
        raise SystemExit("give --zoo NAME=DIR (built with `gmn-inr zoo build --kicad`), or --headroom-only")
    exact = ExactGeometry(point_sets(), args.cache)
    report = {"zoos": {}}
    if args.headroom_only:
        classes, descs = catalogue_objects(args.kicad, Path(args.meshes), bp.zoo, args.per_class)
    else:
        from gmn_inr.zoo import open_store

        store = open_store(zoos[0][1])
        classes, descs = store.classes, store_descs(store)
    if args.shard:
        k, n = (int(x) for x in args.shard.split("/"))
        for i, (o, d) in enumerate(sorted(descs.items())):
            if i % n == k:
                exact.of(o, d)
        log(f"shard {args.shard}: exact vectors of {len(range(k, len(descs), n))} objects in {args.cache}")
        return 0
    report["headroom"], ceilings = headroom(descs, len(classes), bp, exact)
    stem = "real_shapes_headroom" if args.headroom_only else "real_shapes"

    def write() -> str:       # after the headroom and after each zoo: a cut-short run keeps what it measured
        report["meta"] = {"preset": args.preset, "steps": bp.steps, "commit": git_commit(), "device": args.device,
                          **machine_meta(), "date": _dt.datetime.now().isoformat(timespec="seconds"), "n_classes": len(classes),
                          "n_objects": len(descs), "classes": list(classes), "scale": args.scale, "jobs": args.jobs,
                          "wall_seconds": time.perf_counter() - t_start}
        md = markdown(report)
        tmp = out / f"{stem}.json.tmp"
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, out / f"{stem}.json")
        (out / f"{stem}.md").write_text(md)
        return md

    write()
    jobs = [(name, Path(zdir), Path(args.runs) / name.replace(" ", "_").replace("-", ""), bp, args.device, exact,
             ceilings) for name, zdir in zoos]
    side_by_side = args.jobs > 1 and len(jobs) > 1
    threads = max(1, torch.get_num_threads() // args.jobs) if side_by_side else torch.get_num_threads()
    pool = None
    if side_by_side:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(min(args.jobs, len(jobs)), mp_context=mp.get_context("spawn"),
                                   initializer=_zoo_worker, initargs=(threads,))
    md = ""
    with pool or contextlib.nullcontext():
        results = pool.map(evaluate_zoo, *zip(*jobs)) if pool else itertools.starmap(evaluate_zoo, jobs)
        for (name, *_), rep in zip(jobs, results):      # in order, each written as it is reached
            report["zoos"][name] = {**rep, "threads": threads}
            md = write()
    print(md if zoos else write())
    log(f"wrote {out / (stem + '.json')}, {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
