"""Conversion speed and memory of every family's parameter graph at the paper's sizes (Table 7),
and its speed beside the reference converters', timed in the same run.

    python benchmarks/convert_speed.py [--repeats 30] [--preset paper] [--batch 32] [--threads 1]
                                       [--references DIR [--ref-repeats 40] [--parts]]
                                       [--json results/convert_speed.json]

For each architecture (and TRI-xyz, a tri-plane fed raw xyz, the input GMN's ``arch_to_graph``
handles): nodes, edges, the graph's own bytes, the median conversion time over repeats (probe rows
included), the median per-INR time of converting ``--batch`` INRs of the architecture into one PyG
``Batch`` one at a time (``to_graph`` + ``Batch.from_data_list``) and at once (``graphs.to_batch``),
and the peak extra resident memory of one conversion (measured in a fresh forked process, so earlier
work does not hide it). Goals: memory within 2x of the graph's tensors; batched at least 5x one at a
time per INR.

``--references DIR``: DIR holds checkouts of the reference converters (``DIR/graph_metanetworks``:
github.com/cptq/graph_metanetworks, ``DIR/gmnerf``: github.com/CVLAB-Unibo/gmnerf; docs/reference.md,
"Conversion speed beside the references"). Their own ``sequential_to_arch`` + ``arch_to_graph`` are
loaded from there and timed on networks of the same sizes as ours, in interleaved pairs with
``to_graph`` (with and without probe rows), at the same thread count. Goal: conversion with probe
rows at least 2x the fastest reference converter in every family (median ratio over the pairs).
Without DIR (or without their files) it says so in one line and prints no ratio. ``--parts``:
each part of one conversion of those families timed alone, where the time goes.
``--smoke`` runs tiny sizes and few repeats (the test suite's check that the script runs).
"""
from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
import types

import gmn_inr  # noqa: F401  (first: it shortens OpenMP's spin-wait before torch loads)
import torch

from gmn_inr.fields import ARCHITECTURES, arch_spec_for, build_field
from gmn_inr.fields.spec import RAW_XYZ
from graphs import to_batch, to_graph
from graphs.template import template_for, templatable

#: a tri-plane fed raw xyz (no frequency encoding): the case GMN's arch_to_graph converts
EXTRA = ("TRI-xyz",)


def make_field(name: str, preset: str, seed: int = 0):
    torch.manual_seed(seed)
    if name == "TRI-xyz":
        spec = arch_spec_for("TRI", 4, preset).replace(encoding=RAW_XYZ, name="TRI-xyz")
    else:
        spec = arch_spec_for(name, 4, preset)
    if spec.family == "octree":
        return build_field(spec, occupancy=lambda p: p.norm(dim=-1) < 0.6)
    return build_field(spec)


#: the reference checkouts under --references DIR, and the graph-construction files each must hold
REFERENCES = {"GMN": "graph_metanetworks", "gmnerf": "gmnerf"}
REF_FILES = ("model_arch_graph.py", "layers.py", "utils.py", "constants.py")
#: the families timed beside them: Table 7's three, and the tri-plane fed raw xyz
REF_FAMILIES = ("MLP", "TRI", "HASH", "TRI-xyz")


def load_reference(root: str) -> types.SimpleNamespace:
    """A reference's ``gmn.graph_construct`` package imported from ``root`` (a checkout) by file
    location: ``gmn`` is registered with ``root/gmn`` as its path for the import only, then the
    caller's ``gmn`` modules (if any) are put back; nothing is copied and ``sys.path`` is untouched."""
    pkg = os.path.join(root, "gmn", "graph_construct")
    missing = [f for f in REF_FILES if not os.path.isfile(os.path.join(pkg, f))]
    if missing:
        raise FileNotFoundError(f"{pkg} lacks {', '.join(missing)}")
    ours = {k: m for k, m in sys.modules.items() if k == "gmn" or k.startswith("gmn.")}
    for k in ours:
        del sys.modules[k]
    try:
        for name, path in (("gmn", os.path.join(root, "gmn")), ("gmn.graph_construct", pkg)):
            m = types.ModuleType(name)
            m.__path__ = [path]
            sys.modules[name] = m
        mod = lambda n: importlib.import_module(f"gmn.graph_construct.{n}")      # noqa: E731
        mag, layers = mod("model_arch_graph"), mod("layers")
        hash_grid = mod("hash_grid") if os.path.isfile(os.path.join(pkg, "hash_grid.py")) else None
    finally:
        for k in [k for k in sys.modules if k == "gmn" or k.startswith("gmn.")]:
            del sys.modules[k]
        sys.modules.update(ours)
    return types.SimpleNamespace(to_arch=mag.sequential_to_arch, to_graph=mag.arch_to_graph, layers=layers,
                                 hash_grid=hash_grid)


