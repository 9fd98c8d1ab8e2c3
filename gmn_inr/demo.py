"""``gmn-inr demo``: convert one INR of every architecture and print its parameter graph."""
from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="paper", choices=("paper", "cpu", "tiny"),
                        help="architecture scale (paper = Table 7)")
    parser.add_argument("--out-dim", type=int, default=4, help="4 = radiance field, 1 = sdf/udf/occupancy")


def run(args: argparse.Namespace) -> int:
    import torch

    from gmn_inr.fields import ARCHITECTURES, arch_spec_for, build_field
    from graphs import to_graph

    torch.manual_seed(0)
    sphere = lambda p: p.norm(dim=-1) < 0.6  # noqa: E731  (octrees store only occupied voxels)
    print(f"{'architecture':<12} {'family':<9} {'params':>8} {'nodes':>8} {'edges':>8} {'KiB':>8} {'ms':>6}")
    for name in ARCHITECTURES:
        spec = arch_spec_for(name, args.out_dim, args.preset)
        field = build_field(spec, occupancy=sphere) if spec.family == "octree" else build_field(spec)
        t = time.perf_counter()
        g = to_graph(field)
        ms = (time.perf_counter() - t) * 1e3
        n = sum(p.numel() for p in field.parameters())
        print(f"{name:<12} {spec.family:<9} {n:>8} {g.num_nodes:>8} {g.num_edges:>8} {g.nbytes() / 1024:>8.0f} {ms:>6.1f}")
    return 0
