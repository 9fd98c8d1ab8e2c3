"""Build (or resume) an INR zoo: objects -> splits -> batched fits -> gated, stored INRs.

:func:`build_zoo` is what ``gmn-inr zoo build`` runs. Work is done in chunks of objects;
for each chunk the per-object supervision is sampled once, then for every
(function, architecture) the chunk's pending INRs are fitted together
(:func:`gmn_inr.zoo.fit.fit_inrs`), gated, written one file each and journalled at once, and
the manifest is flushed. Each INR is seeded by its own key, so the zoo is a function of its
config: killing the build at any moment (any number of workers) and rerunning the same command
gives the bytes an uninterrupted build writes; finished INRs are neither refitted nor lost.
"""
from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from gmn_inr.fields import registry

from .fit import FitConfig
from .summary import summarise

IMPLICIT = ("sdf", "udf", "occupancy")
#: the built-in unseen variants the tiny zoo fits (a plug-in family's variants are all fitted)
TINY_UNSEEN = ("MLP-2L", "HASH-11T")
#: object ``k`` of a zoo with seed ``s`` has seed ``s * OBJECT_SEED_STRIDE + k`` (a prime stride:
#: zoos of different seeds share no object below 100003 objects per class)
OBJECT_SEED_STRIDE = 100003
#: an object's supervision is sampled with seed ``seed * SAMPLE_SEED_FACTOR + crc(object) % 100000``
SAMPLE_SEED_FACTOR = 7
#: a (function, architecture)'s fits start from seed ``seed * FIT_SEED_FACTOR + crc(arch + function) % 1000``
FIT_SEED_FACTOR = 1000
#: objects fitted together on a GPU (the config's ``batch`` is the CPU's): B = 256 fitted 1.2-1.4x
#: the INR-steps/s of B = 64 on one GPU, every family (docs/gpu.md)
DEVICE_BATCH = 256


def fit_batch_size(cfg: "ZooConfig", device=None) -> int:
    """Objects per chunk on ``device``: the config's ``batch`` on the CPU (the CPU build's chunks are
    what they always were), at least :data:`DEVICE_BATCH` elsewhere. The INRs do not depend on it."""
    dev = torch_device(device)
    return cfg.batch if dev.type == "cpu" else max(cfg.batch, DEVICE_BATCH)


def torch_device(device=None):
    """``device`` (None, a name or a ``torch.device``) as a ``torch.device``; a clear error for a
    name torch does not know or a CUDA device that is not there."""
    import torch

    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu or cuda[:i]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def training_archs() -> tuple:
    """Every registered family's training architectures (plug-ins included)."""
    return registry.architectures(training=True)


@dataclass(frozen=True)
class ZooConfig:
    """What a zoo holds and how its INRs are fitted.

    ``archs[function]``: the architecture names fitted for each function; ``arch_preset``
    scales them (``gmn_inr.fields.arch_spec_for``); ``per_class`` procedural objects of each
    of ``classes``; ``batch``: objects fitted together; ``splits``: train/val/test fractions.
    """

    name: str
    classes: tuple
    per_class: int
    archs: dict
    arch_preset: str
    fit: FitConfig
    batch: int = 32
    seed: int = 0
    splits: tuple = (0.7, 0.15, 0.15)
    #: splits whose objects get the unseen variants (they are evaluated on test objects only)
    unseen_splits: tuple = ("train", "val", "test")
    #: "per-inr": each INR starts from its own seed; "shared": every INR of one architecture starts
    #: from one initialisation (seeded by zoo seed + architecture only), the inr2vec / nf2vec convention
    init: str = "per-inr"

    def to_json_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["init"] == "per-inr":       # the default: configs (and manifests) written before it stay equal
            del d["init"]
        d["archs"] = {k: list(v) for k, v in self.archs.items()}
        d["classes"] = list(self.classes)
        d["splits"] = list(self.splits)
        d["unseen_splits"] = list(self.unseen_splits)
        return d