def load_references(root: str | None) -> dict:
    """name -> loaded reference, for those of :data:`REFERENCES` found under ``root``; one line
    says what is absent."""
    if not root:
        print("references: none given (--references DIR), so gmn_inr is timed alone and no ratio is printed")
        return {}
    refs, absent = {}, []
    for name, sub in REFERENCES.items():
        try:
            refs[name] = load_reference(os.path.join(root, sub))
        except (FileNotFoundError, ImportError) as exc:
            absent.append(f"{name} ({exc})")
    if absent:
        print(f"references: absent under {root}: {'; '.join(absent)}" +
              ("" if refs else "; gmn_inr is timed alone and no ratio is printed"))
    return refs


def reference_net(ref: types.SimpleNamespace, name: str, field):
    """The network a reference converts for family ``name``, the same sizes as ``field`` (weights
    and grids of the same shapes; their values do not change the work), or None where the reference
    has no such module: gmnerf's tri-plane with an encoded input and hash grid, either one's tri-plane
    fed raw xyz and plain MLP."""
    from torch import nn

    dims = [field.mlp.layers[0].in_features] + [lin.out_features for lin in field.mlp.layers]
    bias = field.mlp.layers[0].bias is not None
    grid = []
    if name.startswith("TRI"):
        g = field.spec.grid
        if name == "TRI-xyz" and hasattr(ref.layers, "TriplanarGrid"):
            grid = [ref.layers.TriplanarGrid(g.resolution, g.channels)]
        elif hasattr(ref.layers, "TriplanarGridWithInputEncoding"):
            grid = [ref.layers.TriplanarGridWithInputEncoding(g.resolution, g.channels, dims[0] - g.channels)]
        else:
            return None
    elif name.startswith("HASH"):
        g = field.spec.grid
        if ref.hash_grid is None or g.feature_dim > 16:
            return None
        finest = int(g.base_resolution * g.per_level_scale ** (g.n_levels - 1))
        grid = [ref.hash_grid.MultiResHashGrid(3, g.n_levels, g.features_per_level, g.log2_hashmap_size,
                                               g.base_resolution, finest)]
        dims[0] = 16                              # their graph pads the level features to 16 input nodes
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    return nn.Sequential(*grid, *layers[:-1])


def time_side_by_side(jobs: dict, repeats: int) -> dict:
    """name -> per-repeat seconds of each ``jobs[name]()``: every repeat runs each job once, the
    order rotated from repeat to repeat, so load from other processes hits all of them alike."""
    names = list(jobs)
    for n in names:
        jobs[n]()                                 # warm caches and code paths
    out = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            jobs[n]()
            out[n].append(time.perf_counter() - t)
    return out


