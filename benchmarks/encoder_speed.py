"""Encoder speed: the efficient GMN block against the plain one, and embedding throughput.

Measures, in one run on this machine:
1. the machine's float32 matmul rate (GFLOP/s);
2. forward+backward time of the 4 (or L) message-passing blocks and of the whole encoder, for
   the efficient block (project per node, gather per edge) and the plain block (concatenate
   ``(x_src, x_dst, e)`` per edge, then an MLP), with the plain block's weights copied from the
   efficient one so both compute the same function — the script checks that they do;
3. achieved GFLOP/s of each (matmul FLOPs counted by ``torch.utils.flop_counter``);
4. embedding throughput (INRs/s, graph conversion included) per family, under the ``cpu`` and
   ``paper`` presets (INR sizes and encoder sizes of that preset);
5. the block goal: one block at the paper's sizes (hidden 128, each family's Table 7 graph),
   plain against efficient, inference and forward+backward, medians of interleaved runs; goal
   met where the plain block takes at least 2x as long as the efficient block *as run*: on the
   graph the encoder gives it, one node per group of identical sources (``shared_sources``; the
   same graph for every family but hash grids), with its own pre-encoded node states; the plain
   block runs on every node, as the reference implementations do. Matmul FLOPs of both forms are printed
   beside it: per block the efficient form does ``3E + 4N (+ 2R)`` ``H x H`` products (E edges,
   N nodes, R nodes that receive), the plain one ``6E + 3N``, so the FLOP ratio is below 2
   wherever nodes are not negligible against edges (hash grids: N ~ 0.4 E).

Prints a table and writes ``results/encoder_speed.json``. ``--quick`` measures less.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import gmn_inr  # noqa: F401  (first: it shortens OpenMP's spin-wait before torch loads)
import torch

from gmn_inr.embedder import Embedder
from gmn_inr.blocks import shared_sources
from gmn_inr.encoder import ConcatGMNLayer, GMNEncoder, GMNLayer, batch_graphs
from gmn_inr.fields import TRAINING_ARCHITECTURES, arch_spec_for, build_field
from graphs import to_graph

FAMILIES = TRAINING_ARCHITECTURES         # one training architecture per family; --plugin adds families


def best_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_rate(repeats: int) -> dict:
    """GFLOP/s of a square 1024 product and of the encoder's typical [E, H] @ [H, H] shape."""
    out = {}
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    t = best_time(lambda: a @ b, repeats)
    out["square_1024"] = 2 * 1024 ** 3 / t / 1e9
    e, w = torch.randn(50_000, 128), torch.randn(128, 128)
    t = best_time(lambda: e @ w, repeats)
    out["edges_50k_x128"] = 2 * 50_000 * 128 * 128 / t / 1e9
    return out


def count_flops(fn) -> int:
    from torch.utils import flop_counter

    # the efficient block accumulates into its gathered terms with in-place addmm_, which the
    # counter does not know by default (it would count the efficient block's forward as ~0)
    def addmm_flop(inp, a, b, *args, out_shape=None, **kwargs):        # shapes (the counter passes those)
        return 2 * a[0] * a[1] * b[1]

    mapping = {torch.ops.aten.addmm_: addmm_flop}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as fc:
        fn()
    return fc.get_total_flops()


def blocks_only(enc: GMNEncoder, batch):
    """A closure running only the message-passing blocks (forward + backward) on fixed inputs."""
    x, ei = batch.x, batch.edge_index
    with torch.no_grad():
        # the encoder reads probe features by default: encode_nodes needs them (calling it
        # without them crashed the script)
        probe = getattr(batch, "probe", None) if enc.node_probe is not None else None
        h0 = enc.encode_nodes(x, probe, getattr(batch, "probe_index", None) if probe is not None else None)
        e0 = enc.encode_edges(batch.edge_attr)
    src, dst = ei[0], ei[1]
    inv = (1.0 / torch.bincount(dst, minlength=x.shape[0]).clamp_min(1).float()).unsqueeze(1)
    h0.requires_grad_(True)
    e0.requires_grad_(True)

    def run():
        h, e = h0, e0
        for blk in enc.blocks:
            h, e = blk(h, e, src, dst, inv)
        (h.sum() + e.sum()).backward()
        return h, e
    return run


