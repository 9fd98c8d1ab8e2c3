"""The headline benchmark: one encoder for every INR family, tested on architectures it never saw.

    python benchmarks/unseen_arch.py [--preset {tiny,cpu,paper}] [--zoo DIR] [--out DIR] [--device cpu]
        [--plugin FILE.py] [--archs MLP,TRI,HASH,OCT]

Builds (or reuses, resuming an interrupted build) the preset's radiance INR zoo, trains the GMN
encoder on ALL training architectures (MLP+TRI+HASH+OCT radiance fields) with L_R+C and the same
encoder with zero message-passing blocks, resuming from its checkpoints; with ``--ablations`` (the
default of the tiny and paper presets) also L_R and L_C (the paper's loss ablation) and three
L_R+C ablations (no probe readout; the main paper's weights-only graph and encoder, with and
without the architecture baseline). Then it reports:

- classification (the analogue of Tables 2, 4, 9): the paper's classifier trained on the
  embeddings of ALL and of each family, tested on every training architecture and every unseen
  variant, on test objects the encoder never saw;
- instance retrieval recall@1/5/10 (Table 6) for ALL/ALL and every query/gallery family pair;
- baselines on the same split: the INRs' sampled outputs at the probe points (no learning:
  classification and retrieval rows), the same encoder trained with zero message-passing blocks,
  a flat-weights network (one architecture only), a conversion baseline (sample a voxel grid, 3D
  CNN; classification and retrieval rows) and INRet-style distillation, with seconds per INR;
- a headline table: for every method the three numbers the encoder must win (recall@1 ALL/ALL,
  worst unseen variant with the classifier on ALL, worst other family with a one-family
  classifier);
- ``OUT/unseen_arch.json``, ``OUT/unseen_arch.md``, ``OUT/tsne.png``, ``OUT/retrieval.png``.

``--archs`` names the training architectures (default: the built-in MLP, TRI, HASH, OCT); every
other architecture the zoo holds, a ``--plugin`` family's included, is reported as unseen.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import gmn_inr  # noqa: F401  (first: it shortens OpenMP's spin-wait before torch loads)
import torch

from gmn_inr.bench import (BENCH_PRESETS, WEIGHTS_ONLY, BenchPreset, PaperGraphRecord, add_arch_arguments,  # noqa: F401
                           arch_sets, embed_records, ensure_zoo, exact_geometry_rows, family_labels, git_commit, log,
                           no_learning_rows, time_direct_embedding)
from gmn_inr.bench import classification_table as bench_classification
from gmn_inr.bench import retrieval_table as bench_retrieval
from gmn_inr.bench_report import (CONVERSION, EXACT, NO_MESSAGE_PASSING, SAMPLED, SURFACE, _pct, goals, headline_table,
                                  markdown)
from gmn_inr.fields import TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES
from gmn_inr.provenance import files_digest, machine_meta

LOSSES = {"L_R": "R", "L_R+C": "R+C", "L_C": "C"}
#: the loss ablation of the paper's tables (``--ablations``): L_R+C is always trained
LOSS_ABLATIONS = ("L_R", "L_C")
#: ablation runs (loss L_R+C): which graph (the main paper's or gmn_inr's) and encoder overrides.
#: The weights-only rows drop the probe features and the output-neuron readout (the paper's
#: encoder has neither); "as published" is the paper's encoder unchanged, which collapses.
ABLATIONS = {
    "L_R+C, no probe readout": dict(paper_graph=False, encoder={"probe_readout": False}),
    "L_R+C, paper graph": dict(paper_graph=True, encoder=WEIGHTS_ONLY),
    "L_R+C, paper graph as published": dict(paper_graph=True, encoder={"probe_dim": 0, "output_readout": False}),
}
# NO_MESSAGE_PASSING: the same encoder and training with zero message-passing blocks (probe features,
# pre-encoder and readout only): what the blocks add is the difference to "L_R+C"; SAMPLED: the
# no-learning baseline, each INR's outputs at the probe points (asinh, flattened, cosine); SURFACE: the
# stronger one, each probe point's distance from where the density (read as an occupancy) changes sign
FAMILY_ARCH = family_labels(TRAINING_ARCHITECTURES)   # main() resets these three from --archs / --plugin


# -- evaluation (gmn_inr.bench, with this run's architecture sets) --------------------------
def classification_table(z, recs, n_classes, bp: BenchPreset) -> tuple[dict, dict]:
    """``({classifier_train_set: {test_set: accuracy}}, {classifier_train_set: classifier})``;
    train sets ALL and each family."""
    return bench_classification(z, recs, n_classes, bp, TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES)


def retrieval_table(z, recs) -> dict:
    """Recall@1/5/10 of the same object in another architecture (test split, training archs)."""
    return bench_retrieval(z, recs, TRAINING_ARCHITECTURES)


# -- baselines ---------------------------------------------------------------------------
def no_learning_baseline(recs, n_classes, bp: BenchPreset, features, what: str) -> tuple[dict, dict, float]:
    """``features(field)`` of every INR through the same classifiers and retrieval (no learning)."""
    return no_learning_rows(recs, n_classes, bp, features, what, TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES)


def sampled_outputs_baseline(recs, n_classes, bp: BenchPreset) -> tuple[dict, dict, float]:
    """Every INR's outputs at the probe points (``asinh``, flattened): the simplest baseline."""
    from gmn_inr.baselines import sampled_output_features

    return no_learning_baseline(recs, n_classes, bp, sampled_output_features, "sampled outputs at the probe points")