def preset_config(preset: str, **overrides) -> ZooConfig:
    """The ``tiny`` / ``cpu`` / ``paper`` zoo (see the module docs of :mod:`gmn_inr.zoo`);
    keyword ``overrides`` replace fields (``fit`` may be a dict of FitConfig fields)."""
    from .shapes import CLASSES

    # the registry's architectures: a registered plug-in family is fitted too
    TRAINING, ALL_ARCHS = training_archs(), registry.architectures()
    if preset == "tiny":
        unseen = TINY_UNSEEN + registry.architectures(builtin=False, training=False)
        cfg = ZooConfig("tiny", ("chair", "table", "mug"), 3,
                        {"radiance": TRAINING + unseen, "sdf": TRAINING}, "tiny",
                        FitConfig(steps=120, points=256, pool=4096, surface=1024, gate_res=24, min_iou=0.3,
                                  max_sdf_err=0.013, min_psnr=14.0, min_view_psnr=12.0, gate_view=24),
                        batch=16)
    elif preset == "cpu":
        # 10 objects per class, 6 train / 4 test (no val: the benchmarks do not tune on one);
        # unseen variants only where they are evaluated (test objects); sdf/udf/occupancy INRs of
        # every training family (the implicit-function benchmark compares them within and across
        # families; zoos built when these were HASH only are widened in place, see ZooWriter)
        cfg = ZooConfig("cpu", CLASSES, 10, {"radiance": ALL_ARCHS, **{f: TRAINING for f in IMPLICIT}}, "cpu",
                        FitConfig(steps=160, points=768, pool=32768, surface=1024, gate_res=32, gate_view=24,
                                  gate_view_samples=32, min_view_psnr=17.0, max_sdf_err=0.008), batch=24,
                        splits=(0.6, 0.0, 0.4), unseen_splits=("test",))
    elif preset == "paper":
        cfg = ZooConfig("paper", CLASSES, 100, {"radiance": ALL_ARCHS, **{f: ALL_ARCHS for f in IMPLICIT}}, "paper",
                        FitConfig(steps=1500, points=4096, pool=250_000, surface=8192, gate_res=64, min_iou=0.6,
                                  max_sdf_err=0.005, min_psnr=20.0), batch=64)
    else:
        raise ValueError(f"unknown zoo preset {preset!r}; known: tiny, cpu, paper")
    fit = overrides.pop("fit", None)
    if isinstance(fit, dict):
        fit = dataclasses.replace(cfg.fit, **fit)
    if fit is not None:
        overrides["fit"] = fit
    if "archs" in overrides:
        overrides["archs"] = {k: tuple(v) for k, v in overrides["archs"].items()}
    return dataclasses.replace(cfg, **overrides)


def assign_splits(object_ids_by_class: dict[str, list[str]], fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict:
    """Split objects (never INRs) per class: ``{object_id: split}``. With 3 or more objects in
    a class, val and test get at least one each."""
    out = {}
    for ci, (cls, ids) in enumerate(sorted(object_ids_by_class.items())):
        ids = sorted(ids)
        perm = np.random.default_rng([seed, ci]).permutation(len(ids))
        n = len(ids)
        n_test = int(round(fractions[2] * n))
        n_val = int(round(fractions[1] * n))
        if n >= 3:  # a split asked for gets at least one object of every class
            n_test = max(1, n_test) if fractions[2] > 0 else 0
            n_val = max(1, n_val) if fractions[1] > 0 else 0
        for rank, j in enumerate(perm):
            out[ids[j]] = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
    return out


# ---------------------------------------------------------------------------------------
# objects
# ---------------------------------------------------------------------------------------
def object_descriptions(cfg: ZooConfig, meshes: Optional[str] = None) -> tuple[list[str], dict[str, dict]]:
    """``(classes, {object_id: desc})`` where ``desc`` says how to rebuild the shape in any
    process: ``{"kind": "procedural", "class_name", "seed"}`` or ``{"kind": "mesh", "path"}``."""
    objs: dict[str, dict] = {}
    classes: list[str] = []
    if meshes:
        root = Path(meshes)
        from .shapes import MESH_SUFFIXES

        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES) \
            if root.is_dir() else []
        if not files:
            raise FileNotFoundError(f"no meshes ({', '.join(MESH_SUFFIXES)}) under {root}")
        for f in files:
            c = f.parent.name if f.parent != root else "mesh"
            if c not in classes:
                classes.append(c)
            oid = f"mesh-{c}-{f.stem}"
            objs[oid] = {"kind": "mesh", "path": str(f.resolve()), "class_name": c}
        classes.sort()
    else:
        classes = list(cfg.classes)
        for c in classes:
            for k in range(cfg.per_class):
                s = cfg.seed * OBJECT_SEED_STRIDE + k
                objs[f"{c}-{s:05d}"] = {"kind": "procedural", "class_name": c, "seed": s}
    for d in objs.values():
        d["label"] = classes.index(d["class_name"])
    return classes, objs


