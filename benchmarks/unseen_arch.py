"""The headline benchmark: one encoder for every INR family, tested on architectures it never saw.

    python benchmarks/unseen_arch.py [--preset {tiny,cpu,paper}] [--zoo DIR] [--out DIR] [--device cpu]
        [--plugin FILE.py] [--archs MLP,TRI,HASH,OCT]

Builds (or reuses, resuming an interrupted build) the preset's INR zoo, trains the GMN encoder on
ALL training architectures (MLP+TRI+HASH+OCT radiance fields) three times — L_R, L_R+C, L_C —
resuming from its checkpoints, plus two L_R+C ablations (the main paper's graph and encoder; gmn_inr's
graph without probe features and output-neuron readout), then reports:

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
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from gmn_inr.bench import (BENCH_PRESETS, BenchPreset, add_arch_arguments, arch_sets, embed_records,  # noqa: F401
                           ensure_zoo, family_labels, git_commit, log)
from gmn_inr.fields import TRAINING_ARCHITECTURES, UNSEEN_ARCHITECTURES

LOSSES = {"L_R": "R", "L_R+C": "R+C", "L_C": "C"}
#: what the weights-only rows add to the paper's encoder so it does not collapse: subtract the
#: embedding of the architecture alone (GMNEncoder value_baseline; README "What this shows")
WEIGHTS_ONLY = {"probe_dim": 0, "output_readout": False, "value_baseline": True}
#: ablation runs (loss L_R+C): which graph (the main paper's or gmn_inr's) and encoder overrides.
#: The weights-only rows drop the probe features and the output-neuron readout (the paper's
#: encoder has neither); "as published" is the paper's encoder unchanged, which collapses.
ABLATIONS = {
    "L_R+C, no probe readout": dict(paper_graph=False, encoder={"probe_readout": False}),
    "L_R+C, paper graph": dict(paper_graph=True, encoder=WEIGHTS_ONLY),
    "L_R+C, paper graph as published": dict(paper_graph=True, encoder={"probe_dim": 0, "output_readout": False}),
}
#: the same encoder and training with zero message-passing blocks (probe features, pre-encoder and
#: readout only): what the blocks add over reading the probe rows is the difference to "L_R+C"
NO_MESSAGE_PASSING = "L_R+C, no message passing"
#: the no-learning baseline: each INR's outputs at the probe points, asinh, flattened, cosine
SAMPLED = "sampled outputs"
CONVERSION = "conversion (voxel grid + 3D CNN)"
FAMILY_ARCH = family_labels(TRAINING_ARCHITECTURES)   # main() resets these three from --archs / --plugin


# -- data ------------------------------------------------------------------------------------
class PaperGraphRecord:
    """A zoo record whose graph is the main paper's (graphs.transforms.paper_style)."""

    def __init__(self, rec):
        self._rec = rec
        self._graph = None

    def __getattr__(self, name):
        return getattr(self._rec, name)

    def graph(self):
        if self._graph is None:
            from graphs.transforms import paper_style
            self._graph = paper_style(self._rec.graph())
        return self._graph


@torch.no_grad()
def time_direct_embedding(encoder, recs, device: str, batch: int = 16) -> float:
    """Seconds per INR of embedding from scratch: file read, graph conversion and encoder, with no
    cached graph (records cache theirs, so embedding timings after the first run would miss it)."""
    from graphs import to_batch

    encoder = encoder.to(device).eval()
    recs = sorted(recs, key=lambda r: r.arch)     # batches of one architecture convert together (to_batch)
    t = time.perf_counter()
    for i in range(0, len(recs), batch):
        encoder(to_batch([r.field() for r in recs[i:i + batch]], device=device))
    return (time.perf_counter() - t) / max(1, len(recs))


