"""Conversion speed and memory of every family's parameter graph at the paper's sizes (Table 7).

    python benchmarks/convert_speed.py [--repeats 30] [--preset paper] [--json results/convert_speed.json]

For each architecture: nodes, edges, the graph's own bytes, the median conversion time over
repeats, and the peak extra resident memory of one conversion (measured in a fresh forked
process, so earlier work does not hide it). Goals (issue 2): under 10 ms per family, memory
within 2x of the graph's tensors, the hash graph O(N(T+F)).
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

import torch

from gmn_inr.fields import ARCHITECTURES, arch_spec_for, build_field
from graphs import to_graph


def make_field(name: str, preset: str):
    torch.manual_seed(0)
    spec = arch_spec_for(name, 4, preset)
    if spec.family == "octree":
        return build_field(spec, occupancy=lambda p: p.norm(dim=-1) < 0.6)
    return build_field(spec)


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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"preset={args.preset} threads={args.threads} repeats={args.repeats} cpu_count={os.cpu_count()}")
    print(f"{'arch':<10} {'nodes':>7} {'edges':>7} {'graph MiB':>9} {'median ms':>9} {'min ms':>7} "
          f"{'peak extra MiB':>14} {'mem/graph':>9}")
    for name in ARCHITECTURES:
        field = make_field(name, args.preset)
        g = to_graph(field)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            to_graph(field)
            times.append((time.perf_counter() - t) * 1e3)
        extra, nbytes = peak_extra_rss(name, args.preset)
        row = dict(arch=name, nodes=g.num_nodes, edges=g.num_edges, graph_bytes=nbytes,
                   median_ms=statistics.median(times), min_ms=min(times), peak_extra_bytes=extra,
                   mem_ratio=extra / nbytes)
        rows.append(row)
        print(f"{name:<10} {g.num_nodes:>7} {g.num_edges:>7} {nbytes / 2**20:>9.2f} {row['median_ms']:>9.2f} "
              f"{row['min_ms']:>7.2f} {extra / 2**20:>14.2f} {row['mem_ratio']:>9.2f}")
    slow = [r["arch"] for r in rows if r["median_ms"] >= 10]
    heavy = [r["arch"] for r in rows if r["mem_ratio"] > 2]
    print(f"goal <10 ms: {'met' if not slow else 'missed by ' + ', '.join(slow)}; "
          f"goal memory <= 2x graph: {'met' if not heavy else 'missed by ' + ', '.join(heavy)}")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(preset=args.preset, threads=args.threads, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
