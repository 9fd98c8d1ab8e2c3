"""``gmn-inr train``: train the encoder on a zoo's cross-family pairs."""
from __future__ import annotations

import argparse
import sys

import torch

from gmn_inr.checkpoint import CheckpointError
from gmn_inr.cpu import tune_malloc
from gmn_inr.encoder import PRESETS as ENCODER_PRESETS
from gmn_inr.fields.activations import FUNCTIONS

from .config import TrainConfig
from .loop import train


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="INR zoo directory (gmn-inr zoo build)")
    p.add_argument("--out", required=True, help="output directory for checkpoints")
    p.add_argument("--preset", default="cpu", choices=list(ENCODER_PRESETS))
    p.add_argument("--loss", default="R+C", help="R | R+C | C | R+C+L2 | R+L2")
    p.add_argument("--lambda-c", type=float, default=None, help="override the contrastive weight")
    p.add_argument("--mu-l2", type=float, default=None, help="override the L2 alignment weight")
    p.add_argument("--function", default="radiance", choices=list(FUNCTIONS), help="which INRs to train on")
    p.add_argument("--unified", default=None, choices=list(FUNCTIONS[1:]), help="INRet unified decoder target")
    p.add_argument("--archs", default=None, help="comma-separated training architectures (default: MLP,TRI,HASH,OCT)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-pairs", type=int, default=None, help="pairs per step (preset default)")
    p.add_argument("--lr", type=float, default=None, help="one-cycle max learning rate (preset default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rays", type=int, default=None, help="rays per radiance INR per step (preset default)")
    p.add_argument("--samples", type=int, default=None, help="samples per ray (preset default)")
    p.add_argument("--points", type=int, default=None, help="query points per implicit INR per step (preset default)")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is faster when other processes share the cores)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 autocast of the decoders and rendering on cuda, fp32 on the CPU")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    from gmn_inr.atomic import ensure_writable_dir
    from gmn_inr.zoo import open_store
    from gmn_inr.zoo.dataset import PairDataset

    ensure_writable_dir(args.out)              # before any work, not after the first checkpoint's steps
    store = open_store(args.store)
    archs = tuple(args.archs.split(",")) if args.archs else None
    pairs = PairDataset(store, "train", function=args.function, **({"archs": archs} if archs else {}))
    given = {"batch_pairs": args.batch_pairs, "lr": args.lr, "rays_per_inr": args.rays,
             "samples_per_ray": args.samples, "points_per_inr": args.points}
    config = TrainConfig.for_preset(args.preset, loss=args.loss, contrastive_weight=args.lambda_c,
                                    l2_weight=args.mu_l2, unified=args.unified, steps=args.steps, seed=args.seed,
                                    ckpt_every=args.ckpt_every, device=args.device,
                                    precision=args.precision, **{k: v for k, v in given.items() if v is not None})
    if len(pairs) < config.batch_pairs:
        print(f"gmn-inr train: error: {args.store} has {len(pairs)} training pairs of {args.function!r} INRs in two "
              f"families; a batch of {config.batch_pairs} pairs needs at least that many", file=sys.stderr)
        return 2
    try:
        res = train(config, pairs, args.out, resume=not args.no_resume, progress=not args.no_progress)
    except CheckpointError as exc:
        print(f"gmn-inr train: error: {exc}", file=sys.stderr)
        return 2
    last = res.history[-1] if res.history else {}
    print(f"trained to step {res.step} in {res.seconds:.1f}s; last losses "
          + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k != "step") + f"; checkpoint {res.checkpoint}")
    return 0