def surface_distance_baseline(recs, n_classes, bp: BenchPreset) -> tuple[dict, dict, float]:
    """Every INR's density read as an occupancy, and each probe point's distance from where it
    changes sign (:func:`gmn_inr.canonical.surface_distance`, a 33^3 grid): geometry only, no colour."""
    from gmn_inr.canonical import canonical_output_features

    return no_learning_baseline(recs, n_classes, bp, lambda f: canonical_output_features(f, "radiance"),
                                "distance from the density's sign changes at the probe points")


def exact_geometry_ceiling(store, recs, n_classes, bp: BenchPreset) -> tuple[dict, dict]:
    """Each object's exact signed distance at the probe points (:func:`gmn_inr.bench.exact_geometry_rows`)."""
    return exact_geometry_rows(store, recs, n_classes, bp, TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES)


def baselines(recs, n_classes, bp: BenchPreset, encoder, classifier_all, device: str) -> tuple[dict, dict, dict]:
    """``(classification rows, timing, retrieval tables)`` of the flat-weights, conversion and
    distillation baselines."""
    from gmn_inr import baselines as B
    from gmn_inr.fields import arch_spec_for
    from gmn_inr.tasks import accuracy

    labels = torch.tensor([r.label for r in recs])
    train = [i for i, r in enumerate(recs) if r.split == "train" and r.arch in TRAINING_ARCHITECTURES]
    test = [i for i, r in enumerate(recs) if r.split == "test"]
    test_archs = sorted({recs[i].arch for i in test}, key=lambda a: (a not in TRAINING_ARCHITECTURES, a))
    results, timing = {}, {}

    # flat weights: trained and tested on MLP only; every other architecture cannot be read
    log("baseline: flat weights (MLP only)")
    mlp_train = [i for i in train if recs[i].arch == "MLP"]
    w = torch.stack([B.flat_parameters(recs[i].field()) for i in mlp_train])
    flat = B.train_supervised(B.FlatWeightsNet(w.shape[1], n_classes), w, labels[mlp_train],
                              B.SupervisedConfig(epochs=bp.baseline_epochs))
    row = {}
    for a in test_archs:
        t = [i for i in test if recs[i].arch == a]
        ws = [B.flat_parameters(recs[i].field()) for i in t]
        if all(x.numel() == flat.n_params for x in ws):
            row[a] = B.class_accuracy(B.predict(flat, torch.stack(ws)), labels[t])
        else:
            row[a] = None  # a different parameter count: the method cannot embed it at all
    results["flat_weights (trained on MLP)"] = row

    # conversion: sample a voxel grid of every INR, classify with a 3D CNN trained on ALL
    log(f"baseline: conversion ({bp.conversion_res}^3 grid + 3D CNN)")
    t0 = time.perf_counter()
    grids = {i: B.sample_grid(recs[i].field(), bp.conversion_res) for i in train + test}
    sample_s = (time.perf_counter() - t0) / len(grids)
    x_train = torch.stack([grids[i] for i in train])
    cnn = B.train_supervised(B.VoxelNet(x_train.shape[1], n_classes), x_train, labels[train],
                             B.SupervisedConfig(epochs=bp.baseline_epochs))
    row = {}
    t0 = time.perf_counter()
    for a in test_archs:
        t = [i for i in test if recs[i].arch == a]
        row[a] = B.class_accuracy(B.predict(cnn, torch.stack([grids[i] for i in t])), labels[t])
    cnn_s = (time.perf_counter() - t0) / len(test)
    results["conversion (voxel grid + 3D CNN, trained on ALL)"] = row
    timing["conversion"] = sample_s + cnn_s
    # its retrieval rows: the CNN's pooled features of every INR, by cosine, as the encoders'
    have = sorted(grids)
    sampled = cnn.features(torch.stack([grids[i] for i in have]))
    feats = sampled.new_zeros(len(recs), sampled.shape[1])      # rows of other INRs are never read
    feats[have] = sampled
    retrieval = {CONVERSION: retrieval_table(feats, recs)}

    # distillation: fit the MLP architecture to unseen INRs, then embed the copy
    log(f"baseline: distillation into MLP ({bp.distill_per_arch} INRs per unseen variant, {bp.distill_steps} steps)")
    from graphs import to_graph
    from gmn_inr.encoder import batch_graphs
    row, secs = {}, []
    for a in [x for x in test_archs if x in UNSEEN_ARCHITECTURES]:
        t = [i for i in test if recs[i].arch == a][: bp.distill_per_arch]
        zs = []
        for i in t:
            t0 = time.perf_counter()
            student = B.distill(recs[i].field(), arch_spec_for("MLP", recs[i].spec.out_dim, bp.zoo),
                                steps=bp.distill_steps)
            with torch.no_grad():
                zs.append(encoder(batch_graphs([to_graph(student)], device=device)).cpu())
            secs.append(time.perf_counter() - t0)
        row[a] = accuracy(classifier_all, torch.cat(zs), labels[t])
    results["distillation into MLP (L_R+C encoder, ALL classifier)"] = row
    timing["distillation"] = sum(secs) / max(1, len(secs))
    return results, timing, retrieval