def reference_rows(refs: dict, names, preset: str, repeats: int) -> list[dict]:
    """Per family: the reference converters' and ours times, in interleaved repeats, and the ratio
    (fastest reference / ours) per repeat, with and without our probe rows."""
    rows = []
    for name in names:
        field = make_field(name, preset)
        nets = {r: reference_net(ref, name, field) for r, ref in refs.items()}
        nets = {r: n for r, n in nets.items() if n is not None and _converts(refs[r], n)}
        if not nets:
            continue
        tpl = template_of(field)
        jobs = {"ours": lambda: to_graph(field), "ours, no probe rows": lambda: tpl.convert(field, probes=False)}
        for r, net in nets.items():
            ref = refs[r]
            # no autograd for them either (their own pipeline runs with it, and is slower so)
            jobs[r] = lambda ref=ref, net=net: _no_grad(lambda: ref.to_graph(ref.to_arch(net)))
        t = time_side_by_side(jobs, repeats)
        fastest = min(nets, key=lambda r: statistics.median(t[r]))
        ref_nodes, ref_edges = (int(v) for v in _shape(refs[fastest], nets[fastest]))
        row = dict(arch=name, reference=fastest, ref_nodes=ref_nodes, ref_edges=ref_edges,
                   ms={k: statistics.median(v) * 1e3 for k, v in t.items()},
                   min_ms={k: min(v) * 1e3 for k, v in t.items()})
        for key, ours in (("with_probes", "ours"), ("without_probes", "ours, no probe rows")):
            ratio = sorted(a / b for a, b in zip(t[fastest], t[ours]))
            row[key] = dict(min=ratio[0], median=statistics.median(ratio), max=ratio[-1])
        rows.append(row)
    return rows


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def _converts(ref, net) -> bool:
    """Whether the reference converts ``net`` at all (gmnerf's hash grid needs equal-size levels)."""
    try:
        _shape(ref, net)
        return True
    except (RuntimeError, ValueError, AssertionError):
        return False


def _shape(ref, net):
    with torch.no_grad():
        x, ei, _ = ref.to_graph(ref.to_arch(net))
    return x.shape[0], ei.shape[1]


def template_of(field):
    """The cached graph template of a built-in dense field (None for octrees and the like)."""
    if not templatable(field):
        return None
    return template_for(field, lambda: to_graph(field))


#: the parts of one templated to_graph, in the order conversion_parts reports them
PARTS = ("structure copies", "parameter values", "grid rows", "encoding rows", "hidden layer products",
         "activations", "output layer", "finiteness check", "other")


def conversion_parts(field, repeats: int) -> tuple[float, dict]:
    """Where one ``to_graph`` of a templated field spends its time: ``(total, {part: us})``, each
    part timed alone with the template's own pieces (min over ``repeats``); "other" is the rest
    (Python, slicing, the graph object). The output layer is the one that keeps the builder's own
    product (BLAS sums a 4-wide layer in another order), so it pays two transposes."""
    from graphs.graph import _all_finite
    from graphs.template import _activate_

    def t(fn) -> float:
        best = float("inf")
        for _ in range(repeats):
            s = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - s)
        return best * 1e6

    tpl, mlp = template_of(field), field.mlp
    total = t(lambda: to_graph(field))
    parts = dict.fromkeys(PARTS, 0.0)
    parts["structure copies"] = t(lambda: (tpl.x.clone(), tpl.edge_index.clone(), tpl.edge_attr.clone(),
                                           tpl.probe_index.clone()))
    ea = tpl.edge_attr.clone()
    parts["parameter values"] = t(lambda: ea.select(1, 0).copy_(tpl.values(field)))
    with torch.no_grad():
        out = tpl.probe(field)
        if tpl.n_grid:
            parts["grid rows"] = t(lambda: tpl._grid_rows(field, out[:tpl.n_grid]))
        if tpl.enc_rows is not None:
            parts["encoding rows"] = t(lambda: out[tpl.n_grid:tpl.n_in].copy_(tpl.enc_rows))
        h, last = out[:tpl.n_in], len(mlp.layers) - 1
        for k, lin in enumerate(mlp.layers):
            dst = out[tpl.rows[k]:tpl.rows[k] + lin.out_features]
            if tpl.row_major[k]:
                key = "output layer" if k == last else "hidden layer products"
                parts[key] += t(lambda: dst.copy_(lin(h.t().contiguous()).t()))
            elif lin.bias is None:
                parts["hidden layer products"] += t(lambda: torch.mm(lin.weight, h, out=dst))
            else:
                parts["hidden layer products"] += t(lambda: torch.addmm(lin.bias.unsqueeze(1), lin.weight, h, out=dst))
            if k != last:
                scratch = dst.clone()
                parts["activations"] += t(lambda: _activate_(mlp.act, scratch))
            h = dst
        parts["finiteness check"] = t(lambda: _all_finite(out[tpl.n_in:]))
    parts["other"] = max(0.0, total - sum(parts.values()))
    return total, parts