# -- evaluation ----------------------------------------------------------------------------
def classification_table(z, recs, n_classes, bp: BenchPreset) -> tuple[dict, dict]:
    """``({classifier_train_set: {test_set: accuracy}}, {classifier_train_set: classifier})``;
    train sets ALL and each family."""
    from gmn_inr.tasks import ClassifierConfig, accuracy, train_classifier

    labels = torch.tensor([r.label for r in recs])
    arch = [r.arch for r in recs]
    split = [r.split for r in recs]
    train_sets = {"ALL": set(TRAINING_ARCHITECTURES), **{a: {a} for a in TRAINING_ARCHITECTURES}}
    test_archs = list(TRAINING_ARCHITECTURES) + [a for a in UNSEEN_ARCHITECTURES if a in set(arch)]
    out, models = {}, {}
    for name, archs in train_sets.items():
        idx = [i for i in range(len(recs)) if split[i] == "train" and arch[i] in archs]
        if len(idx) < 2:
            continue
        cfg = ClassifierConfig(epochs=bp.classifier_epochs, hidden=bp.classifier_hidden, batch_size=64)
        model = train_classifier(z[idx], labels[idx], n_classes, cfg)
        row = {}
        for a in test_archs:
            t = [i for i in range(len(recs)) if split[i] == "test" and arch[i] == a]
            if t:
                row[a] = accuracy(model, z[t], labels[t])
        out[name] = row
        models[name] = model
    return out, models


def retrieval_table(z, recs) -> dict:
    """Recall@1/5/10 of the same object in another architecture (test split, training archs)."""
    from gmn_inr.tasks import recall_at_k

    idx = [i for i, r in enumerate(recs) if r.split == "test" and r.arch in TRAINING_ARCHITECTURES]
    obj = {o: k for k, o in enumerate(sorted({recs[i].object_id for i in idx}))}
    ids = torch.tensor([obj[recs[i].object_id] for i in idx])
    archs = [recs[i].arch for i in idx]
    zz = z[idx]
    out = {}
    n = len(idx)
    if n > 1:
        out["ALL/ALL"] = recall_at_k(zz, ids, zz, ids, exclude_self=torch.eye(n, dtype=torch.bool))
    for qa in TRAINING_ARCHITECTURES:
        for ga in TRAINING_ARCHITECTURES:
            if qa == ga:
                continue
            q = [k for k in range(n) if archs[k] == qa]
            g = [k for k in range(n) if archs[k] == ga]
            if q and g:
                out[f"{qa}/{ga}"] = recall_at_k(zz[q], ids[q], zz[g], ids[g])
    return out


