"""Training the GMN encoder end to end (``gmn-inr train`` and :func:`train`): the public names.

The code lives in :mod:`gmn_inr.training` (``config``: :class:`TrainConfig`, the schedule and
seeds; ``model``: :class:`GMNModel`, :func:`load_model`; ``loop``: :func:`train`,
:func:`evaluate`; ``cli``) and :mod:`gmn_inr.checkpoint` (checkpoints, shared with the
embedder). ``python -m gmn_inr.train STORE --out DIR`` is ``gmn-inr train``.
"""
from __future__ import annotations

import argparse
import sys

from gmn_inr.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, CHECKPOINT_VERSION, CheckpointError,
                                load_optimizer, load_state_strict, read_checkpoint, save_checkpoint)
from gmn_inr.cpu import tune_malloc
from gmn_inr.training.cli import add_arguments, run
from gmn_inr.training.config import EVAL_SEED, INIT_SEED_SALT, TrainConfig, one_cycle_lr, seed_of
from gmn_inr.training.loop import TrainResult, batch_indices, evaluate, functions_in, train
from gmn_inr.training.model import GMNModel, load_model
from gmn_inr.zoo.dataset import pairs_from_records

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "CHECKPOINT_VERSION", "CheckpointError", "EVAL_SEED", "GMNModel",
    "INIT_SEED_SALT", "TrainConfig", "TrainResult", "add_arguments", "batch_indices", "evaluate", "functions_in",
    "load_model", "load_optimizer", "load_state_strict", "one_cycle_lr", "pairs_from_records", "read_checkpoint",
    "run", "save_checkpoint", "seed_of", "train", "tune_malloc",
]

if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="gmn-inr train")
    add_arguments(ap)
    sys.exit(run(ap.parse_args()))