def shape_of(object_id: str, desc: dict):
    from .shapes import MeshShape, make_shape

    if desc["kind"] == "procedural":
        return make_shape(desc["class_name"], desc["seed"], object_id=object_id, label=desc["label"])
    return MeshShape(desc["path"], class_name=desc["class_name"], label=desc["label"], object_id=object_id)


def manifest_shape(object_id: str, meta: dict):
    """The shape of a zoo manifest's object entry (``store.objects[object_id]``): its procedural
    recipe and seed, or its mesh file."""
    procedural = meta.get("source", "procedural") == "procedural"
    desc = {"kind": "procedural" if procedural else "mesh", "class_name": meta["class_name"],
            "label": meta["label"], "path": meta.get("source"),
            "seed": (meta["seed"] if meta.get("seed") is not None else int(object_id.rsplit("-", 1)[1]))
            if procedural else None}
    return shape_of(object_id, desc)


# ---------------------------------------------------------------------------------------
# one chunk of work (runs in the main process or in a worker)
# ---------------------------------------------------------------------------------------
@dataclass
class ChunkResult:
    stats: list = field(default_factory=list)       # (arch, family, function, n, seconds, n_pass_first, n_pass)
    written: int = 0


def fit_seed(cfg: ZooConfig, function: str, arch: str) -> int:
    """The base seed of one (function, architecture): each INR's own seed is
    ``fit.inr_seed(fit_seed, object_id)``, so an INR is a function of (zoo seed, object, function,
    arch) alone, whatever batch, chunk, worker or resumed run fits it."""
    return cfg.seed * FIT_SEED_FACTOR + hash_id(arch + function) % 1000


def init_seed(cfg: ZooConfig, arch: str) -> Optional[int]:
    """The one initialisation seed of every INR of ``arch`` in a ``shared``-init zoo (None: per INR)."""
    if cfg.init == "per-inr":
        return None
    if cfg.init != "shared":
        raise ValueError(f"zoo init must be 'per-inr' or 'shared', got {cfg.init!r}")
    return cfg.seed * FIT_SEED_FACTOR + hash_id("init/" + arch) % 1000