# -- pictures ----------------------------------------------------------------------------
def tsne_plot(embeddings: dict, recs, class_names, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    idx = [i for i, r in enumerate(recs) if r.split == "test" and r.arch in TRAINING_ARCHITECTURES]
    markers = dict(zip(FAMILY_ARCH, "o^sDvP*Xh"))
    fig, axes = plt.subplots(1, len(embeddings), figsize=(6 * len(embeddings), 5.5))
    axes = [axes] if len(embeddings) == 1 else axes
    cmap = plt.get_cmap("tab20")
    for ax, (name, z) in zip(axes, embeddings.items()):
        zz = torch.nn.functional.normalize(z[idx], dim=-1).numpy()
        xy = TSNE(n_components=2, perplexity=min(30, max(2, len(idx) // 4)), init="pca", random_state=0).fit_transform(zz)
        for fam, m in markers.items():
            sel = [k for k, i in enumerate(idx) if recs[i].family == fam]
            ax.scatter(xy[sel, 0], xy[sel, 1], c=[cmap(recs[idx[k]].label % 20) for k in sel], marker=m, s=22,
                       edgecolors="k", linewidths=0.3, label=FAMILY_ARCH[fam])
        ax.set_title(name)
        ax.set_xticks([]); ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(k % 20), label=c) for k, c in enumerate(class_names)]
    handles += [plt.Line2D([], [], marker=m, ls="", color="gray", label=FAMILY_ARCH[f]) for f, m in markers.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=8)
    fig.suptitle("t-SNE of test embeddings: colour = class, marker = family")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def retrieval_plot(z, recs, path: Path, n_queries: int = 4, k: int = 5, size: int = 64) -> None:
    """Queries (left) and their k nearest neighbours among the other families' test INRs,
    each rendered from its own INR."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from gmn_inr.render import orbit_cameras, render_image
    from gmn_inr.tasks import cosine_similarity_matrix

    idx = [i for i, r in enumerate(recs) if r.split == "test" and r.arch in TRAINING_ARCHITECTURES]
    fams = list(FAMILY_ARCH)
    queries = []
    for q in idx:  # one query per family, distinct classes where possible
        if len(queries) == n_queries:
            break
        if recs[q].family == fams[len(queries) % len(fams)] and recs[q].label not in {recs[x].label for x in queries}:
            queries.append(q)
    c2w = orbit_cameras(1, elevation=25.0)[0]
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(1.8 * (k + 1), 1.9 * len(queries)), squeeze=False)
    for row, q in enumerate(queries):
        gal = [i for i in idx if recs[i].family != recs[q].family]
        sim = cosine_similarity_matrix(z[[q]], z[gal])[0]
        top = [gal[j] for j in sim.topk(min(k, len(gal))).indices.tolist()]
        for col, i in enumerate([q] + top):
            with torch.no_grad():
                img = render_image(recs[i].field(), c2w, size, size).clamp(0, 1).numpy()
            ax = axes[row, col]
            ax.imshow(img)
            ok = recs[i].object_id == recs[q].object_id
            ax.set_title(f"{'QUERY ' if col == 0 else ''}{recs[i].arch}\n{recs[i].class_name}", fontsize=7,
                         color="green" if (col and ok) else "black")
            ax.axis("off")
    fig.suptitle("Retrieval across architectures (green: the query's own object)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- report ------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu", choices=tuple(BENCH_PRESETS))
    ap.add_argument("--zoo", default=None, help="an existing zoo to reuse as it is (default: build or resume zoo_cache/PRESET)")
    ap.add_argument("--out", default="results", help="where the JSON, Markdown and pictures go")
    ap.add_argument("--runs", default=None, help="checkpoint directory (default runs/PRESET); reused and resumed")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's training steps per loss")
    ab = ap.add_mutually_exclusive_group()
    ab.add_argument("--ablations", dest="ablation", action="store_const", const=True, default=None,
                    help="also train L_R, L_C and the L_R+C ablations (no probe readout, the paper's weights-only "
                         "graph and encoder): five more encoders, about 17 more minutes at the cpu preset")
    ab.add_argument("--no-ablation", dest="ablation", action="store_const", const=False,
                    help="only L_R+C and its zero-block twin (the cpu preset's default)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: all cores; 1 when another job shares the machine)")
    add_arch_arguments(ap)
    args = ap.parse_args(argv)
    global TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES, FAMILY_ARCH
    TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES = arch_sets(args)
    FAMILY_ARCH = family_labels(TRAINING_ARCHITECTURES)
    t_start = time.perf_counter()
    bp = BENCH_PRESETS[args.preset]
    if args.steps:
        bp = replace(bp, steps=args.steps)
    if args.ablation is not None:
        bp = replace(bp, ablation=args.ablation)
    torch.manual_seed(0)
    from gmn_inr.train import TrainConfig, train, tune_malloc
    tune_malloc()
    torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(args.runs or f"runs/{args.preset}")

    stage = {}                    # seconds per stage: where the time goes
    t_stage = time.perf_counter()
    store = ensure_zoo(Path(args.zoo or f"zoo_cache/{args.preset}"), bp.zoo, reuse=args.zoo is not None,
                       functions=("radiance",))
    stage["zoo"] = time.perf_counter() - t_stage
    from gmn_inr.zoo.dataset import PairDataset
    recs = [r for r in store if r.function == "radiance"]
    if not recs:
        raise SystemExit("the zoo holds no radiance INRs")
    class_names = store.classes
    n_classes = len(class_names)
    pairs = PairDataset(store, split="train", archs=TRAINING_ARCHITECTURES, function="radiance")
    log(f"{len(recs)} radiance INRs, {n_classes} classes, {len(pairs)} training pairs")

    runs_to_do = {"L_R+C": ("R+C", dict(paper_graph=False, encoder={})),
                  NO_MESSAGE_PASSING: ("R+C", dict(paper_graph=False, encoder={"layers": 0}))}
    if bp.ablation:
        runs_to_do.update({name: (LOSSES[name], dict(paper_graph=False, encoder={})) for name in LOSS_ABLATIONS})
        runs_to_do.update({name: ("R+C", ab) for name, ab in ABLATIONS.items()})
    report = {"classification": {}, "retrieval": {}, "baselines": {}, "timing": {}, "training": {}}
    embeddings, encoders, classifiers_all = {}, {}, {}  # classifiers_all: the ALL classifier per encoder
    for name, (loss, variant) in runs_to_do.items():
        paper = variant["paper_graph"]
        cfg = TrainConfig.for_preset(bp.encoder, loss=loss, steps=bp.steps, seed=0, ckpt_every=max(10, bp.steps // 10),
                                     encoder=variant["encoder"], device=args.device)
        run_dir = runs / name.replace("+", "p").replace(", ", "_").replace(" ", "_")
        log(f"training encoder {name} ({bp.steps} steps, batch {cfg.batch_pairs} pairs) -> {run_dir}")
        train_pairs = [(PaperGraphRecord(a), PaperGraphRecord(b)) for a, b in pairs] if paper else pairs
        t_stage = time.perf_counter()
        res = train(cfg, train_pairs, out_dir=run_dir, resume=True)
        stage[f"training {name}"] = time.perf_counter() - t_stage
        t_stage = time.perf_counter()
        report["training"][name] = {"seconds": res.seconds, "steps": res.step,
                                    "final": res.history[-1] if res.history else None}
        eval_recs = [PaperGraphRecord(r) for r in recs] if paper else recs
        z, s_per_inr = embed_records(res.encoder, eval_recs, args.device)
        log(f"{name}: embedded {len(recs)} INRs at {s_per_inr * 1e3:.1f} ms/INR (graphs cached after the first run)")
        if name in ("L_R+C", NO_MESSAGE_PASSING):
            report["timing"]["gmn_direct" if name == "L_R+C" else name] = time_direct_embedding(
                res.encoder, eval_recs, args.device)
        report["classification"][name], classifiers = classification_table(z, recs, n_classes, bp)
        classifiers_all[name] = classifiers["ALL"]
        report["retrieval"][name] = retrieval_table(z, recs)
        if name in LOSSES:
            embeddings[name] = z
        encoders[name] = res.encoder
        stage[f"evaluation {name}"] = time.perf_counter() - t_stage
        log(f"{name}: classifier ALL -> " + ", ".join(f"{a} {_pct(v)}" for a, v in report["classification"][name].get("ALL", {}).items()))

    # the ALL classifier of L_R+C serves the distillation baseline
    t_stage = time.perf_counter()
    cls, ret, secs = sampled_outputs_baseline(recs, n_classes, bp)
    report["classification"][SAMPLED], report["retrieval"][SAMPLED] = cls, ret
    report["timing"][SAMPLED] = secs
    base, timing, base_retrieval = baselines(recs, n_classes, bp, encoders["L_R+C"], classifiers_all["L_R+C"],
                                             args.device)
    report["baselines"] = base
    report["timing"].update(timing)
    report["retrieval"].update(base_retrieval)
    # after the others: the classifiers' and models' inits draw from the global generator, so a row
    # added before them would move their numbers
    cls, ret, secs = surface_distance_baseline(recs, n_classes, bp)
    report["classification"][SURFACE], report["retrieval"][SURFACE] = cls, ret
    report["timing"][SURFACE] = secs
    report["classification"][EXACT], report["retrieval"][EXACT] = exact_geometry_ceiling(store, recs, n_classes, bp)
    stage["baselines"] = time.perf_counter() - t_stage
    report["headline"] = headline_table(report, TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES)
    report["meta"] = {"preset": args.preset, "commit": git_commit(), "device": args.device, **machine_meta(),
                      "zoo_inrs": files_digest(store.root / "inrs"),
                      "date": _dt.datetime.now().isoformat(timespec="seconds"), "zoo": str(store.root),
                      "n_inrs": len(recs), "n_classes": n_classes, "classes": class_names,
                      # the encoder and the classifiers saw train objects only; tests use these
                      "train_objects": sorted({r.object_id for r in recs if r.split == "train"}),
                      "test_objects": sorted({r.object_id for r in recs if r.split == "test"}),
                      "bench_preset": {k: (list(v) if isinstance(v, tuple) else v) for k, v in bp.__dict__.items()}}
    if not args.no_plots:
        log("plots: t-SNE and retrieval")
        t_stage = time.perf_counter()
        tsne_plot({n: embeddings[n] for n in LOSSES if n in embeddings}, recs, class_names, out / "tsne.png")
        retrieval_plot(embeddings["L_R+C"], recs, out / "retrieval.png")
        stage["plots"] = time.perf_counter() - t_stage
    report["meta"]["wall_seconds"] = time.perf_counter() - t_start
    report["meta"]["stage_seconds"] = {k: round(v, 1) for k, v in stage.items()}
    log("where the time went: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in stage.items()))
    report["goals"] = goals(report, TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES)
    md = markdown(report)
    tmp = out / "unseen_arch.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out / "unseen_arch.json")
    (out / "unseen_arch.md").write_text(md)
    print(md)
    log(f"wrote {out / 'unseen_arch.json'}, {out / 'unseen_arch.md'}" + ("" if args.no_plots else ", tsne.png, retrieval.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