def _peak_extra_rss(name: str, preset: str, q) -> None:
    field = make_field(name, preset)
    to_graph(make_field("MLP-32H", preset))          # warm the code paths, not this graph
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g = to_graph(field)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.put(((after - before) * 1024, g.nbytes()))


def peak_extra_rss(name: str, preset: str) -> tuple[int, int]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_extra_rss, args=(name, preset, q))
    p.start()
    out = q.get(timeout=120)
    p.join()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--preset", default="paper", choices=("paper", "cpu", "tiny"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small ops)")
    ap.add_argument("--json", default="results/convert_speed.json")
    ap.add_argument("--batch", type=int, default=32, help="INRs per batch for the batched-conversion columns")
    ap.add_argument("--references", metavar="DIR", default=None,
                    help="checkouts of the reference converters (graph_metanetworks/, gmnerf/) to time beside ours")
    ap.add_argument("--ref-repeats", type=int, default=40, help="interleaved repeats of the side-by-side timing")
    ap.add_argument("--parts", action="store_true",
                    help="also time each part of one conversion of the reference families (where the time goes)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repeats, batches of 4, no json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.preset, args.repeats, args.batch, args.json, args.ref_repeats = "tiny", 2, 4, "", 3
    torch.set_num_threads(args.threads)
    refs = load_references(args.references)
    rows = []
    print(f"preset={args.preset} threads={args.threads} repeats={args.repeats} batch={args.batch} "
          f"cpu_count={os.cpu_count()} load={os.getloadavg() if hasattr(os, 'getloadavg') else '?'}")
    print(f"{'arch':<10} {'nodes':>7} {'edges':>7} {'graph MiB':>9} {'median ms':>9} {'min ms':>7} "
          f"{'1-by-1 ms/INR':>13} {'batched':>8} {'x':>5} {'probe fwd':>9} {'ceiling x':>9} {'peak extra MiB':>14} "
          f"{'mem/graph':>9}")
    from torch_geometric.data import Batch

    for name in tuple(ARCHITECTURES) + EXTRA:
        field = make_field(name, args.preset)
        g = to_graph(field)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            to_graph(field)
            times.append((time.perf_counter() - t) * 1e3)
        # many INRs of one architecture into one Batch: one at a time against graphs.to_batch,
        # interleaved so load from other processes hits both alike
        fields = [make_field(name, args.preset, seed=s) for s in range(args.batch)]
        one, many = [], []
        for _ in range(max(2, args.repeats // 6)):
            t = time.perf_counter()
            Batch.from_data_list([to_graph(f).to_pyg() for f in fields])
            one.append((time.perf_counter() - t) * 1e3 / len(fields))
            t = time.perf_counter()
            to_batch(fields)
            many.append((time.perf_counter() - t) * 1e3 / len(fields))
        # the floor of any batched path that keeps probe rows: the batched probe forward alone (the
        # same GEMMs one at a time costs about as much per INR, so one_by_one / probe bounds the ratio)
        tpl = template_of(fields[0])
        probe = None
        if tpl is not None:
            pt = []
            for _ in range(max(2, args.repeats // 6)):
                t = time.perf_counter()
                tpl._batch_probe(fields)
                pt.append((time.perf_counter() - t) * 1e3 / len(fields))
            probe = statistics.median(pt)
        extra, nbytes = peak_extra_rss(name, args.preset)
        med = statistics.median(times)
        row = dict(arch=name, nodes=g.num_nodes, edges=g.num_edges, graph_bytes=nbytes,
                   median_ms=med, min_ms=min(times),
                   one_by_one_ms_per_inr=statistics.median(one), batched_ms_per_inr=statistics.median(many),
                   batched_speedup=statistics.median(one) / statistics.median(many),
                   probe_forward_ms_per_inr=probe,
                   batched_ceiling=statistics.median(one) / probe if probe else None,
                   peak_extra_bytes=extra, mem_ratio=extra / nbytes)
        rows.append(row)
        probe_s, ceiling_s = (f"{probe:.2f}", f"{row['batched_ceiling']:.2f}") if probe else ("-", "-")
        print(f"{name:<10} {g.num_nodes:>7} {g.num_edges:>7} {nbytes / 2**20:>9.2f} {med:>9.2f} "
              f"{row['min_ms']:>7.2f} {row['one_by_one_ms_per_inr']:>13.2f} "
              f"{row['batched_ms_per_inr']:>8.2f} {row['batched_speedup']:>5.2f} "
              f"{probe_s:>9} {ceiling_s:>9} "
              f"{extra / 2**20:>14.2f} "
              f"{row['mem_ratio']:>9.2f}")
    heavy = [r["arch"] for r in rows if r["mem_ratio"] > 2]
    slow_b = [r["arch"] for r in rows if r["batched_speedup"] < 5]
    capped = [r["arch"] for r in rows if r["batched_ceiling"] is not None and r["batched_ceiling"] < 5]
    print(f"goal batched >= 5x one at a time per INR: {'met' if not slow_b else 'missed by ' + ', '.join(slow_b)}"
          + (f" (out of reach with probe rows for {', '.join(capped)}: one at a time / the batched probe forward "
             f"alone < 5, column 'ceiling x')" if capped else "") + "; "
          f"goal memory <= 2x graph: {'met' if not heavy else 'missed by ' + ', '.join(heavy)}")
    side = reference_rows(refs, REF_FAMILIES, args.preset, args.ref_repeats) if refs else []
    if side:
        print(f"\nbeside the references: {args.ref_repeats} interleaved repeats, {args.threads} thread(s), "
              f"load {os.getloadavg()[0]:.2f}; ratio = fastest reference's time / ours, per repeat (min / median / max)")
        print(f"{'arch':<10} {'reference':<9} {'ref nodes':>9} {'ref edges':>9} {'ref ms med/min':>15} "
              f"{'ours ms med/min':>15} {'no probe ms':>11} {'x with probe rows':>19} {'x without':>17}")
        for r in side:
            w, wo, ref = r["with_probes"], r["without_probes"], r["reference"]
            print(f"{r['arch']:<10} {ref:<9} {r['ref_nodes']:>9} {r['ref_edges']:>9} "
                  f"{r['ms'][ref]:>7.3f}/{r['min_ms'][ref]:<7.3f} {r['ms']['ours']:>7.3f}/{r['min_ms']['ours']:<7.3f} "
                  f"{r['ms']['ours, no probe rows']:>11.3f} "
                  f"{w['min']:>5.2f} {w['median']:>5.2f} {w['max']:>5.2f}  {wo['min']:>5.2f} {wo['median']:>5.2f} {wo['max']:>5.2f}")
        slow = [r["arch"] for r in side if r["with_probes"]["median"] < 2]
        print(f"goal conversion with probe rows >= 2x the fastest reference (median ratio): "
              f"{'met' if not slow else 'missed by ' + ', '.join(slow)}")
    parts = {}
    if args.parts:
        for name in REF_FAMILIES:
            total, p = conversion_parts(make_field(name, args.preset), max(50, args.ref_repeats))
            parts[name] = dict(total_us=total, **p)
        print(f"\nwhere one to_graph spends its time (us, each part alone, min over repeats; load {os.getloadavg()[0]:.2f})")
        print(f"{'part':<22}" + "".join(f"{n:>9}" for n in parts))
        for k in PARTS + ("total_us",):
            print(f"{k:<22}" + "".join(f"{parts[n][k]:>9.0f}" for n in parts))
        ref = {r["arch"]: r["min_ms"][r["reference"]] * 1e3 for r in side}
        if ref:
            print(f"{'2x target (ref min/2)':<22}" + "".join(f"{ref[n] / 2 if n in ref else float('nan'):>9.0f}"
                                                           for n in parts))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(preset=args.preset, threads=args.threads, rows=rows, references=side, parts=parts), f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
