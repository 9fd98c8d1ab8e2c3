"""Checkpoints: safetensors tensors + JSON metadata, written atomically, never unpickled.

Shared by training (which writes and resumes them) and inference (:mod:`gmn_inr.embedder`
reads the encoder out of them), so that embedding does not depend on the training code.
``OUT/checkpoint.safetensors`` holds ``model/<name>`` (the model's state dict) and
``optim/<param id>/<state>`` (optimizer moments) tensors, and the metadata ``format``,
``version``, ``step``, ``config`` (TrainConfig JSON), ``functions``, ``encoder`` (encoder
config JSON), ``optim_groups``, ``history`` (the loss history, JSON) and ``sha256`` (a checksum of
every tensor and every other metadata entry, verified on read: a flipped bit is a
:class:`CheckpointError` naming the file, not a silently wrong model). The one file is the whole
checkpoint, written to a temporary file and moved into place, so an interruption never leaves half
of one; ``OUT/checkpoint.json`` is a convenience copy of the facts for people, derived from it
afterwards (a resumed run reads the history from the safetensors file).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from gmn_inr.atomic import atomic_write_bytes, fault_point, safetensors_bytes, tensors_digest

CHECKPOINT_FORMAT = "gmn_inr.checkpoint"
CHECKPOINT_VERSION = "1"
CHECKPOINT_NAME = "checkpoint.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: foreign file, wrong format, wrong shapes, failed checksum."""


def checkpoint_digest(meta: dict, tensors: dict) -> str:
    """sha256 over the tensors (:func:`gmn_inr.atomic.tensors_digest`) and every metadata entry but
    ``sha256`` itself, in key order."""
    h = hashlib.sha256(tensors_digest(tensors).encode())
    for k in sorted(meta):
        if k != "sha256":
            h.update(f"\0{k}\0{meta[k]}".encode())
    return h.hexdigest()


def checkpoint_bytes(tensors: dict, meta: dict) -> bytes:
    """The bytes of a checkpoint file: ``meta`` plus its ``sha256``, deterministic header."""
    meta = {k: str(v) for k, v in meta.items()}
    meta["sha256"] = checkpoint_digest(meta, tensors)
    return safetensors_bytes(tensors, metadata=meta)


def save_checkpoint(out_dir: str | Path, model: nn.Module, optimizer: Optional[torch.optim.Optimizer],
                    step: int, history: Optional[list] = None) -> Path:
    """Write ``out_dir/checkpoint.safetensors`` (+ ``checkpoint.json``) atomically; returns its path.
    ``model`` has ``.config`` (``to_json()``), ``.functions`` and ``.encoder.config`` (a training model)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    groups = []
    if optimizer is not None:
        sd = optimizer.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"optim/{pid}/{k}"] = torch.as_tensor(v).detach().cpu().contiguous().clone()
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": str(step),
            "config": model.config.to_json(), "functions": json.dumps(model.functions),
            "encoder": json.dumps(asdict(model.encoder.config)), "optim_groups": json.dumps(groups),
            "history": json.dumps(history or [])}
    path = out_dir / CHECKPOINT_NAME
    atomic_write_bytes(path, checkpoint_bytes(tensors, meta))      # the whole checkpoint, one atomic unit
    fault_point("after_checkpoint_write")
    info = {"step": step, "config": asdict(model.config), "functions": model.functions,
            "encoder": asdict(model.encoder.config), "history": history or []}
    atomic_write_bytes(out_dir / "checkpoint.json", json.dumps(info, indent=1).encode())
    return path


def checkpoint_history(meta: dict, path) -> list:
    """The loss history a checkpoint holds (its ``history`` metadata; an older checkpoint without it:
    the ``checkpoint.json`` beside it, when that reads)."""
    if "history" in meta:
        try:
            h = json.loads(meta["history"])
        except ValueError:
            raise CheckpointError(f"{path}: its 'history' metadata is not JSON") from None
        if not isinstance(h, list) or not all(isinstance(x, dict) and isinstance(x.get("step"), int) for x in h):
            raise CheckpointError(f"{path}: its 'history' metadata is not a list of steps")
        return h
    j = Path(path).with_name("checkpoint.json")
    try:
        h = json.loads(j.read_text()).get("history", [])
        return [x for x in h if isinstance(x, dict) and isinstance(x.get("step"), int)]
    except (OSError, ValueError, AttributeError):
        return []


def read_checkpoint(path: str | Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of a gmn_inr checkpoint (a file, or a directory holding one).

    Never unpickles. Raises :class:`CheckpointError` naming the problem for a missing file, a file
    that is not safetensors, or a safetensors file that is not a gmn_inr checkpoint.
    """
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{path} is a safetensors file but not a gmn_inr checkpoint "
                                      f"(metadata 'format' is {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except CheckpointError:
        raise
    except Exception as exc:       # safetensors raises its own error types for foreign/corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {exc}") from None
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r} is not supported "
                              f"(this gmn_inr reads {CHECKPOINT_VERSION!r})")
    # checkpoints written before checksums have no "sha256" entry: they are read as before (and the
    # embedder still refuses non-finite outputs); every checkpoint written now carries one
    if "sha256" in meta and checkpoint_digest(meta, tensors) != meta["sha256"]:
        raise CheckpointError(f"{path} is corrupt: its tensors or metadata do not match the checksum it was "
                              f"written with (a damaged copy? write it again, or train again)")
    return meta, tensors


#: the largest encoder a checkpoint may ask for (far above the paper's hidden 128 / 4 layers / 1024-d),
#: checked before anything is allocated: a crafted config must not try a 160 GB allocation
ENCODER_LIMITS = {"hidden": 4096, "layers": 64, "embed_dim": 16384, "value_freqs": 4096, "probe_dim": 4096,
                  "geometry_dim": 16384}


def check_encoder_config(d, path) -> dict:
    """``d`` (an encoder config dict from a checkpoint's metadata) with its sizes checked against
    :data:`ENCODER_LIMITS`; :class:`CheckpointError` naming ``path`` and the key otherwise."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: the encoder config is a {type(d).__name__}, not a map")
    for k, hi in ENCODER_LIMITS.items():
        if k in d:
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
                raise CheckpointError(f"{path}: encoder config {k}={v!r} is not an integer in [0, {hi}]")
    return d


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` with an error that names missing, unexpected or mis-shaped tensors."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
           for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if bad:
            parts.append("wrong shapes: " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
        if missing:
            parts.append(f"missing {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}" + (" ..." if len(unexpected) > 5 else ""))
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(parts))
    module.load_state_dict(state)


def load_optimizer(optimizer: torch.optim.Optimizer, meta: dict, tensors: dict) -> None:
    groups = json.loads(meta.get("optim_groups", "[]"))
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, pid, name = k.split("/", 2)
            state.setdefault(int(pid), {})[name] = v
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
