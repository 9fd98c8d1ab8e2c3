"""Conversion speed and memory of every family's parameter graph at the paper's sizes (Table 7).

    python benchmarks/convert_speed.py [--repeats 30] [--preset paper] [--batch 32] [--json results/convert_speed.json]

For each architecture (and TRI-xyz, a tri-plane fed raw xyz, the input GMN's ``arch_to_graph``
handles): nodes, edges, the graph's own bytes, the median conversion time over repeats (probe rows
included), the median per-INR time of converting ``--batch`` INRs of the architecture into one PyG
``Batch`` one at a time (``to_graph`` + ``Batch.from_data_list``) and at once (``graphs.to_batch``),
and the peak extra resident memory of one conversion (measured in a fresh forked process, so earlier
work does not hide it). Goals (issue 14): conversion at least 2x faster than the anchors' converters
(medians at 1 thread, issue 14: MLP gmnerf 2.0 ms, TRI gmnerf 4.6 ms, HASH gmnerf 3.4 ms, TRI-xyz
GMN 5.2 ms), i.e. at most half those; memory within 2x of the graph's tensors (issue 2).
``--smoke`` runs tiny sizes and few repeats (the test suite's check that the script runs).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time

import gmn_inr  # noqa: F401  (first: it shortens OpenMP's spin-wait before torch loads)
import torch

from gmn_inr.fields import ARCHITECTURES, arch_spec_for, build_field
from gmn_inr.fields.spec import RAW_XYZ
from graphs import to_batch, to_graph
from graphs.template import template_for, templatable

#: the faster anchor converter's median ms at the paper's sizes (issue 14; 1 thread)
ANCHOR_MS = {"MLP": 2.0, "TRI": 4.6, "HASH": 3.4, "TRI-xyz": 5.2}
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


def template_of(field):
    """The cached graph template of a built-in dense field (None for octrees and the like)."""
    if not templatable(field):
        return None
    return template_for(field, lambda: to_graph(field))


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
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repeats, batches of 4, no json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.preset, args.repeats, args.batch, args.json = "tiny", 2, 4, ""
    torch.set_num_threads(args.threads)
    rows = []
    print(f"preset={args.preset} threads={args.threads} repeats={args.repeats} batch={args.batch} "
          f"cpu_count={os.cpu_count()} load={os.getloadavg() if hasattr(os, 'getloadavg') else '?'}")
    print(f"{'arch':<10} {'nodes':>7} {'edges':>7} {'graph MiB':>9} {'median ms':>9} {'min ms':>7} {'anchor/ours':>11} "
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
        anchor = ANCHOR_MS.get(name) if args.preset == "paper" else None
        row = dict(arch=name, nodes=g.num_nodes, edges=g.num_edges, graph_bytes=nbytes,
                   median_ms=med, min_ms=min(times), anchor_ms=anchor,
                   anchor_speedup=anchor / med if anchor else None,
                   one_by_one_ms_per_inr=statistics.median(one), batched_ms_per_inr=statistics.median(many),
                   batched_speedup=statistics.median(one) / statistics.median(many),
                   probe_forward_ms_per_inr=probe,
                   batched_ceiling=statistics.median(one) / probe if probe else None,
                   peak_extra_bytes=extra, mem_ratio=extra / nbytes)
        rows.append(row)
        ratio = f"{row['anchor_speedup']:.2f}" if anchor else "-"
        probe_s, ceiling_s = (f"{probe:.2f}", f"{row['batched_ceiling']:.2f}") if probe else ("-", "-")
        print(f"{name:<10} {g.num_nodes:>7} {g.num_edges:>7} {nbytes / 2**20:>9.2f} {med:>9.2f} "
              f"{row['min_ms']:>7.2f} {ratio:>11} {row['one_by_one_ms_per_inr']:>13.2f} "
              f"{row['batched_ms_per_inr']:>8.2f} {row['batched_speedup']:>5.2f} "
              f"{probe_s:>9} {ceiling_s:>9} "
              f"{extra / 2**20:>14.2f} "
              f"{row['mem_ratio']:>9.2f}")
    heavy = [r["arch"] for r in rows if r["mem_ratio"] > 2]
    if args.preset == "paper":
        slow = [r["arch"] for r in rows if r["anchor_speedup"] is not None and r["anchor_speedup"] < 2]
        print(f"goal >= 2x the anchors' converters: {'met' if not slow else 'missed by ' + ', '.join(slow)}")
    slow_b = [r["arch"] for r in rows if r["batched_speedup"] < 5]
    capped = [r["arch"] for r in rows if r["batched_ceiling"] is not None and r["batched_ceiling"] < 5]
    print(f"goal batched >= 5x one at a time per INR: {'met' if not slow_b else 'missed by ' + ', '.join(slow_b)}"
          + (f" (out of reach with probe rows for {', '.join(capped)}: one at a time / the batched probe forward "
             f"alone < 5, column 'ceiling x')" if capped else "") + "; "
          f"goal memory <= 2x graph: {'met' if not heavy else 'missed by ' + ', '.join(heavy)}")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(preset=args.preset, threads=args.threads, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
