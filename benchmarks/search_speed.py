"""Search figures for a large synthetic store: embed INRs/s, index build time, query latency, and the
recall of the approximate (FAISS HNSW) index against exact search.

    python benchmarks/search_speed.py [--n 100000] [--real 1024] [--preset cpu] [--json results/search_speed.json]

The store: ``--real`` cheap INRs (random tiny MLP / TRI / HASH / OCT fields) are converted and embedded
by a GMN encoder (``--preset``, random weights: the figures are about speed, not quality), which
measures embed INRs/s; the ``--n`` indexed embeddings are generated from those encoder embeddings
(a random convex combination of two of them plus 5% noise), so they have the encoder's
distribution without embedding ``--n`` INRs on this machine. Exact search is torch (chunked matrix
product + top-k); ``faiss-flat`` and ``faiss-hnsw`` need ``faiss-cpu`` (``pip install -e ".[search]"``).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import gmn_inr  # noqa: F401  (first: it shortens OpenMP's spin-wait before torch loads)
import torch

from gmn_inr.embedder import Embedder
from gmn_inr.encoder import GMNEncoder
from gmn_inr.fields import arch_spec_for, build_field
from gmn_inr.search import SearchIndex, build_index, faiss_available
from graphs import to_graph

ROOT = Path(__file__).resolve().parents[1]


def cheap_inrs(n: int, seed: int = 0):
    torch.manual_seed(seed)
    archs = ("MLP", "TRI", "HASH", "OCT")
    for i in range(n):
        spec = arch_spec_for(archs[i % 4], 4, "tiny")
        yield build_field(spec, occupancy=lambda p: p.norm(dim=-1) < 0.6) if spec.family == "octree" else build_field(spec)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="embeddings in the index")
    ap.add_argument("--real", type=int, default=1024, help="INRs actually converted and embedded")
    ap.add_argument("--preset", default="cpu", choices=("tiny", "cpu", "paper"))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="results/search_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import faiss
        faiss.omp_set_num_threads(args.threads)
    except Exception:
        pass
    out: dict = {"meta": {"n": args.n, "real_inrs": args.real, "preset": args.preset, "queries": args.queries,
                          "k": args.k, "threads": args.threads, "faiss": faiss_available(),
                          "machine": platform.processor() or platform.machine(),
                          "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                   capture_output=True, text=True).stdout.strip()}}
    # 1. embed cheap INRs: conversion + encoder, INRs/s
    emb = Embedder(GMNEncoder.from_preset(args.preset), batch_size=32)
    fields = list(cheap_inrs(args.real))
    emb.embed([to_graph(f) for f in fields[:8]])                     # warm-up (first calls compile and allocate)
    t = time.perf_counter()
    graphs = [to_graph(f) for f in fields]
    t_conv = time.perf_counter() - t
    t = time.perf_counter()
    real = emb.embed(graphs)
    t_enc = time.perf_counter() - t
    out["embed"] = {"inrs_per_s": args.real / (t_conv + t_enc), "convert_s": t_conv, "encode_s": t_enc,
                    "dim": int(real.shape[1])}
    # 2. the synthetic store: convex pairs of real embeddings plus noise
    g = torch.Generator().manual_seed(1)
    a, b = torch.randint(args.real, (args.n,), generator=g), torch.randint(args.real, (args.n,), generator=g)
    w = torch.rand(args.n, 1, generator=g)
    z = w * real[a] + (1 - w) * real[b]
    z = z + 0.05 * real.std(0) * torch.randn(z.shape, generator=g)
    keys = [f"synthetic{i:07d}/radiance/MIX" for i in range(args.n)]
    q = z[torch.randperm(args.n, generator=g)[:args.queries]] + 0.01 * real.std(0) * torch.randn(args.queries, z.shape[1], generator=g)
    kinds = ["exact"] + (["faiss-flat", "faiss-hnsw"] if faiss_available() else [])
    out["index"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref = None
        for kind in kinds:
            t = time.perf_counter()
            build_index(z, keys, Path(tmp) / kind, kind=kind)
            build_s = time.perf_counter() - t
            t = time.perf_counter()
            idx = SearchIndex(Path(tmp) / kind)
            open_s = time.perf_counter() - t
            idx.search(q[:4], args.k)                                    # warm-up
            t = time.perf_counter()
            _, rows = idx.search(q, args.k)
            batch_s = time.perf_counter() - t
            t = time.perf_counter()
            for i in range(min(50, args.queries)):
                idx.search(q[i:i + 1], args.k)
            single_ms = (time.perf_counter() - t) / min(50, args.queries) * 1e3
            if ref is None:
                ref = rows
            recall = float(sum(len(set(r.tolist()) & set(e.tolist())) for r, e in zip(rows, ref)) / ref.numel())
            out["index"][kind] = {"build_s": build_s, "open_s": open_s, "query_ms_single": single_ms,
                                  "query_ms_batched": batch_s / args.queries * 1e3,
                                  f"recall@{args.k}_vs_exact": recall}
    print(f"search_speed: {args.n} embeddings ({out['embed']['dim']}-d), commit {out['meta']['commit']}, "
          f"{args.threads} threads, faiss {'yes' if out['meta']['faiss'] else 'no'}")
    print(f"  embed: {out['embed']['inrs_per_s']:.1f} INRs/s ({args.real} tiny INRs, {args.preset} encoder, "
          f"conversion {t_conv:.1f}s + encoder {t_enc:.1f}s)")
    for kind, r in out["index"].items():
        print(f"  {kind:10s} build {r['build_s']:7.2f}s  open {r['open_s']:5.2f}s  query {r['query_ms_single']:8.3f} ms "
              f"(batched {r['query_ms_batched']:7.3f} ms/query)  recall@{args.k} vs exact "
              f"{r[f'recall@{args.k}_vs_exact']:.4f}")
    if args.json:
        p = ROOT / args.json if not Path(args.json).is_absolute() else Path(args.json)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
