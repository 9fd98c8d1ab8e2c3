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

import torch

from gmn_inr.cpu import set_up_cpu, tune_malloc  # noqa: F401  (the benchmarks' CPU set-up)


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
