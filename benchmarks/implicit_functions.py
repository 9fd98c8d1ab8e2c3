"""Retrieval across implicit functions (INRet Table 4): SDF, UDF and occupancy INRs of one shape.

    python benchmarks/implicit_functions.py [--preset {tiny,cpu,paper}] [--zoo DIR] [--arch MLP,HASH] [--out results]

The encoder trains on pairs of one object's INRs under two implicit functions (same architecture)
in four settings: no regularisation, L2 alignment, INRet's unified decoder (every embedding decoded
as the shape's UDF) and both; then L2 + unified decoder on an encoder geometry head
(``EncoderConfig.geometry_dim``, which also reads the side row), with and without SigLIP, and
(``--ablation``) on the raw output rows instead of the function-canonical ones
(:mod:`gmn_inr.canonical`). Each ordered pair of functions gets recall@1 of the same object among
the test objects' INRs, pooled over architectures and per architecture, beside four no-learning
rows (raw and canonical outputs at the probe points, the occupancy distance from the logit's scale,
canonical outputs with the side). The geometry <-> appearance table (``--no-cross-modality`` skips
it) trains one encoder on SDF and radiance INRs whose SigLIP and L2 terms read a geometry head
(``--xmod-geometry-dim``). Writes ``OUT/implicit_functions.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import gmn_inr  # noqa: F401  (first: it shortens OpenMP's spin-wait before torch loads)
import torch

from gmn_inr.canonical import FunctionCanonical, canonical_features, shape_teacher_pairs
from gmn_inr.bench import BENCH_PRESETS, embed_records, ensure_zoo, git_commit, log, tune_malloc

FUNCS = ("sdf", "udf", "occupancy")
SETTINGS = {  # name -> (loss, unified decoder, function-canonical output rows, geometry head)
    "no regularisation": ("R", None, True, False),
    "L2 only": ("R+L2", None, True, False),
    "unified decoder only": ("R", "udf", True, False),
    "L2 + unified decoder": ("R+L2", "udf", True, False),
    # the alignment term on a head of its own (gmn_inr.encoder's geometry_dim), the decoders on the rest
    "L2 + unified decoder, geometry head": ("R+L2", "udf", True, True),
    # SigLIP across the functions of one object (an object's sdf, udf, occupancy INRs are positives)
    "L2 + unified decoder + SigLIP, geometry head": ("R+C+L2", "udf", True, True),
}
#: the head setting's encoder before training. Without an alignment term nothing trains the head
#: (the decoders do not read it), so this is also what "no regularisation, geometry head" retrieves with
INITIAL_HEAD = "no learning: the geometry head at initialisation (random projection of the canonical rows)"
#: no learning: the canonical rows and the side row (inside/outside where the function tells it)
NO_LEARNING_SIDE = "no learning: canonical outputs and side at the probe points"
#: no learning: the canonical rows with an occupancy INR's (and a NeRF's density's) distance from its
#: logit's scale (the rows before gmn_inr.canonical.surface_distance read it from the sign changes)
NO_LEARNING_SCALE = "no learning: canonical outputs, occupancy distance from the logit's scale"
#: the ablation: the full setting on the raw output rows (the encoder before gmn_inr.canonical)
ABLATION = {"L2 + unified decoder, raw output rows": ("R+L2", "udf", False, False)}


def implicit_archs(records, only: Optional[str] = None) -> list:
    """The architectures whose sdf/udf/occupancy INRs are compared: those of ``only`` (comma
    separated) or else every architecture with INRs of at least two of them, in registry order."""
    from gmn_inr.fields import registry

    funcs: dict = {}
    for r in records:
        if r.function in FUNCS:
            funcs.setdefault(r.arch, set()).add(r.function)
    have = [a for a, f in funcs.items() if len(f) >= 2]
    if only:
        want = [a.strip() for a in only.split(",") if a.strip()]
        missing = [a for a in want if a not in have]
        if missing:
            raise SystemExit(f"the zoo has no {', '.join(missing)} INRs of several implicit functions {FUNCS}")
        return want
    order = {a: k for k, a in enumerate(registry.architectures())}
    return sorted(have, key=lambda a: (order.get(a, len(order)), a))


def function_pairs(records, split: str, archs) -> list:
    """``(rec_a, rec_b)`` of one object and one architecture (each of ``archs``), two different
    implicit functions."""
    by_inr: dict = {}
    for r in records:
        if r.split == split and r.arch in archs and r.function in FUNCS:
            by_inr.setdefault((r.object_id, r.arch), {})[r.function] = r
    return [(fs[a], fs[b]) for fs in by_inr.values() for a, b in itertools.combinations(FUNCS, 2) if a in fs and b in fs]


def cross_function_recall(z, recs) -> dict:
    """Recall@1/5 of the same object for every ordered function pair (query a, gallery b).

    Within a family (the pair's keys, ``mean@1``, ``by_arch``): each architecture's a-INRs against
    the b-INRs of the same architecture, pooled over architectures (weighted by queries). Across
    families (``across``, ``across_mean@1``; only with several architectures): each a-INR against
    the b-INRs of every other architecture. A query counts only where its gallery holds its object."""
    from gmn_inr.tasks import object_ids, queries_in_gallery, recall_at_k

    ids = object_ids(recs)
    archs = sorted({r.arch for r in recs})

    def counted(q: list, g: list) -> Optional[tuple]:
        """``(recall, number of queries counted)``, None when no query can count."""
        q = queries_in_gallery(q, g, ids)
        return (recall_at_k(z[q], ids[q], z[g], ids[g], ks=(1, 5)), len(q)) if q else None

    def pooled(parts: list) -> Optional[dict]:
        """Recalls of several query sets, weighted by their counted queries."""
        parts = [p for p in parts if p is not None]
        n = sum(m for _, m in parts)
        return {k: sum(r[k] * m for r, m in parts) / n for k in parts[0][0]} if parts else None

    def idx(function: str, keep) -> list:
        return [i for i, r in enumerate(recs) if r.function == function and keep(r.arch)]

    out, by_arch, across = {}, {a: {} for a in archs}, {}
    for a, b in itertools.permutations(FUNCS, 2):
        within = {arch: counted(idx(a, lambda x: x == arch), idx(b, lambda x: x == arch)) for arch in archs}
        r = pooled(list(within.values()))
        if r is None:
            continue
        out[f"{a}/{b}"] = r
        for arch, part in within.items():
            if part is not None:
                by_arch[arch][f"{a}/{b}"] = part[0]["1"]
        if len(archs) > 1:
            r = pooled([counted(idx(a, lambda x: x == arch), idx(b, lambda x: x != arch)) for arch in archs])
            if r is not None:
                across[f"{a}/{b}"] = r
    mean = lambda d: sum(v["1"] if isinstance(v, dict) else v for v in d.values()) / max(1, len(d))
    out["mean@1"] = mean(out)
    if len(archs) > 1:
        out["by_arch"] = {a: {**d, "mean@1": mean(d)} for a, d in by_arch.items() if d}
        out["across"] = across
        out["across_mean@1"] = mean(across)
    return out


def pair_columns(row: dict) -> list:
    """The function-pair keys of a :func:`cross_function_recall` row."""
    return [k for k in row if "/" in k and not k.startswith(("by_", "across"))]


@torch.no_grad()
def sampled_rows(test) -> tuple:
    """Each INR of ``test`` read once: its outputs at the probe points ``[C, K]`` and, where its
    function reads one (:data:`gmn_inr.canonical.SURFACE_FUNCTIONS`), its distance from its sign
    changes ``[K]`` (else None)."""
    from gmn_inr.baselines import sampled_outputs
    from gmn_inr.canonical import record_surface

    fields = [r.field() for r in test]
    # the records' cache: the encoders' FunctionCanonical views of the same records reuse these grids
    return [sampled_outputs(f) for f in fields], [record_surface(r, f) for f, r in zip(fields, test)]


def canonical_rows(outputs, surfaces, test) -> dict:
    """The no-learning canonical features of :func:`sampled_rows`' outputs, ``[N, K]`` or ``[N, 2K]``:
    the canonical rows (sign changes), the same with the occupancy distance from the logit's scale,
    and the canonical rows with the side."""
    rows = list(zip(outputs, test, surfaces))
    return {"no learning: canonical outputs at the probe points":
                torch.stack([canonical_features(o, r.function, surface=s) for o, r, s in rows]),
            NO_LEARNING_SCALE: torch.stack([canonical_features(o, r.function) for o, r, _ in rows]),
            NO_LEARNING_SIDE: torch.stack([canonical_features(o, r.function, side=True, surface=s) for o, r, s in rows])}


def no_learning_rows(test) -> dict:
    """Recall of the outputs at the probe points compared by cosine, no learning: raw (``asinh``,
    the encoder's squashing), function-canonical (:func:`gmn_inr.canonical.canonical_values`: an
    occupancy INR's distance from its sign changes, :func:`gmn_inr.canonical.surface_distance`),
    the same with the occupancy distance from the logit's scale instead (the canonical rows before the
    sign changes), and canonical with the side row (:func:`gmn_inr.canonical.canonical_side`)."""
    from gmn_inr.baselines import output_features

    outputs, surfaces = sampled_rows(test)                  # one read per INR serves every row
    raw = torch.stack([output_features(o) for o in outputs])
    return {"no learning: raw outputs at the probe points": cross_function_recall(raw, test),
            **{n: cross_function_recall(z, test) for n, z in canonical_rows(outputs, surfaces, test).items()}}


def setting_config(bp, loss: str, unified: Optional[str], head: bool, steps: int):
    """The TrainConfig of one function-pair setting (the geometry head: half the embedding)."""
    from gmn_inr.encoder import PRESETS
    from gmn_inr.train import TrainConfig

    geometry_dim = PRESETS[bp.encoder].embed_dim // 2 if head else 0
    return TrainConfig.for_preset(bp.encoder, loss=loss, unified=unified, steps=steps, seed=0,
                                  functions=list(FUNCS) if unified is None else [unified],
                                  ckpt_every=max(10, steps // 10),
                                  encoder={"geometry_dim": geometry_dim} if head else {})


def retrieval_embeddings(encoder, recs, device: str) -> torch.Tensor:
    """``[N, D']`` embeddings retrieval compares: the geometry head's columns where the encoder has
    one (what the alignment terms were applied to), else the whole embedding."""
    z, _ = embed_records(encoder, recs, device)
    return encoder.split_geometry(z)[1] if encoder.config.geometry_dim else z


def cross_modal_test(records, archs, fams) -> list:
    """The SDF INRs of ``archs`` and radiance INRs of ``fams`` among ``records``, geometry rows."""
    return [FunctionCanonical(r, geometry=True) for r in records
            if (r.function == "sdf" and r.arch in archs) or (r.function == "radiance" and r.arch in fams)]


def cross_modal_rows(encoder, test: list, device: str) -> dict:
    """The cross-modality table's rows for the records ``test`` (see :func:`cross_modal_test`)."""
    from gmn_inr.cross_modal import cross_modal_recall

    out = {n: cross_modal_recall(z, test) for n, z in canonical_rows(*sampled_rows(test), test).items()}
    out["GMN, R+C+L2, geometry rows"] = cross_modal_recall(retrieval_embeddings(encoder, test, device), test)
    return out


def cross_modality(records, archs, bp, steps: int, runs: Path, device: str, geometry_dim: Optional[int] = None):
    """Geometry <-> appearance: one encoder trained on (SDF, NeRF) and (NeRF, NeRF) pairs of the
    training objects (rendering + SDF reconstruction + SigLIP + L2, gmn_inr.cross_modal), then
    recall between the test objects' SDF INRs and their radiance INRs of every training family;
    beside it the same recall of the canonical outputs at the probe points, no learning.

    ``geometry_dim``: the encoder's geometry head (``EncoderConfig.geometry_dim``: SigLIP and L2 on
    those columns only, the decoders on the others; retrieval reads them); None = half the
    preset's embedding, 0 = none (one embedding for every term: at chance on the cpu zoo)."""
    from gmn_inr.cross_modal import cross_modal_pairs
    from gmn_inr.encoder import PRESETS
    from gmn_inr.fields import registry
    from gmn_inr.train import TrainConfig, train

    if geometry_dim is None:
        geometry_dim = PRESETS[bp.encoder].embed_dim // 2

    fams = registry.architectures(training=True)
    archs = [a for a in archs if any(r.function == "sdf" and r.arch == a for r in records)]
    pairs = cross_modal_pairs([r for r in records if r.split == "train"], implicit_archs=archs, radiance_archs=fams)
    test = cross_modal_test([r for r in records if r.split == "test"], archs, fams)
    if not pairs or not any(r.function == "sdf" for r in test):
        raise SystemExit(f"cross-modality needs sdf INRs of {archs} and radiance INRs of {fams} in the zoo")
    log(f"cross-modality: {len(pairs)} training pairs ({sum(a.function == 'sdf' for a, _ in pairs)} SDF-NeRF), "
        f"{len(test)} test INRs, {steps} steps")
    cfg = TrainConfig.for_preset(bp.encoder, loss="R+C+L2", steps=steps, seed=0, functions=["radiance", "sdf"],
                                 ckpt_every=max(10, steps // 10),
                                 encoder={"geometry_dim": geometry_dim} if geometry_dim else {})
    run_dir = runs / ("cross_modality" + (f"_geometry{geometry_dim}" if geometry_dim else ""))
    res = train(cfg, pairs, out_dir=run_dir, resume=True)
    out = cross_modal_rows(res.encoder, test, device)
    return out, {"seconds": res.seconds, "final": res.history[-1] if res.history else None,
                 "n_train_pairs": len(pairs), "n_test": len(test), "families": list(fams), "sdf_archs": archs,
                 "steps": steps, "geometry_dim": geometry_dim}, res.encoder


def cross_modality_markdown(xmod: dict, info: dict) -> list:
    """The geometry <-> appearance table: recall@1 per gallery/query family and pooled."""
    first = next(iter(xmod.values()))
    fam_cols = list(first["by_family"])
    head = (f" SigLIP and L2 on a geometry head of {info['geometry_dim']} columns (the learned row reads them)"
            if info.get("geometry_dim") else " one embedding for every loss term")
    sdf = ", ".join(info.get("sdf_archs") or ["HASH"])
    lines = ["", f"Geometry <-> appearance: {info['n_test']} test INRs (SDF {sdf}; radiance {', '.join(info['families'])}), "
             f"one encoder trained {info['steps']} steps on {info['n_train_pairs']} pairs,{head}. Recall@1 (%), "
             "query/gallery; pooled: the gallery holds every family (recall@5 in brackets).", "",
             "| | sdf/radiance | radiance/sdf | " + " | ".join(fam_cols) + " |", "|---" * (len(fam_cols) + 3) + "|"]
    for n, r in xmod.items():
        lines.append(f"| {n} | {100 * r['sdf/radiance']['1']:.1f} ({100 * r['sdf/radiance']['5']:.1f}) | "
                     f"{100 * r['radiance/sdf']['1']:.1f} ({100 * r['radiance/sdf']['5']:.1f}) | "
                     + " | ".join(f"{100 * r['by_family'][c]['1']:.1f}" for c in fam_cols) + " |")
    if len(first.get("by_implicit_family", {})) > 2:
        cols = list(first["by_implicit_family"])
        lines += ["", "By the SDF's family (query/gallery, recall@1 %; the other side pooled over families):", "",
                  "| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += [f"| {n} | " + " | ".join(f"{100 * r['by_implicit_family'][c]['1']:.1f}" for c in cols) + " |"
                  for n, r in xmod.items()]
        ifams = sorted({k.split("/")[0].split(":")[1] for k in first["matrix"]})
        rfams = sorted({k.split("/")[1].split(":")[1] for k in first["matrix"]})
        names = list(xmod)
        lines += ["", "SDF of one family -> radiance INRs of one family, recall@1 % (" + " / ".join(names) + "):", "",
                  "| sdf \\ radiance | " + " | ".join(rfams) + " |", "|---" * (len(rfams) + 1) + "|"]
        for i in ifams:
            lines.append(f"| {i} | " + " | ".join(" / ".join(f"{100 * xmod[n]['matrix'][f'sdf:{i}/radiance:{j}']['1']:.1f}"
                                                              for n in names) for j in rfams) + " |")
        worst = {n: min(v["1"] for v in r["matrix"].values()) for n, r in xmod.items()}
        lines += ["", "Worst cell: " + ", ".join(f"{n} {100 * w:.1f}" for n, w in worst.items()) + "."]
    return lines


def family_markdown(results: dict) -> list:
    """Per architecture (pairs within it) and across architectures, mean recall@1 over the pairs."""
    first = next(iter(results.values()))
    if "by_arch" not in first:
        return []
    archs = list(first["by_arch"])
    lines = ["", "Mean recall@1 (%) over the six pairs, per architecture (query and gallery of that architecture) "
             "and across architectures (gallery: the other architectures' INRs of the gallery function); "
             "min: the lowest pair of the within-architecture table above.", "",
             "| setting | " + " | ".join(archs) + " | across architectures | min pair |", "|---" * (len(archs) + 3) + "|"]
    for n, r in results.items():
        lines.append(f"| {n} | " + " | ".join(f"{100 * r['by_arch'][a]['mean@1']:.1f}" for a in archs)
                     + f" | {100 * r['across_mean@1']:.1f} | {100 * min(r[c]['1'] for c in pair_columns(r)):.1f} |")
    return lines


def mesh_zoo_rows(zoo: Path, encoders: dict, device: str) -> dict:
    """The procedural zoo's encoders on every INR of a mesh zoo: the cross-function recall of each
    setting (and the no-learning rows), and the cross-modality rows when that encoder exists."""
    from gmn_inr.fields import registry
    from gmn_inr.zoo import open_store

    records = list(open_store(zoo))
    archs = implicit_archs(records)
    test = [r for r in records if r.arch in archs and r.function in FUNCS]
    if not test:
        raise SystemExit(f"the mesh zoo {zoo} has no INRs of several implicit functions {FUNCS}")
    out = {"n_objects": len({r.object_id for r in test}), "archs": archs, "retrieval": no_learning_rows(test)}
    for name, item in encoders.items():
        if name != "cross_modality":
            enc, wrap = item
            out["retrieval"][name] = cross_function_recall(retrieval_embeddings(enc, [wrap(r) for r in test], device), test)
    if "cross_modality" in encoders:
        xt = cross_modal_test(records, archs, registry.architectures(training=True))
        out["cross_modality_table"] = cross_modal_rows(encoders["cross_modality"], xt, device)
        out["cross_modality"] = out["cross_modality_table"]["GMN, R+C+L2, geometry rows"]
        out["n_cross_modality_inrs"] = len(xt)
    log(f"mesh zoo: {out['n_objects']} objects")
    return out


def mesh_markdown(meshes: dict, cols: list) -> list:
    lines = ["", f"Real meshes (CGAL's classic models, {meshes['n_objects']} objects, "
             f"{', '.join(meshes.get('archs', ['HASH']))} INRs, benchmarks/cgal_meshes.py), "
             "read by the encoders trained above on the procedural zoo only. Recall@1 (%).", "",
             "| setting | " + " | ".join(cols) + " | mean |", "|---" * (len(cols) + 2) + "|"]
    lines += [f"| {n} | " + " | ".join(f"{100 * r[c]['1']:.1f}" for c in cols) + f" | {100 * r['mean@1']:.1f} |"
              for n, r in meshes["retrieval"].items()]
    if "cross_modality_table" in meshes:
        lines += ["", "| real meshes | sdf/radiance | radiance/sdf |", "|---|---|---|"]
        lines += [f"| {n} | {100 * r['sdf/radiance']['1']:.1f} ({100 * r['sdf/radiance']['5']:.1f}) | "
                  f"{100 * r['radiance/sdf']['1']:.1f} ({100 * r['radiance/sdf']['5']:.1f}) |"
                  for n, r in meshes["cross_modality_table"].items()]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu", choices=tuple(BENCH_PRESETS))
    ap.add_argument("--zoo", default=None)
    ap.add_argument("--arch", default=None, help="the architectures whose sdf/udf/occupancy INRs are compared, "
                    "comma separated (default: every one the zoo has them of)")
    ap.add_argument("--out", default="results")
    ap.add_argument("--runs", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-ablation", dest="ablation", action="store_false",
                    help="skip the raw-output-rows row (the full setting without gmn_inr.canonical)")
    ap.add_argument("--mesh-zoo", default=None, help="also read the INRs of this zoo of real meshes "
                    "(benchmarks/cgal_meshes.py) with the encoders trained here on the procedural zoo")
    ap.add_argument("--no-cross-modality", dest="cross_modality", action="store_false",
                    help="skip the geometry <-> appearance table (SDF INRs against radiance INRs)")
    ap.add_argument("--xmod-geometry-dim", type=int, default=None,
                    help="columns of the cross-modality encoder's geometry head, which SigLIP and L2 read and the "
                         "decoders do not (default: half the embedding; 0: none, one embedding for every term)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    bp = BENCH_PRESETS[args.preset]
    steps = args.steps or max(10, bp.steps // 2)
    from gmn_inr.train import train
    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    store = ensure_zoo(Path(args.zoo or f"zoo_cache/{args.preset}"), bp.zoo, reuse=args.zoo is not None,
                       functions=FUNCS)
    records = list(store)
    archs = implicit_archs(records, args.arch)
    pairs = function_pairs(records, "train", archs)
    test = [r for r in records if r.split == "test" and r.arch in archs and r.function in FUNCS]
    if not pairs or not test:
        raise SystemExit(f"the zoo has no INRs of several implicit functions {FUNCS}")
    log(f"{len(pairs)} training pairs, {len(test)} test INRs ({', '.join(archs)})")
    runs = Path(args.runs or f"runs/{args.preset}/implicit")
    results, training, encoders = no_learning_rows(test), {}, {}
    # the head setting's starting point, untrained: what its L2 and unified decoder add is the difference
    from gmn_inr.training.model import GMNModel

    head_cfg = setting_config(bp, *SETTINGS["L2 + unified decoder, geometry head"][:2], True, steps)
    initial = GMNModel.initial(head_cfg, head_cfg.functions).encoder
    head_wrap = functools.partial(FunctionCanonical, geometry=True)
    results[INITIAL_HEAD] = cross_function_recall(retrieval_embeddings(initial, [head_wrap(r) for r in test],
                                                                       args.device), test)
    encoders[INITIAL_HEAD] = (initial, head_wrap)
    settings = {**SETTINGS, **(ABLATION if args.ablation else {})}
    for name, (loss, unified, canon, head) in settings.items():
        cfg = setting_config(bp, loss, unified, head, steps)
        geometry_dim = cfg.encoder.get("geometry_dim", 0)
        log(f"training: {name} ({loss}, unified={unified}, canonical rows={canon}, geometry head={geometry_dim}, "
            f"{steps} steps)")
        # the geometry head reads the density channel's output neuron: geometry mode moves an
        # implicit INR's output row there
        wrap = functools.partial(FunctionCanonical, geometry=head) if canon else (lambda r: r)
        train_pairs = [(wrap(a), wrap(b)) for a, b in pairs]
        if unified is not None:
            train_pairs = shape_teacher_pairs(train_pairs)
        run_dir = runs / (name.replace(" ", "_").replace("+", "p").replace(",", "") + ("_canon" if canon else ""))
        res = train(cfg, train_pairs, out_dir=run_dir, resume=True)
        results[name] = cross_function_recall(retrieval_embeddings(res.encoder, [wrap(r) for r in test], args.device), test)
        encoders[name] = (res.encoder, wrap)
        training[name] = {"seconds": res.seconds, "final": res.history[-1] if res.history else None,
                          "canonical_rows": canon, "geometry_dim": geometry_dim}
        log(f"{name}: mean recall@1 across functions {100 * results[name]['mean@1']:.1f}%")
    xmod = xmod_training = None
    if args.cross_modality:
        xmod, xmod_training, encoders["cross_modality"] = cross_modality(records, archs, bp, steps, runs,
                                                                           args.device, args.xmod_geometry_dim)
        training["cross_modality"] = xmod_training
        log("cross-modality: " + ", ".join(f"{n}: sdf/radiance {100 * r['sdf/radiance']['1']:.1f}%, radiance/sdf "
                                           f"{100 * r['radiance/sdf']['1']:.1f}%" for n, r in xmod.items()))
    meshes = mesh_zoo_rows(Path(args.mesh_zoo), encoders, args.device) if args.mesh_zoo else None
    report = {"retrieval": results, "training": training,
              "meta": {"preset": args.preset, "archs": archs, "commit": git_commit(), "device": args.device,
                       "date": _dt.datetime.now().isoformat(timespec="seconds"), "n_test": len(test),
                       "n_train_pairs": len(pairs), "steps": steps, "wall_seconds": time.perf_counter() - t0,
                       "threads": torch.get_num_threads()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = pair_columns(next(iter(results.values())))
    md = [f"# implicit_functions — preset `{args.preset}`, {', '.join(archs)}", "",
          f"{report['meta']['date']}, commit `{report['meta']['commit']}`, {len(test)} test INRs, "
          f"wall {report['meta']['wall_seconds'] / 60:.1f} min. Recall@1 (%) of the same object, query/gallery function.",
          "", "| setting | " + " | ".join(cols) + " | mean |", "|---" * (len(cols) + 2) + "|"]
    md += [f"| {n} | " + " | ".join(f"{100 * r[c]['1']:.1f}" for c in cols) + f" | {100 * r['mean@1']:.1f} |"
           for n, r in results.items()]
    md += family_markdown(results)
    if xmod is not None:
        report["cross_modality"] = xmod["GMN, R+C+L2, geometry rows"]
        report["cross_modality_table"] = xmod
        md += cross_modality_markdown(xmod, xmod_training)
    if meshes is not None:
        report["meshes"] = meshes
        md += mesh_markdown(meshes, cols)
    md = "\n".join(md) + "\n"
    tmp = out / "implicit_functions.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out / "implicit_functions.json")
    (out / "implicit_functions.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