def whole(enc: GMNEncoder, batch):
    def run():
        z = enc(batch)
        z.sum().backward()
        return z
    return run


def compare(preset: str, family: str, repeats: int) -> dict:
    torch.manual_seed(0)
    field = build_field(arch_spec_for(family, 4, preset))
    graph = to_graph(field)
    batch = batch_graphs([graph])
    eff = GMNEncoder.from_preset(preset)
    plain = eff.to_plain()
    with torch.no_grad():
        diff = (eff(batch) - plain(batch)).abs().max().item()
        scale = eff(batch).abs().max().item()
    row = {"preset": preset, "family": family, "nodes": graph.num_nodes, "edges": graph.num_edges,
           "hidden": eff.config.hidden, "layers": eff.config.layers, "embed_dim": eff.config.embed_dim,
           "max_abs_diff": diff, "max_abs_output": scale}
    for what, make in (("blocks", blocks_only), ("encoder", whole)):
        fns = {name: make(enc, batch) for name, enc in (("efficient", eff), ("plain", plain))}
        flops = {name: count_flops(fn) for name, fn in fns.items()}
        # alternate the two variants and keep each one's best time, so load from other processes
        # on the shared cores hits both alike
        best = {name: float("inf") for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                best[name] = min(best[name], best_time(fn, 1, warmup=0))
        for name in fns:
            row[f"{what}_{name}_s"] = best[name]
            row[f"{what}_{name}_gflops"] = flops[name] / best[name] / 1e9
            row[f"{what}_{name}_gflop"] = flops[name] / 1e9
        row[f"{what}_speedup"] = row[f"{what}_plain_s"] / row[f"{what}_efficient_s"]
    return row


def throughput(preset: str, family: str, n: int, batch_size: int) -> dict:
    torch.manual_seed(0)
    fields = [build_field(arch_spec_for(family, 4, preset)) for _ in range(n)]
    emb = Embedder(GMNEncoder.from_preset(preset), batch_size=batch_size)
    emb.embed(fields[:1])                                     # warm-up
    t = time.perf_counter()
    graphs = [to_graph(f) for f in fields]
    t_conv = time.perf_counter() - t
    t = time.perf_counter()
    emb.embed(graphs)
    t_enc = time.perf_counter() - t
    return {"preset": preset, "family": family, "n": n, "edges_per_inr": graphs[0].num_edges,
            "convert_s_per_inr": t_conv / n, "encode_s_per_inr": t_enc / n,
            "inrs_per_s": n / (t_conv + t_enc), "inrs_per_s_encoder_only": n / t_enc}


def batch_size_table(preset: str, device: str, sizes: list, repeats: int) -> list:
    """INRs/s of the ``preset`` encoder embedding cached graphs (batching and the copy to the device
    included) at each batch size, for both block forms, and plain time / efficient time. Every INR
    is a distinct random field: identical graphs would merge nodes across the batch
    (``shared_sources``) and flatter the figure."""
    rows = []
    for fam in FAMILIES:
        torch.manual_seed(0)
        graphs = [to_graph(build_field(arch_spec_for(fam, 4, preset))) for _ in range(max(sizes))]
        enc = GMNEncoder.from_preset(preset)
        embs = {form: Embedder(enc, device=device, block_form=form) for form in ("efficient", "plain")}
        for b in sizes:
            row = {"preset": preset, "family": fam, "batch": b, "edges_per_inr": graphs[0].num_edges}
            for form, emb in embs.items():
                try:      # embed returns CPU tensors: the copy back waits for the device's kernels
                    row[f"{form}_s"] = best_time(lambda: emb.embed(graphs[:b], batch_size=b), repeats)
                    row[f"{form}_inrs_per_s"] = b / row[f"{form}_s"]
                except torch.cuda.OutOfMemoryError:
                    row[f"{form}_s"] = row[f"{form}_inrs_per_s"] = None
                    torch.cuda.empty_cache()
            ok = row["efficient_s"] is not None and row["plain_s"] is not None
            row["plain_over_efficient"] = row["plain_s"] / row["efficient_s"] if ok else None
            rows.append(row)
            fmt = lambda v, spec: format(v, spec) if v is not None else "OOM"   # noqa: E731
            print(f"{preset:6} {fam:6} {b:6d} {fmt(row['efficient_inrs_per_s'], '12.1f'):>12} "
                  f"{fmt(row['plain_inrs_per_s'], '10.1f'):>10} {fmt(row['plain_over_efficient'], '8.2f'):>8}")
    return rows


GOAL_RATIO = 2.0      #: the block goal: the plain block takes at least this many times the efficient one


def _synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a wall-clock time on a GPU is the work's, not its launch's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def block_goal(family: str, preset: str, hidden: int, repeats: int, device: str = "cpu") -> dict:
    """One block, plain against efficient (same function), on ``family``'s graph at ``preset``:
    median ms of inference (no grad) and of forward+backward, interleaved so load hits both."""
    dev = torch.device(device)
    torch.manual_seed(0)
    graph = to_graph(build_field(arch_spec_for(family, 4, preset)))
    src, dst = graph.edge_index.to(dev)
    n, n_edges = graph.num_nodes, graph.num_edges
    inv_deg = (1.0 / torch.bincount(dst, minlength=n).clamp_min(1).float()).unsqueeze(1).to(dev)
    # the block's inputs as the encoder makes them (its pre-encoder of this graph), so nodes that
    # start identical are identical here too
    enc = GMNEncoder.from_preset(preset, hidden=hidden).to(dev)
    with torch.no_grad():
        x = enc.encode_nodes(graph.x.to(dev), graph.probe.to(dev), graph.probe_index.to(dev))
        e = enc.encode_edges(graph.edge_attr.to(dev))
    eff = GMNLayer(hidden)
    plain = ConcatGMNLayer.from_efficient(eff).to(dev)
    eff = eff.to(dev)
    # "as run": what the encoder gives the efficient block, one node per group of identical
    # sources (gmn_inr.blocks.shared_sources); the plain block, as the reference implementations
    # do, runs on every node
    merged = shared_sources(graph.x.to(dev), dst, graph.probe_index.to(dev))
    graphs = {"same": (x, src, dst, inv_deg)}
    if merged is None:                    # nothing merges: the graph as run is the same graph
        keep, node_map = torch.arange(n, device=dev), torch.arange(n, device=dev)
        graphs["run"] = graphs["same"]
    else:
        keep, node_map = merged
        graphs["run"] = (x.index_select(0, keep), node_map.index_select(0, src), node_map.index_select(0, dst),
                         inv_deg.index_select(0, keep))
    grads = {k: (g[0].clone().requires_grad_(), e.clone().requires_grad_()) for k, g in graphs.items()}

    def infer(layer, which="same"):
        xi, s, d, inv = graphs[which]
        with torch.no_grad():
            return layer(xi, e, s, d, inv)

    def train(layer, which="same"):
        xg, eg = grads[which]
        _, s, d, inv = graphs[which]
        xo, eo = layer(xg, eg, s, d, inv)
        (xo.sum() + eo.sum()).backward()

    with torch.no_grad():
        (xa, ea), (xb, eb), (xm, em) = infer(eff), infer(plain), infer(eff, "run")
        diff = max((xa - xb).abs().max().item(), (ea - eb).abs().max().item() if n_edges else 0.0,
                   (xm.index_select(0, node_map) - xb).abs().max().item(), (em - eb).abs().max().item() if n_edges else 0.0)
    row = {"preset": preset, "family": family, "device": str(dev), "hidden": hidden, "nodes": n, "edges": n_edges,
           "nodes_as_run": int(keep.shape[0]),
           "receivers": int((torch.bincount(dst, minlength=n) > 0).sum()), "max_abs_diff": diff}
    # where nothing merges the graph as run is the same graph: one efficient measurement serves both
    variants = (("efficient", eff, "same"), ("plain", plain, "same")) + (
        (("efficient_run", eff, "run"),) if merged is not None else ())
    for mode, fn in (("infer", infer), ("train", train)):
        times = {name: [] for name, _, _ in variants}
        for name, layer, which in variants:
            fn(layer, which)                                      # warm-up
            row[f"{mode}_{name}_gflop"] = count_flops(lambda: fn(layer, which)) / 1e9
        for _ in range(repeats):
            for name, layer, which in variants:
                _synchronize(dev)
                t = time.perf_counter()
                fn(layer, which)
                _synchronize(dev)
                times[name].append(time.perf_counter() - t)
        for name in times:
            row[f"{mode}_{name}_ms"] = statistics.median(times[name]) * 1e3
        if merged is None:
            row[f"{mode}_efficient_run_ms"] = row[f"{mode}_efficient_ms"]
            row[f"{mode}_efficient_run_gflop"] = row[f"{mode}_efficient_gflop"]
        row[f"{mode}_ratio"] = row[f"{mode}_plain_ms"] / row[f"{mode}_efficient_ms"]
        row[f"{mode}_flop_ratio"] = row[f"{mode}_plain_gflop"] / row[f"{mode}_efficient_gflop"]
        row[f"{mode}_ratio_as_run"] = row[f"{mode}_plain_ms"] / row[f"{mode}_efficient_run_ms"]
        row[f"{mode}_flop_ratio_as_run"] = row[f"{mode}_plain_gflop"] / row[f"{mode}_efficient_run_gflop"]
        row[f"{mode}_goal_met"] = row[f"{mode}_ratio_as_run"] >= GOAL_RATIO
    return row


def print_block_goal(rows: list) -> None:
    print(f"\none block, plain vs efficient (block goal: plain >= {GOAL_RATIO:g}x efficient as run), medians:")
    print(f"{'preset':6} {'family':6} {'H':>3} {'nodes':>6} {'as run':>6} {'edges':>6} {'recv':>5} | "
          f"{'infer plain':>11} {'eff':>7} {'x':>5} {'FLOPx':>5} {'run':>7} {'x':>5} {'FLOPx':>5} {'goal':>4} | "
          f"{'train plain':>11} {'eff':>7} {'x':>5} {'FLOPx':>5} {'run':>7} {'x':>5} {'FLOPx':>5} {'goal':>4}")
    for r in rows:
        cells = []
        for mode in ("infer", "train"):
            cells.append(f"{r[f'{mode}_plain_ms']:9.1f}ms {r[f'{mode}_efficient_ms']:5.1f}ms {r[f'{mode}_ratio']:5.2f} "
                         f"{r[f'{mode}_flop_ratio']:5.2f} {r[f'{mode}_efficient_run_ms']:5.1f}ms "
                         f"{r[f'{mode}_ratio_as_run']:5.2f} {r[f'{mode}_flop_ratio_as_run']:5.2f} "
                         f"{'yes' if r[f'{mode}_goal_met'] else 'NO':>4}")
        print(f"{r['preset']:6} {r['family']:6} {r['hidden']:3d} {r['nodes']:6d} {r['nodes_as_run']:6d} {r['edges']:6d} "
              f"{r['receivers']:5d} | " + " | ".join(cells))
    print("eff: the efficient block on the same graph; run: on the graph the encoder gives it (one node per group "
          "of identical sources, gmn_inr.blocks.shared_sources), against the plain block on every node.")
    print("FLOPx: plain / efficient matmul FLOPs (torch.utils.flop_counter); per block 6E + 3N against "
          "3E + 4N + 2R products of H x H, below 2 wherever N is not negligible against E")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and INRs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/encoder_speed.json")
    ap.add_argument("--plugin", action="append", default=[], help="a file or module registering families")
    ap.add_argument("--smoke", action="store_true", help="tiny preset only, 1 repeat, 2 INRs (the suite's check)")
    ap.add_argument("--goal-only", action="store_true",
                    help="only the one-block plain-vs-efficient table at the paper's sizes (the block goal)")
    ap.add_argument("--device", default="cpu",
                    help="where the one-block and batch-size tables run (cpu | cuda); the others run on the CPU")
    ap.add_argument("--batch-sizes", default=None,
                    help="comma-separated batch sizes of the INRs/s table (default 1..1024 on a GPU, 1..64 on the CPU)")
    ap.add_argument("--batch-only", action="store_true", help="only the INRs/s-per-batch-size table")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    global FAMILIES
    from gmn_inr.bench import tune_malloc
    from gmn_inr.fields import architectures, load_plugins

    load_plugins(args.plugin)
    FAMILIES = architectures(training=True)

    tune_malloc()                                   # both variants run with the same allocator settings
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.smoke else 3 if args.quick else 5
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load average before: {load}")
    mm = matmul_rate(1 if args.smoke else 5)
    print(f"machine matmul rate: {mm['square_1024']:.1f} GFLOP/s (1024^2 square), "
          f"{mm['edges_50k_x128']:.1f} GFLOP/s ([50000,128] @ [128,128])")

    sizes = ([int(x) for x in args.batch_sizes.split(",")] if args.batch_sizes else [1, 2] if args.smoke
             else [1, 4, 16, 64, 256, 1024] if args.device != "cpu" else [1, 4, 16, 64])
    bs_preset = "tiny" if args.smoke else "cpu"
    print(f"\nembedding INRs/s by batch size on {args.device}, {bs_preset} preset, graphs cached "
          f"(x: plain time / efficient time; the embedder's auto form is the "
          f"{'plain' if args.device != 'cpu' else 'efficient'} one here):")
    print(f"{'preset':6} {'family':6} {'batch':>6} {'efficient/s':>12} {'plain/s':>10} {'x':>8}")
    by_batch = batch_size_table(bs_preset, args.device, sizes, repeats)
    if args.batch_only:
        _write(args.out, {"torch": torch.__version__, "device": args.device, "batch_sizes": by_batch})
        return 0

    goal_repeats = 1 if args.smoke else 5 if args.quick else 9
    goal_preset, goal_hidden = ("tiny", 16) if args.smoke else ("paper", 128)
    if args.device != "cpu":
        print(f"one-block table on {args.device}: "
              f"{torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith('cuda') else ''}")
    goal = [block_goal(f, goal_preset, goal_hidden, goal_repeats, args.device) for f in FAMILIES]
    print_block_goal(goal)
    if args.goal_only:
        _write(args.out, {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_average_before": load,
                          "device": args.device, "batch_sizes": by_batch,
                          "matmul_gflops": mm, "block_goal": goal,
                          "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None})
        return 0

    rows = []
    presets = ("tiny",) if args.smoke else ("cpu", "paper")
    if args.smoke:
        cases = [("tiny", f) for f in FAMILIES]
    else:
        cases = [("cpu", f) for f in FAMILIES] + [("paper", f) for f in (("MLP", "HASH") if args.quick else FAMILIES)]
    print(f"\n{'preset':6} {'family':6} {'edges':>7} | {'blocks eff':>10} {'plain':>8} {'x':>5} {'GF/s eff':>8} "
          f"{'plain':>6} | {'encoder eff':>11} {'plain':>8} {'x':>5} {'GF/s eff':>8} {'plain':>6} | max|diff|")
    for preset, fam in cases:
        r = compare(preset, fam, repeats)
        rows.append(r)
        print(f"{preset:6} {fam:6} {r['edges']:7d} | {r['blocks_efficient_s']*1e3:8.1f}ms {r['blocks_plain_s']*1e3:6.1f}ms "
              f"{r['blocks_speedup']:5.2f} {r['blocks_efficient_gflops']:8.1f} {r['blocks_plain_gflops']:6.1f} | "
              f"{r['encoder_efficient_s']*1e3:9.1f}ms {r['encoder_plain_s']*1e3:6.1f}ms {r['encoder_speedup']:5.2f} "
              f"{r['encoder_efficient_gflops']:8.1f} {r['encoder_plain_gflops']:6.1f} | {r['max_abs_diff']:.1e}")
        assert r["max_abs_diff"] <= 1e-4 * max(1.0, r["max_abs_output"]), "efficient and plain blocks disagree"

    tp = []
    print(f"\nembedding throughput (inference, graph conversion included):")
    print(f"{'preset':6} {'family':6} {'edges':>7} {'INRs/s':>8} {'encoder only':>13} {'convert ms':>11}")
    for preset in presets:
        for fam in FAMILIES:
            n = 2 if args.smoke else (8 if preset == "cpu" else 4) if args.quick else (32 if preset == "cpu" else 8)
            r = throughput(preset, fam, n, batch_size=8)
            tp.append(r)
            print(f"{preset:6} {fam:6} {r['edges_per_inr']:7d} {r['inrs_per_s']:8.1f} {r['inrs_per_s_encoder_only']:13.1f} "
                  f"{r['convert_s_per_inr']*1e3:11.1f}")

    _write(args.out, {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_average_before": load,
                      "device": args.device, "batch_sizes": by_batch,
                      "matmul_gflops": mm, "block_goal": goal, "block_comparison": rows, "throughput": tp,
                      "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None})
    return 0


def _write(path, result: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