def _fit_chunk(root: str, cfg: ZooConfig, objects: dict[str, dict], todo: list[tuple[str, str, list[str]]],
               threads: int = 0, progress=None, stop_after: Optional[int] = None,
               writer=None, plugins: Sequence[str] = (), manifest_objects: Optional[dict] = None,
               device: Optional[str] = None) -> ChunkResult:
    """Fit every ``(function, arch, [object_ids])`` of ``todo`` for one chunk of objects.

    Each INR is written and journalled (``store.journal.jsonl``) the moment its batch is gated, so a
    kill loses nothing; with ``writer`` (main process) it is entered in the manifest too, which is
    flushed after each batch; a worker's lines are replayed by the main process as they appear.
    ``progress(n)`` is called per INR stored or dropped. ``plugins``: files / modules registering
    families (a worker process imports them). ``device``: where the fits and gates run."""
    import torch

    from gmn_inr.fields import arch_spec_for, load_plugins, out_dim_of

    from .fit import fit_inrs, prepare_samples
    from .writer import journal_drop, store_inr

    load_plugins(plugins)
    if threads:
        torch.set_num_threads(threads)
    res = ChunkResult()
    ids = sorted({o for _, _, oids in todo for o in oids})
    shapes = {o: shape_of(o, objects[o]) for o in ids}
    samples = {o: prepare_samples(shapes[o], cfg.fit, seed=cfg.seed * SAMPLE_SEED_FACTOR + (hash_id(o) % 100000),
                                  device=device) for o in ids}
    for function, arch, oids in todo:
        spec = arch_spec_for(arch, out_dim_of(function), cfg.arch_preset)
        t0 = time.perf_counter()
        fits = fit_inrs(spec, function, [samples[o] for o in oids], cfg.fit, seed=fit_seed(cfg, function, arch),
                        device=device, init_seed=init_seed(cfg, arch))
        dt = time.perf_counter() - t0
        res.stats.append((arch, spec.family, function, len(fits), dt,
                          sum(f.passed and f.attempts == 1 for f in fits), sum(f.passed for f in fits)))
        for f in fits:
            gate = {**{k: round(v, 5) for k, v in f.metrics.items()}, "passed": f.passed, "attempts": f.attempts}
            if not f.passed:
                if writer is not None:
                    writer.drop(spec, function, f.object_id, gate)
                else:
                    journal_drop(root, spec, function, f.object_id, gate)
            else:
                if writer is not None:
                    writer.add(spec, function, f.object_id, f.state_dict, gate)
                else:
                    store_inr(root, spec, function, f.object_id, manifest_objects[f.object_id], f.state_dict, gate)
                res.written += 1
                if stop_after is not None and res.written >= stop_after:
                    # test hook: stop after k files, as an exception (GMN_INR_FAULT kills instead)
                    raise BuildInterrupted(f"stopped after {res.written} INRs (test hook)")
            if progress is not None:
                progress(1)
        if writer is not None:
            writer.flush()
    return res


class BuildInterrupted(RuntimeError):
    """Raised by the ``stop_after`` test hook of :func:`build_zoo`."""


def hash_id(s: str) -> int:
    """A stable (not salted like ``hash``) integer from a string."""
    import zlib

    return zlib.crc32(s.encode())


