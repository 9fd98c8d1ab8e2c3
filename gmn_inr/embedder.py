"""Embedding INRs with a trained encoder: :class:`Embedder` and ``gmn-inr embed``.

Anything with a parameter graph embeds directly — a field (any ``nn.Module`` with a registered
converter), a :class:`~graphs.ParameterGraph`, a torch_geometric ``Data``, or a zoo record
(anything with ``.graph()``) — with no distillation, rendering or point sampling. Checkpoints are
read with safetensors only; nothing is unpickled.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch import nn

from gmn_inr.atomic import atomic_write_bytes, ensure_writable_dir
from gmn_inr.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, check_encoder_config,
                                checkpoint_bytes, load_state_strict, read_checkpoint)


class EmbeddingError(ValueError):
    """An item whose embedding is not finite (NaN or inf): named, never returned."""


def _describe(item: Any, index: int) -> str:
    """How an error names an item: its file, its zoo key, or its position and type."""
    if isinstance(item, (str, Path)):
        return f"INR file {item}"
    key, path = getattr(item, "key", None), getattr(item, "path", None)
    if key is not None:
        return f"INR {key}" + (f" ({path})" if path is not None else "")
    name = getattr(getattr(item, "spec", None), "name", None) or getattr(item, "name", None)
    return f"item {index} ({type(item).__name__}{' ' + repr(name) if name else ''})"
from gmn_inr.devices import on_device
from gmn_inr.encoder import GMNEncoder, batch_graphs
from gmn_inr.io.sources import add_reader_arguments, inr_paths, read_inr, reader_from_args


def _as_graph(item: Any):
    """One item -> a ParameterGraph or PyG Data (converted only when its batch is embedded)."""
    if hasattr(item, "edge_index") and hasattr(item, "edge_attr"):     # ParameterGraph or PyG Data
        return item
    if isinstance(item, nn.Module):
        from graphs import to_graph

        return to_graph(item)
    if callable(getattr(item, "graph", None)):                            # zoo record
        return item.graph()
    if isinstance(item, (str, Path)):
        return _graph_of_file(Path(item))
    raise TypeError(f"cannot embed a {type(item).__name__}: give a field (nn.Module with a registered "
                    f"converter), a ParameterGraph, a torch_geometric Data, a zoo record or a stored INR file")


def _graph_of_file(path: Path):
    """A stored INR file of the zoo: safetensors whose metadata holds its ``arch_spec`` (or, for a
    user's module, a ``module`` description: read through its store)."""
    from gmn_inr.fields import ArchSpec, load_field
    from gmn_inr.zoo.store import read_inr_file, record_of_file

    tensors, meta = read_inr_file(path)                # clear ZooError for foreign files
    if "module" in meta:
        return record_of_file(path).graph()
    return _as_graph(load_field(ArchSpec.from_json(meta["arch_spec"]), tensors))


#: INRs embedded per batch: on the CPU more gains nothing; on a GPU a batch is a few launches of
#: one large kernel each, so the batch is what amortises them
CPU_BATCH, GPU_BATCH = 16, 128
BLOCK_FORMS = ("auto", "efficient", "plain")


def device_batch_size(device: "str | torch.device") -> int:
    """The default batch of an :class:`Embedder` on ``device``."""
    return CPU_BATCH if torch.device(device).type == "cpu" else GPU_BATCH


def block_form_for(device: "str | torch.device", form: str = "auto") -> str:
    """``auto``: the efficient block on the CPU, the plain one on a GPU, where launches dominate
    and the plain block's fewer, larger kernels measured 2.3-3x faster for inference (docs/gpu.md)."""
    if form not in BLOCK_FORMS:
        raise ValueError(f"unknown block form {form!r}; known: {', '.join(BLOCK_FORMS)}")
    if form != "auto":
        return form
    return "efficient" if torch.device(device).type == "cpu" else "plain"


class Embedder:
    """``Embedder(encoder).embed(items) -> Tensor[N, D]`` (batched, no autograd, CPU or GPU).

    ``batch_size`` (default :func:`device_batch_size`) and ``block_form`` (:func:`block_form_for`:
    the plain block computes the same function as the efficient one, its weights copied) are
    chosen for the device; the caller's encoder is never moved (a copy runs)."""

    def __init__(self, encoder: GMNEncoder, device: Optional[str | torch.device] = None,
                 batch_size: Optional[int] = None, block_form: str = "auto"):
        if not isinstance(encoder, GMNEncoder):
            raise TypeError(f"Embedder needs a GMNEncoder, got {type(encoder).__name__}")
        self.device = torch.device(device) if device is not None else next(encoder.parameters()).device
        self.block_form = block_form_for(self.device, block_form)
        if self.block_form == "plain" and encoder.config.efficient:
            encoder = encoder.to_plain().to(self.device)          # a new module: the caller's stays as it is
        self.encoder = on_device(encoder, self.device).eval()
        self.batch_size = int(batch_size or device_batch_size(self.device))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: Optional[str | torch.device] = None,
                        batch_size: Optional[int] = None, block_form: str = "auto") -> "Embedder":
        """Load the encoder of a training checkpoint (``gmn-inr train --out DIR``: the directory or
        its ``checkpoint.safetensors``) or of :meth:`save`. Raises
        :class:`~gmn_inr.checkpoint.CheckpointError` naming the problem for foreign or mis-shaped files."""

        meta, tensors = read_checkpoint(path)
        try:
            encoder = GMNEncoder.from_config(check_encoder_config(json.loads(meta["encoder"]), path))
        except CheckpointError:
            raise
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: no usable encoder config in the checkpoint metadata ({exc})") from None
        prefix = "model/encoder."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"{path}: the checkpoint holds no encoder tensors ('{prefix}*')")
        load_state_strict(encoder, state, f"encoder of checkpoint {path}")
        return cls(encoder, device=device, batch_size=batch_size, block_form=block_form)

    def save(self, path: str | Path) -> Path:
        """Write an encoder-only checkpoint that :meth:`from_checkpoint` reads (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"model/encoder.{k}": v.detach().cpu().contiguous().clone()
                   for k, v in self.encoder.state_dict().items()}
        meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": "0",
                "encoder": json.dumps(asdict(self.encoder.config))}
        atomic_write_bytes(path, checkpoint_bytes(tensors, meta))
        return path

    @torch.no_grad()
    def embed(self, items: Iterable[Any] | Any, batch_size: Optional[int] = None, progress: bool = False) -> torch.Tensor:
        """Embeddings ``[N, D]`` (on CPU) of ``items``, in order. A single item gives ``[1, D]``.

        Never returns a non-finite embedding: :class:`EmbeddingError` names the INR (its file, zoo key
        or position) whose row holds NaN or inf."""
        if not isinstance(items, (list, tuple)) and (isinstance(items, (nn.Module, str, Path))
                                                      or hasattr(items, "edge_index") or hasattr(items, "graph")):
            items = [items]
        items = list(items)
        if not items:
            return torch.zeros(0, self.embed_dim)
        bs = int(batch_size or self.batch_size)
        chunks = range(0, len(items), bs)
        if progress:
            from tqdm import tqdm
            chunks = tqdm(chunks, desc="embed", unit="batch")
        out = []
        for i in chunks:
            chunk = items[i:i + bs]
            if all(isinstance(it, nn.Module) and not hasattr(it, "edge_index") for it in chunk):
                from graphs import to_batch

                # fields of one architecture are converted together (graphs.to_batch); same graphs
                batch = to_batch(chunk, device=self.device)
            else:
                batch = batch_graphs([_as_graph(it) for it in chunk], device=self.device)
            z = self.encoder(batch).float().cpu()
            bad = (~torch.isfinite(z).all(dim=1)).nonzero().flatten().tolist()
            if bad:
                j = i + bad[0]
                raise EmbeddingError(f"the embedding of {_describe(items[j], j)} is not finite (NaN or inf)"
                                     + (f", and {len(bad) - 1} more in its batch" if len(bad) > 1 else "")
                                     + ": its values overflow the encoder, or the encoder's weights are damaged")
            out.append(z)
        return torch.cat(out, dim=0)

    __call__ = embed


# -- CLI -------------------------------------------------------------------------------------
class _FileRecord:
    """An INR file embedded by ``gmn-inr embed FILES``: its path and module (no label)."""

    def __init__(self, path: Path, module: nn.Module):
        self.path, self.module, self.label = path, module, -1

    def graph(self):
        return _as_graph(self.module)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="INR zoo directory, or an INR file or folder of them in any form zoo import reads")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (file or --out directory)")
    p.add_argument("--out", required=True, help="output .safetensors with 'embeddings' [N, D] and 'labels' [N]")
    p.add_argument("--split", default=None, help="only this split (train | val | test)")
    p.add_argument("--batch-size", type=int, default=None, help=f"INRs per batch (default {CPU_BATCH} on the CPU, "
                                                               f"{GPU_BATCH} on a GPU)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--block-form", default="auto", choices=BLOCK_FORMS,
                   help="message-passing block as run (auto: efficient on the CPU, plain on a GPU)")
    add_reader_arguments(p)


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import save

    from gmn_inr.zoo import open_store
    from gmn_inr.zoo.store import MANIFEST

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ensure_writable_dir(Path(args.out).resolve().parent)        # before any work
    try:
        emb = Embedder.from_checkpoint(args.checkpoint, device=device, batch_size=args.batch_size,
                                       block_form=args.block_form)
    except CheckpointError as exc:
        print(f"gmn-inr embed: error: {exc}", file=sys.stderr)
        return 2
    if (Path(args.store) / MANIFEST).is_file():
        records = [r for r in open_store(args.store) if args.split is None or getattr(r, "split", None) == args.split]
    else:                                          # INR files: read with the reader flags
        opts = reader_from_args(args)
        records = [_FileRecord(p, read_inr(p, opts)) for p in inr_paths(args.store)]
    if not records:
        print(f"gmn-inr embed: error: no INRs in {args.store}" + (f" with split {args.split!r}" if args.split else ""),
              file=sys.stderr)
        return 2
    z = emb.embed(records, progress=True)
    labels = torch.tensor([int(getattr(r, "label", -1)) for r in records], dtype=torch.long)
    info = [{k: str(getattr(r, k, "")) for k in ("object_id", "arch", "family", "function", "split",
                                                   "class_name", "path")} for r in records]
    out = Path(args.out)
    atomic_write_bytes(out, save({"embeddings": z.contiguous(), "labels": labels},
                                  metadata={"records": json.dumps(info), "checkpoint": str(args.checkpoint)}))
    print(f"wrote {tuple(z.shape)} embeddings of {len(records)} INRs to {out}")
    return 0
