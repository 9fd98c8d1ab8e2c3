"""What the benchmark scripts share (``benchmarks/*.py`` import it; nothing reaches a script
through ``sys.path``): presets, the zoo they run on, embedding records, logging, the
architecture sets and plug-in families they take from the command line.

``add_arch_arguments(ap)`` gives a script ``--plugin FILE.py|MODULE`` (repeatable: files that
register families) and ``--archs A,B,..`` (training architectures; every other architecture the
zoo holds is reported as unseen); :func:`arch_sets` turns them into ``(training, unseen)``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from gmn_inr.cpu import set_up_cpu, tune_malloc  # noqa: F401  (the benchmarks' CPU set-up)
from gmn_inr.zoo.dataset import RecordView


@dataclass(frozen=True)
class BenchPreset:
    zoo: str                 #: zoo preset
    encoder: str             #: encoder/decoder preset of gmn_inr.train
    steps: int               #: training steps per loss (batch and lr: TrainConfig.for_preset)
    classifier_epochs: int
    classifier_hidden: tuple
    conversion_res: int      #: voxel grid of the conversion baseline
    baseline_epochs: int
    distill_per_arch: int    #: unseen INRs distilled per variant
    distill_steps: int
    #: also train the loss ablation (L_R, L_C) and the L_R+C ablations (unseen_arch --ablations)
    ablation: bool = True


BENCH_PRESETS = {
    "tiny": BenchPreset(zoo="tiny", encoder="tiny", steps=30, classifier_epochs=30,
                        classifier_hidden=(64, 32, 16), conversion_res=8, baseline_epochs=10, distill_per_arch=2,
                        distill_steps=30, ablation=True),
    "cpu": BenchPreset(zoo="cpu", encoder="cpu", steps=400, classifier_epochs=150,
                       classifier_hidden=(1024, 512, 256), conversion_res=16, baseline_epochs=40,
                       distill_per_arch=4, distill_steps=300, ablation=False),
    "paper": BenchPreset(zoo="paper", encoder="paper", steps=20000, classifier_epochs=150,
                         classifier_hidden=(1024, 512, 256), conversion_res=32, baseline_epochs=100,
                         distill_per_arch=50, distill_steps=2000),
    # the whole pipeline in seconds, on a zoo built beforehand (tests of plug-in families)
    "smoke": BenchPreset(zoo="tiny", encoder="tiny", steps=2, classifier_epochs=2, classifier_hidden=(16,),
                         conversion_res=4, baseline_epochs=1, distill_per_arch=1, distill_steps=2, ablation=False),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_zoo(zoo_dir: Path, preset: str, reuse: bool = False, functions=None):
    """Open the zoo at ``zoo_dir``, building it first (or finishing an interrupted build).
    ``reuse``: a directory that already holds a zoo is taken as it is, whatever its preset.
    ``functions``: build only the INRs of those of these implicit functions the preset has (a
    benchmark fits what it reads; another benchmark's call fills in the rest of the same zoo)."""
    from gmn_inr.zoo import open_store
    from gmn_inr.zoo.store import MANIFEST

    if reuse and (zoo_dir / MANIFEST).exists():
        log(f"zoo {zoo_dir}: reusing as it is")
        return open_store(zoo_dir)
    from gmn_inr.zoo.build import build_zoo

    # one single-threaded fitting process per core: batched fits use one core well (4 INR/s
    # here with 2 workers against about 1 with one process)
    workers = max(1, min(os.cpu_count() or 1, 8))
    log(f"zoo {zoo_dir} (preset {preset}): building or resuming with {workers} worker processes")
    if functions is not None:
        from gmn_inr.zoo.build import preset_config

        functions = [f for f in functions if f in preset_config(preset).archs]
    build_zoo(zoo_dir, preset=preset, workers=workers, functions=functions)
    return open_store(zoo_dir)


@torch.no_grad()
def embed_records(encoder, records, device: str, batch: int = 16) -> tuple[torch.Tensor, float]:
    """Embeddings ``[N, D]`` of ``records`` and the seconds per INR (graph conversion included)."""
    from graphs import batch_graphs

    encoder = encoder.to(device).eval()
    out = []
    t = time.perf_counter()
    for i in range(0, len(records), batch):
        chunk = records[i:i + batch]
        out.append(encoder(batch_graphs([r.graph() for r in chunk], device=device)).cpu())
    return torch.cat(out), (time.perf_counter() - t) / max(1, len(records))


#: what the weights-only rows add to the paper's encoder so it does not collapse: subtract the
#: embedding of the architecture alone (GMNEncoder value_baseline; README "What this shows")
WEIGHTS_ONLY = {"probe_dim": 0, "output_readout": False, "value_baseline": True}


class PaperGraphRecord(RecordView):
    """A zoo record whose graph is the main paper's (graphs.transforms.paper_style)."""

    def transform_graph(self, graph):
        from graphs.transforms import paper_style

        return paper_style(graph)


@torch.no_grad()
def time_direct_embedding(encoder, recs, device: str, batch: int = 16, sample: Optional[int] = None) -> float:
    """Seconds per INR of embedding from scratch: file read, graph conversion and encoder, with no
    cached graph (records cache theirs, so embedding timings after the first run would miss it).
    ``sample``: time about that many records (every k-th, in architecture order) instead of all."""
    from graphs import to_batch

    encoder = encoder.to(device).eval()
    recs = sorted(recs, key=lambda r: (r.arch, r.object_id))     # one architecture's batches convert together
    if sample is not None and len(recs) > sample:
        recs = recs[::-(-len(recs) // sample)]
    t = time.perf_counter()
    for i in range(0, len(recs), batch):
        encoder(to_batch([r.field() for r in recs[i:i + batch]], device=device))
    return (time.perf_counter() - t) / max(1, len(recs))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


# -- architectures -----------------------------------------------------------------------
def add_arch_arguments(ap: argparse.ArgumentParser, archs_help: str = "comma-separated training architectures "
                       "(default: the built-in MLP,TRI,HASH,OCT); every other one in the zoo is unseen") -> None:
    ap.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                    help="import a file or module that registers architecture families (repeatable)")
    ap.add_argument("--archs", default=None, help=archs_help)


def arch_sets(args: argparse.Namespace) -> tuple[tuple, tuple]:
    """``(training, unseen)`` architecture names after loading ``args.plugin``: ``args.archs`` (or
    the built-in training architectures), and every other registered architecture."""
    from gmn_inr.fields import TRAINING_ARCHITECTURES, architectures, load_plugins
    from gmn_inr.fields.spec import arch_spec

    load_plugins(args.plugin)
    training = tuple(args.archs.split(",")) if args.archs else TRAINING_ARCHITECTURES
    for a in training:
        arch_spec(a)                                  # an unknown name fails here, naming the known ones
    return training, tuple(a for a in architectures() if a not in training)


def family_labels(training: tuple) -> dict:
    """``{family: its first training architecture in training}`` (legends, per-family rows)."""
    from gmn_inr.fields.registry import family_of_arch

    out: dict = {}
    for a in training:
        out.setdefault(family_of_arch(a).name, a)
    return out


# -- evaluation shared by the headline benchmarks (unseen_arch.py, real_shapes.py) --------------
def classification_table(z, recs, n_classes, bp: BenchPreset, training, unseen,
                         classifier=None) -> tuple[dict, dict]:
    """``({classifier_train_set: {test_set: accuracy}}, {classifier_train_set: classifier})``: the
    paper's classifier trained on the train objects' embeddings of ALL ``training`` architectures
    and of each one, tested on the test objects of every training architecture and unseen variant.
    ``classifier``: one already trained, tested in place of every train set's (none is trained)."""
    from gmn_inr.tasks import ClassifierConfig, accuracy, train_classifier

    labels = torch.tensor([r.label for r in recs])
    arch = [r.arch for r in recs]
    split = [r.split for r in recs]
    train_sets = {"ALL": set(training), **{a: {a} for a in training}}
    test_archs = list(training) + [a for a in unseen if a in set(arch)]
    out, models = {}, {}
    for name, archs in train_sets.items():
        idx = [i for i in range(len(recs)) if split[i] == "train" and arch[i] in archs]
        if len(idx) < 2:
            continue
        cfg = ClassifierConfig(epochs=bp.classifier_epochs, hidden=bp.classifier_hidden, batch_size=64)
        model = classifier if classifier is not None else train_classifier(z[idx], labels[idx], n_classes, cfg)
        row = {}
        for a in test_archs:
            t = [i for i in range(len(recs)) if split[i] == "test" and arch[i] == a]
            if t:
                row[a] = accuracy(model, z[t], labels[t])
        out[name] = row
        models[name] = model
    return out, models


def retrieval_table(z, recs, training) -> dict:
    """Recall@1/5/10 of the same object in another architecture (test split, ``training`` archs)."""
    from gmn_inr.tasks import recall_at_k

    idx = [i for i, r in enumerate(recs) if r.split == "test" and r.arch in training]
    obj = {o: k for k, o in enumerate(sorted({recs[i].object_id for i in idx}))}
    ids = torch.tensor([obj[recs[i].object_id] for i in idx])
    archs = [recs[i].arch for i in idx]
    zz = z[idx]
    out = {}
    n = len(idx)
    if n > 1:
        out["ALL/ALL"] = recall_at_k(zz, ids, zz, ids, exclude_self=torch.eye(n, dtype=torch.bool))
    for qa in training:
        for ga in training:
            if qa == ga:
                continue
            q = [k for k in range(n) if archs[k] == qa]
            g = [k for k in range(n) if archs[k] == ga]
            if q and g:
                out[f"{qa}/{ga}"] = recall_at_k(zz[q], ids[q], zz[g], ids[g])
    return out


def no_learning_rows(recs, n_classes, bp: BenchPreset, features, what: str, training, unseen) -> tuple[dict, dict, float]:
    """A no-learning baseline: ``features(field)`` of every INR, through the same classifiers and
    the same cosine retrieval as the encoders' embeddings. Returns ``(classification table,
    retrieval table, seconds per INR)`` (file read included)."""
    log(f"baseline: {what} (no learning)")
    t0 = time.perf_counter()
    with torch.no_grad():
        z = torch.stack([features(r.field()) for r in recs])
    secs = (time.perf_counter() - t0) / max(1, len(recs))
    cls, _ = classification_table(z, recs, n_classes, bp, training, unseen)
    return cls, retrieval_table(z, recs, training), secs


def exact_geometry_rows(store, recs, n_classes, bp: BenchPreset, training, unseen, points=None) -> tuple[dict, dict]:
    """Not a method but the ceiling of every one: each INR replaced by its object's *exact* signed
    distance at ``points`` (default the probe points; from the zoo's shape, truncated to the
    surface-distance row's band), through the same classifiers and retrieval. Every architecture of
    an object gets the same vector, so what this row misses is what the classes leave ambiguous to
    this classifier, trained on this many objects; no encoder can be expected above it."""
    from graphs.probe import probe_points
    from gmn_inr.canonical import TRUNCATION
    from gmn_inr.zoo.build import manifest_shape

    points = probe_points() if points is None else points
    log(f"ceiling: each object's exact signed distance at {len(points)} points (no INR)")
    exact = {o: manifest_shape(o, store.objects[o]).sdf(points).reshape(-1).clamp(-TRUNCATION, TRUNCATION)
             for o in sorted({r.object_id for r in recs})}
    z = torch.stack([exact[r.object_id] for r in recs])
    cls, _ = classification_table(z, recs, n_classes, bp, training, unseen)
    return cls, retrieval_table(z, recs, training)