def config_from_json(d: dict) -> ZooConfig:
    """The :class:`ZooConfig` a manifest's ``config`` was written from (``zoo info --fix``)."""
    d = {k: v for k, v in d.items() if k != "meshes"}
    names = {f.name for f in dataclasses.fields(ZooConfig)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown zoo config fields {sorted(unknown)}")
    d["fit"] = FitConfig(**d["fit"])
    d["archs"] = {k: tuple(v) for k, v in d["archs"].items()}
    for k in ("classes", "splits", "unseen_splits"):
        d[k] = tuple(d[k])
    return ZooConfig(**d)


# ---------------------------------------------------------------------------------------
# the build
# ---------------------------------------------------------------------------------------
def build_zoo(out, preset: str = "tiny", meshes: Optional[str] = None, workers: int = 1, progress: bool = True,
              stop_after: Optional[int] = None, config: Optional[ZooConfig] = None, log=print,
              wait: bool = False, functions: Optional[Sequence[str]] = None, device: Optional[str] = None,
              batch: Optional[int] = None) -> dict:
    """Build or resume the zoo in ``out``; returns the summary dict (also kept in the manifest).

    The zoo is a function of its config: each INR is seeded by its own key, every stored INR and
    gate drop is journalled as it happens, and stored files are re-verified (missing or corrupt
    ones refitted, named in ``summary["refitted"]``), so a build killed at any point, with any
    number of workers, resumes to the bytes an uninterrupted build writes. One build per folder
    (``zoo_lock``: :class:`~gmn_inr.zoo.store.ZooBusyError`, or ``wait``). ``workers > 1`` fits
    chunks in that many processes (threads split between them; they die with this process);
    ``stop_after`` (tests) raises :class:`BuildInterrupted` after that many INR files.
    ``functions``: fit only the INRs of these implicit functions now (default: all the config
    names); the zoo's config stays the preset's, so a later build fills in the rest, and the INRs
    are the same bytes as one build of everything (each is seeded by its own key).
    ``device`` (default CPU): where INRs are fitted and gated; ``batch``: objects fitted together
    (default :func:`fit_batch_size`). Neither is part of the zoo's config: an INR is the same
    whatever the batch (to float tolerance; on the CPU, bit for bit), and a CPU build is the bytes it
    always was."""
    from gmn_inr.atomic import ensure_writable_dir

    from .writer import zoo_lock

    cfg = config or preset_config(preset)
    if functions is not None:
        unknown = sorted(set(functions) - set(cfg.archs))
        if unknown:
            raise ValueError(f"zoo {cfg.name!r} has no {', '.join(unknown)} INRs; its functions: {', '.join(cfg.archs)}")
    if meshes:
        cfg = dataclasses.replace(cfg, name=cfg.name + "+meshes")
    classes, descs = object_descriptions(cfg, meshes)
    dev = torch_device(device)
    batch = fit_batch_size(cfg, dev) if batch is None else int(batch)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    ensure_writable_dir(out)                   # before any work: a clear error, not one after the fits
    with zoo_lock(out, wait=wait, log=log):
        return _build_locked(out, cfg, classes, descs, meshes, workers, progress, stop_after, functions,
                             str(dev), batch)


def _build_locked(out, cfg: ZooConfig, classes, descs, meshes, workers, progress, stop_after,
                  functions: Optional[Sequence[str]], device: str, batch: int) -> dict:
    from .workers import run_workers
    from .writer import ZooWriter

    by_class = defaultdict(list)
    for oid, d in descs.items():
        by_class[d["class_name"]].append(oid)
    splits = assign_splits(by_class, cfg.splits, cfg.seed)
    for oid, d in descs.items():
        d["split"] = splits[oid]
    conf = {**cfg.to_json_dict(), "meshes": str(Path(meshes).resolve()) if meshes else None}
    writer = ZooWriter(out, config=conf)          # replays the journal a killed build left
    adopted = writer.adopt_orphans()
    refitted = writer.check_files()               # missing or corrupt files: forgotten, so refitted
    writer.set_objects(classes, {o: {"class_name": d["class_name"], "label": d["label"], "split": d["split"],
                                     "source": d.get("path", "procedural"), "seed": d.get("seed")}
                                 for o, d in descs.items()})
    writer.compact()
    ids = sorted(descs)
    chunks = [ids[i:i + batch] for i in range(0, len(ids), batch)]
    TRAINING = training_archs()
    work = []
    for ch in chunks:
        todo = []
        for function, archs in cfg.archs.items():
            if functions is not None and function not in functions:
                continue
            for arch in archs:
                pending = [o for o in ch if not writer.done(f"{o}/{function}/{arch}")
                           and (arch in TRAINING or descs[o]["split"] in cfg.unseen_splits)]
                if pending:
                    todo.append((function, arch, pending))
        if todo:
            work.append(todo)
    total = sum(len(p) for todo in work for _, _, p in todo)
    n_before = len(writer.inrs)
    t0 = time.perf_counter()
    stats = []
    bar = None
    if progress:
        from tqdm import tqdm

        # moves per INR stored or dropped, whatever the number of workers; tqdm's ETA from that rate
        bar = tqdm(total=total, desc=f"zoo {cfg.name}", unit="INR", dynamic_ncols=True, smoothing=0.1)
    try:
        if workers <= 1:
            for todo in work:
                r = _fit_chunk(str(writer.root), cfg, descs, todo, progress=bar.update if bar else None,
                               stop_after=stop_after, writer=writer, device=device)
                stats += r.stats
        else:
            stats = run_workers(_fit_chunk, writer, cfg, descs, work, workers, bar, device)
    finally:
        if bar is not None:
            bar.close()
    writer.compact()
    elapsed = time.perf_counter() - t0
    summary = summarise(writer, stats, elapsed, adopted, len(writer.inrs) - n_before)
    summary["refitted"] = refitted
    writer.manifest["builds"].append(summary)
    writer.flush()
    return summary