# -- baselines ---------------------------------------------------------------------------
def sampled_outputs_baseline(recs, n_classes, bp: BenchPreset) -> tuple[dict, dict, float]:
    """The no-learning baseline: every INR's outputs at the probe points (``asinh``, flattened),
    through the same classifiers and the same cosine retrieval as the encoders' embeddings.
    Returns ``(classification table, retrieval table, seconds per INR)`` (file read included)."""
    from gmn_inr.baselines import sampled_output_features

    log("baseline: sampled outputs at the probe points (no learning)")
    t0 = time.perf_counter()
    z = torch.stack([sampled_output_features(r.field()) for r in recs])
    secs = (time.perf_counter() - t0) / max(1, len(recs))
    cls, _ = classification_table(z, recs, n_classes, bp)
    return cls, retrieval_table(z, recs), secs


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
    feats = torch.zeros(len(recs), cnn.features(x_train[:1]).shape[1])
    have = sorted(grids)
    feats[have] = cnn.features(torch.stack([grids[i] for i in have]))
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
def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def markdown(report: dict) -> str:
    lines = [f"# unseen_arch — preset `{report['meta']['preset']}`", "",
             f"{report['meta']['date']}, commit `{report['meta']['commit']}`, device {report['meta']['device']}, "
             f"wall {report['meta']['wall_seconds'] / 60:.1f} min. Accuracies and recalls in %.", ""]
    secs = {"L_R+C": report["timing"].get("gmn_direct"), CONVERSION: report["timing"].get("conversion")}
    lines += ["## Headline: every method on the three numbers (test objects)", "",
              "| method | recall@1 ALL/ALL | worst unseen variant (classifier on ALL) | "
              "worst other family (classifier on one family) | s/INR |", "|---|---|---|---|---|"]
    for name, h in report.get("headline", {}).items():
        t = secs.get(name, report["timing"].get(name))
        lines.append(f"| {name} | {_pct(h['recall@1'])} | {_pct(h['worst_unseen'])} | {_pct(h['worst_family'])} | "
                     + ("—" if t is None else f"{t:.4f}") + " |")
    lines.append("")
    for loss, table in report["classification"].items():
        tests = list(next(iter(table.values())).keys()) if table else []
        lines += [f"## Classification — encoder {loss}", "",
                  "| classifier trained on | " + " | ".join(tests) + " |", "|---" * (len(tests) + 1) + "|"]
        lines += [f"| {tr} | " + " | ".join(_pct(row.get(t)) for t in tests) + " |" for tr, row in table.items()]
        lines.append("")
    lines += ["## Instance retrieval (recall@k of the same object, test split)", ""]
    pairs = list(next(iter(report["retrieval"].values())).keys()) if report["retrieval"] else []
    lines += ["| encoder | k | " + " | ".join(pairs) + " |", "|---" * (len(pairs) + 2) + "|"]
    for loss, table in report["retrieval"].items():
        for k in ("1", "5", "10"):
            lines.append(f"| {loss} | {k} | " + " | ".join(_pct(table[p][k]) for p in pairs) + " |")
    lines.append("")
    lines += ["## Baselines (same split)", ""]
    lines += ["Classification and retrieval rows of the sampled outputs, of the encoder without message "
              "passing and of the conversion baseline's features are in the tables above.", ""]
    for name, row in report["baselines"].items():
        lines += [f"**{name}**: " + ", ".join(f"{a} {_pct(v)}" for a, v in row.items()), ""]
    lines += ["## Seconds per INR", "", "| method | s/INR |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in report["timing"].items()]
    lines += ["", "## Goals", ""] + [f"- {g}" for g in report["goals"]]
    return "\n".join(lines) + "\n"


#: the encoder whose numbers the goals are about, and the rows it must beat
MAIN = "L_R+C"
PAPER_GRAPH = "L_R+C, paper graph"


def headline_numbers(report: dict, name: str) -> dict:
    """The three numbers of ``name``'s rows (None where the method has no such row):
    ``recall@1`` ALL/ALL, ``worst_unseen`` (classifier on ALL, worst unseen variant) and
    ``worst_family`` (a classifier on one family, worst other training family)."""
    cls = report["classification"].get(name)
    if cls is None and name == CONVERSION:     # its classifier is trained on ALL only
        row = next((r for k, r in report["baselines"].items() if k.startswith("conversion")), None)
        cls = {"ALL": row} if row else {}
    cls = cls or {}
    unseen = [v for a, v in cls.get("ALL", {}).items() if a in UNSEEN_ARCHITECTURES and v is not None]
    fam = [v for tr, row in cls.items() if tr != "ALL" for te, v in row.items()
           if te in TRAINING_ARCHITECTURES and te != tr and v is not None]
    r1 = report["retrieval"].get(name, {}).get("ALL/ALL", {}).get("1")
    return {"recall@1": r1, "worst_unseen": min(unseen) if unseen else None,
            "worst_family": min(fam) if fam else None}


def headline_table(report: dict) -> dict:
    """``{method: headline_numbers}`` for every encoder and every baseline with retrieval rows."""
    names = list(report["classification"]) + [n for n in report["retrieval"] if n not in report["classification"]]
    return {n: headline_numbers(report, n) for n in names}


def goals(report: dict) -> list[str]:
    out = []
    # issue 9: the encoder must beat every simpler method by 5 points on each headline number
    head = report.get("headline") or headline_table(report)
    ours = head.get(MAIN)
    if ours:
        for base in (SAMPLED, NO_MESSAGE_PASSING, CONVERSION):
            theirs = head.get(base)
            if not theirs:
                continue
            cmp = [(k, ours[k], theirs[k]) for k in ours if ours[k] is not None and theirs[k] is not None]
            ok = all(a >= b + 0.05 for _, a, b in cmp)
            out.append(f"{MAIN} beats {base} by >= 5 points on every headline number: "
                       + ", ".join(f"{k} {_pct(a)} vs {_pct(b)}" for k, a, b in cmp)
                       + f" -> {'met' if ok else 'missed'}")
        targets = {"recall@1": 0.95, "worst_unseen": 0.95, "worst_family": 0.90}
        for k, t in targets.items():
            if ours[k] is not None:
                out.append(f"{MAIN} {k} >= {100 * t:.0f}%: {_pct(ours[k])}% -> {'met' if ours[k] >= t else 'missed'}")
    paper = report["retrieval"].get(PAPER_GRAPH, {}).get("ALL/ALL", {}).get("1")
    paper_all = report["classification"].get(PAPER_GRAPH, {}).get("ALL", {})
    if paper is not None and paper_all:
        fams = {a: paper_all[a] for a in TRAINING_ARCHITECTURES if a in paper_all}
        ok = paper >= 0.10 and all(v >= 0.5 for v in fams.values())
        out.append(f"the paper's graph and encoder (weights only) learn: recall@1 ALL/ALL {_pct(paper)}% (>= 10%), "
                   "ALL classifier " + ", ".join(f"{a} {_pct(v)}" for a, v in fams.items())
                   + f" (each >= 50%) -> {'met' if ok else 'missed'}")
    cls = report["classification"].get("L_R+C", {})
    allrow = cls.get("ALL", {})
    unseen = {a: v for a, v in allrow.items() if a in UNSEEN_ARCHITECTURES}
    if unseen:
        worst = min(unseen, key=unseen.get)
        out.append(f"ALL classifier >= 85% on every unseen variant (L_R+C): worst {worst} {_pct(unseen[worst])}% -> "
                   f"{'met' if unseen[worst] >= 0.85 else 'missed'}")
    fam = [(tr, te, v) for tr, row in cls.items() if tr != "ALL" for te, v in row.items()
           if te in TRAINING_ARCHITECTURES and te != tr]
    if fam:
        tr, te, v = min(fam, key=lambda x: x[2])
        out.append(f"one-family classifier >= 70% on the other families (L_R+C): worst {tr}->{te} {_pct(v)}% -> "
                   f"{'met' if v >= 0.7 else 'missed'}")
    r_rc = report["retrieval"].get("L_R+C", {}).get("ALL/ALL", {}).get("1")
    r_r = report["retrieval"].get("L_R", {}).get("ALL/ALL", {}).get("1")
    if r_rc is not None and r_r is not None:
        ok = r_rc >= 0.5 and r_rc >= 10 * max(r_r, 1e-9)
        out.append(f"recall@1 ALL/ALL >= 50% and >= 10x L_R's: {_pct(r_rc)}% vs L_R {_pct(r_r)}% -> {'met' if ok else 'missed'}")
    t = report["timing"]
    if "gmn_direct" in t and "distillation" in t:
        ratio = t["distillation"] / t["gmn_direct"]
        out.append(f"direct embedding >= 100x faster than distillation: {ratio:.0f}x -> {'met' if ratio >= 100 else 'missed'}")
    conv = next((row for name, row in report["baselines"].items() if name.startswith("conversion")), None)
    if "gmn_direct" in t and "conversion" in t and conv and allrow:
        common = [a for a in allrow if conv.get(a) is not None]
        ours, theirs = (sum(r[a] for a in common) / len(common) for r in (allrow, conv))
        ok = t["gmn_direct"] < t["conversion"] and ours >= theirs
        out.append(f"direct embedding faster than conversion at equal or better accuracy: {t['gmn_direct']:.4f} vs "
                   f"{t['conversion']:.4f} s/INR, mean accuracy {_pct(ours)}% vs {_pct(theirs)}% -> {'met' if ok else 'missed'}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu", choices=tuple(BENCH_PRESETS))
    ap.add_argument("--zoo", default=None, help="an existing zoo to reuse as it is (default: build or resume zoo_cache/PRESET)")
    ap.add_argument("--out", default="results", help="where the JSON, Markdown and pictures go")
    ap.add_argument("--runs", default=None, help="checkpoint directory (default runs/PRESET); reused and resumed")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's training steps per loss")
    ap.add_argument("--no-ablation", action="store_true", help="skip the ablation runs (paper graph, no probes)")
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
    if args.no_ablation:
        bp = replace(bp, ablation=False)
    torch.manual_seed(0)
    from gmn_inr.train import TrainConfig, train, tune_malloc
    tune_malloc()
    torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(args.runs or f"runs/{args.preset}")

    store = ensure_zoo(Path(args.zoo or f"zoo_cache/{args.preset}"), bp.zoo, reuse=args.zoo is not None)
    from gmn_inr.zoo.dataset import PairDataset
    recs = [r for r in store if r.function == "radiance"]
    if not recs:
        raise SystemExit("the zoo holds no radiance INRs")
    class_names = store.classes
    n_classes = len(class_names)
    pairs = PairDataset(store, split="train", archs=TRAINING_ARCHITECTURES, function="radiance")
    log(f"{len(recs)} radiance INRs, {n_classes} classes, {len(pairs)} training pairs")

    runs_to_do = {name: (loss, dict(paper_graph=False, encoder={})) for name, loss in LOSSES.items()}
    runs_to_do[NO_MESSAGE_PASSING] = ("R+C", dict(paper_graph=False, encoder={"layers": 0}))
    if bp.ablation:
        runs_to_do.update({name: ("R+C", ab) for name, ab in ABLATIONS.items()})
    report = {"classification": {}, "retrieval": {}, "baselines": {}, "timing": {}, "training": {}}
    embeddings, encoders, classifiers_all = {}, {}, {}  # classifiers_all: the ALL classifier per encoder
    for name, (loss, variant) in runs_to_do.items():
        paper = variant["paper_graph"]
        cfg = TrainConfig.for_preset(bp.encoder, loss=loss, steps=bp.steps, seed=0, ckpt_every=max(10, bp.steps // 10),
                                     encoder=variant["encoder"])
        run_dir = runs / name.replace("+", "p").replace(", ", "_").replace(" ", "_")
        log(f"training encoder {name} ({bp.steps} steps, batch {cfg.batch_pairs} pairs) -> {run_dir}")
        train_pairs = [(PaperGraphRecord(a), PaperGraphRecord(b)) for a, b in pairs] if paper else pairs
        res = train(cfg, train_pairs, out_dir=run_dir, resume=True)
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
        log(f"{name}: classifier ALL -> " + ", ".join(f"{a} {_pct(v)}" for a, v in report["classification"][name].get("ALL", {}).items()))

    # the ALL classifier of L_R+C serves the distillation baseline
    cls, ret, secs = sampled_outputs_baseline(recs, n_classes, bp)
    report["classification"][SAMPLED], report["retrieval"][SAMPLED] = cls, ret
    report["timing"][SAMPLED] = secs
    base, timing, base_retrieval = baselines(recs, n_classes, bp, encoders["L_R+C"], classifiers_all["L_R+C"],
                                             args.device)
    report["baselines"] = base
    report["timing"].update(timing)
    report["retrieval"].update(base_retrieval)
    report["headline"] = headline_table(report)
    report["meta"] = {"preset": args.preset, "commit": git_commit(), "device": args.device,
                      "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "date": _dt.datetime.now().isoformat(timespec="seconds"), "zoo": str(store.root),
                      "n_inrs": len(recs), "n_classes": n_classes, "classes": class_names,
                      # the encoder and the classifiers saw train objects only; tests use these
                      "train_objects": sorted({r.object_id for r in recs if r.split == "train"}),
                      "test_objects": sorted({r.object_id for r in recs if r.split == "test"}),
                      "bench_preset": {k: (list(v) if isinstance(v, tuple) else v) for k, v in bp.__dict__.items()}}
    if not args.no_plots:
        log("plots: t-SNE and retrieval")
        tsne_plot(embeddings, recs, class_names, out / "tsne.png")
        retrieval_plot(embeddings["L_R+C"], recs, out / "retrieval.png")
    report["meta"]["wall_seconds"] = time.perf_counter() - t_start
    report["goals"] = goals(report)
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
