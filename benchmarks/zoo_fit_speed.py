"""INRs fitted per second per family: batched (vmap over stacked parameters) vs one at a time.

    python benchmarks/zoo_fit_speed.py [--batch 16] [--steps 100] [--points 768]
        [--preset cpu] [--function radiance] [--threads 2] [--out results.json]

Both paths run the same :func:`gmn_inr.zoo.fit.fit_batch` code (same steps, points,
optimiser and gate), the "single" path with batches of one object in a Python loop, so
the difference is batching alone. Batching buys little on a 2-core CPU (docs/reference.md,
"Batched fitting"; it is what makes a GPU worth it); this prints what it buys here.
"""
from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16, help="objects fitted together (and one at a time)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--points", type=int, default=768)
    ap.add_argument("--preset", default="cpu", choices=("tiny", "cpu", "paper"))
    ap.add_argument("--function", default="radiance", choices=("radiance", "sdf", "udf", "occupancy"))
    ap.add_argument("--archs", default=None, help="comma-separated architectures (default: every registered "
                                                  "family's training architectures)")
    ap.add_argument("--plugin", action="append", default=[], help="a file or module registering families")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args(argv)

    import torch

    from gmn_inr.bench import set_up_cpu
    from gmn_inr.fields import architectures, arch_spec_for, load_plugins, out_dim_of
    from gmn_inr.zoo.fit import FitConfig, fit_batch, fit_one_at_a_time, prepare_samples
    from gmn_inr.zoo.shapes import CLASSES, make_shape

    set_up_cpu()
    load_plugins(args.plugin)
    archs = args.archs.split(",") if args.archs else architectures(training=True)
    torch.set_num_threads(args.threads)
    cfg = FitConfig(steps=args.steps, points=args.points, pool=16384, surface=1024, gate_res=32, gate_view=24,
                    gate_view_samples=32)
    shapes = [make_shape(CLASSES[i % len(CLASSES)], i) for i in range(args.batch)]
    samples = [prepare_samples(s, cfg, i) for i, s in enumerate(shapes)]
    rows = []
    print(f"{args.batch} {args.function} INRs per architecture, {args.steps} steps x {args.points} points, "
          f"preset {args.preset}, {torch.get_num_threads()} threads")
    print(f"{'arch':8s} {'family':9s} {'batched INR/s':>14s} {'single INR/s':>13s} {'speed-up':>9s} "
          f"{'pass b/s':>9s}")
    for arch in archs:
        spec = arch_spec_for(arch, out_dim_of(args.function), args.preset)
        t0 = time.perf_counter()
        rb = fit_batch(spec, args.function, samples, cfg)
        tb = time.perf_counter() - t0
        t0 = time.perf_counter()
        rs = fit_one_at_a_time(spec, args.function, samples, cfg)
        ts = time.perf_counter() - t0
        row = {"arch": arch, "family": spec.family, "n": args.batch, "batched_s": round(tb, 2),
               "single_s": round(ts, 2), "batched_inrs_per_s": round(args.batch / tb, 3),
               "single_inrs_per_s": round(args.batch / ts, 3), "speedup": round(ts / tb, 2),
               "pass_batched": sum(r.passed for r in rb), "pass_single": sum(r.passed for r in rs)}
        rows.append(row)
        print(f"{arch:8s} {spec.family:9s} {row['batched_inrs_per_s']:14.2f} {row['single_inrs_per_s']:13.2f} "
              f"{row['speedup']:8.2f}x {row['pass_batched']:4d}/{row['pass_single']:<4d}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
