"""The training loop: :func:`train` (and resume), :func:`evaluate`.

Data: a sequence of pairs ``(rec_a, rec_b)``, one object in two architecture families, where a
record has ``.graph()`` (ParameterGraph), ``.field()`` (the INR, the teacher the decoder must
reproduce), ``.function`` (radiance | sdf | udf | occupancy), ``.object_id``, ``.arch``, ``.family``
(``gmn_inr.zoo.dataset.PairDataset`` yields exactly that).

Determinism and resume. Everything random in a step is a pure function of ``(seed, step)``: the
epoch's shuffle is ``randperm`` from a generator seeded with ``(seed, epoch)``, each INR's rays and
query points come from a generator seeded with ``(seed, step, index of the INR in the global
batch)``, and the learning rate is a closed-form function of the step. So a checkpoint needs only
the model, the optimizer state and the step, a resumed run equals an uninterrupted one, and every
process of a distributed run draws the same numbers for the same INR.

Several processes (``torchrun --nproc_per_node N -m gmn_inr.cli train ...``): each process takes
``B / N`` pairs of the same global batch; gradients are averaged by DistributedDataParallel
(:mod:`gmn_inr.training.model` says how the loss terms make that average exact).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from gmn_inr.checkpoint import (CHECKPOINT_NAME, CheckpointError, checkpoint_history, load_optimizer,
                                load_state_strict, read_checkpoint, save_checkpoint)
from gmn_inr.cpu import tune_malloc
from gmn_inr.devices import module_device
from gmn_inr.encoder import GMNEncoder, batch_graphs
from gmn_inr.fields.activations import FUNCTIONS
from gmn_inr.losses import combine, same_object_labels

from .config import EVAL_SEED, TrainConfig, one_cycle_lr, seed_of
from .model import GMNModel
from .timing import no_times


# -- data --------------------------------------------------------------------------------
def _as_sequence(pairs) -> Sequence:
    if hasattr(pairs, "__len__") and hasattr(pairs, "__getitem__"):
        return pairs
    return list(pairs)


def functions_in(pairs: Sequence) -> list[str]:
    """The implicit functions present in a pair dataset (reads ``.function`` of every record)."""
    found = []
    for i in range(len(pairs)):
        for r in pairs[i]:
            if r.function not in found:
                found.append(r.function)
    return sorted(found, key=FUNCTIONS.index)


def batch_indices(n_pairs: int, batch_pairs: int, seed: int, step: int) -> list[int]:
    """The dataset indices of the pairs in global batch ``step`` (shuffled per epoch, last partial
    batch dropped)."""
    per_epoch = n_pairs // batch_pairs
    if per_epoch < 1:
        raise ValueError(f"the dataset has {n_pairs} pairs, fewer than one batch of {batch_pairs}")
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(seed_of(seed, epoch)))
    return perm[pos * batch_pairs:(pos + 1) * batch_pairs].tolist()


# -- the loop ------------------------------------------------------------------------------
@dataclass
class TrainResult:
    model: GMNModel
    step: int
    history: list
    checkpoint: Optional[Path]
    seconds: float

    @property
    def encoder(self) -> GMNEncoder:
        return self.model.encoder


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # no decay on biases, norms and the SigLIP scalars (1-d or 0-d tensors), as open_clip does
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            rank, n = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if rank >= n:
                raise ValueError(f"local rank {rank} has no GPU of its own ({n} visible): start at most {n} "
                                 f"processes per node, or train with device='cpu'")
            return torch.device("cuda", rank)
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda[:i]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev


def _home_device(config: TrainConfig, pairs: Sequence, device: torch.device) -> torch.device:
    """Where :func:`train` returns the model: the device the config names, or with ``auto`` where the
    inputs are (the first record's field; CPU for the zoo's records), so a caller's CPU graphs
    embed with the returned encoder whether or not a GPU did the training."""
    if config.device != "auto":
        return device
    try:
        return module_device(pairs[0][0].field())
    except (AttributeError, IndexError, TypeError):
        return torch.device("cpu")


def autocast_for(precision: str, device: torch.device):
    """The forward's autocast: bf16 where ``precision`` says so (``auto``: on cuda only; the CPU's
    bf16 matmuls are no faster there); the losses themselves are computed in float32."""
    on = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if on else contextlib.nullcontext()


def _dist_info(device: str = "auto") -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(config: TrainConfig, pairs, out_dir: Optional[str | Path] = None, resume: bool = True,
          progress: bool = True, stop_after: Optional[int] = None, times=None) -> TrainResult:
    """Train (or resume training) the encoder on ``pairs``; returns a :class:`TrainResult`.

    ``config.device``: where the steps run (``auto``: cuda:LOCAL_RANK when visible, else cpu). The
    caller's records, fields and graphs stay where they are (batches and teachers are copies on the
    device); the returned model is on ``config.device``, or with ``auto`` on the inputs' device.

    ``out_dir``: where checkpoints go (None = none written). ``resume``: continue from
    ``out_dir``'s checkpoint when there is one. ``stop_after``: stop once this step is reached
    (saving a checkpoint), as an interruption would. ``times``: a
    :class:`~gmn_inr.training.timing.PartTimes` that the steps' parts are timed into. Under ``torchrun`` every process calls this
    with the same arguments; only rank 0 writes.
    """
    config.validate()
    tune_malloc()                 # measured: a 16-graph encoder step 2.5 s -> 1.1 s on 1 thread (gmn_inr.cpu)
    pairs = _as_sequence(pairs)
    rank, world = _dist_info(config.device)
    if config.batch_pairs % world:
        raise ValueError(f"batch_pairs={config.batch_pairs} must be divisible by the {world} processes")
    out_dir = Path(out_dir) if out_dir is not None else None
    functions = config.functions or functions_in(pairs)
    weights = config.weights()

    start, history, meta, tensors = 0, [], None, None
    ckpt = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    if resume and ckpt is not None and ckpt.exists():
        meta, tensors = read_checkpoint(ckpt)
        try:
            old = json.loads(meta["config"])
            ckpt_functions = json.loads(meta["functions"])
            start = int(meta["step"])
            if not isinstance(old, dict) or not isinstance(ckpt_functions, list) or start < 0:
                raise ValueError("config, functions or step of the wrong type")
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{ckpt}: its metadata is incomplete or malformed ({type(exc).__name__}: {exc})") from None
        diff = [k for k in TrainConfig.SHAPING if old.get(k) != asdict(config).get(k)]
        if diff:
            raise CheckpointError(f"{ckpt} was trained with a different {', '.join(diff)} "
                                  f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out, "
                                  f"or start over with --no-resume (resume=False)")
        functions = ckpt_functions
        history = [h for h in checkpoint_history(meta, ckpt) if h["step"] <= start]

    device = _pick_device(config.device)
    model = GMNModel.initial(config, functions).to(device)
    times = times or no_times
    model.times = times
    if tensors is not None:
        state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        try:
            load_state_strict(model, state, f"checkpoint {ckpt}")
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; it was written by a model of another shape (another gmn_inr version?): "
                                  "use another --out, or start over with --no-resume (resume=False)") from None
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    if tensors is not None:
        load_optimizer(optimizer, meta, tensors)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                                  find_unused_parameters=True)

    n_local = config.batch_pairs // world
    n_global_inrs = 2 * config.batch_pairs
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=start, desc="train", dynamic_ncols=True)
    t0 = time.perf_counter()
    last_saved = start
    for step in range(start, end):
        lr = one_cycle_lr(step, config.steps, config.lr, config.pct_start)
        for g in optimizer.param_groups:
            g["lr"] = lr
        idx = batch_indices(len(pairs), config.batch_pairs, config.seed, step)
        local = idx[rank * n_local:(rank + 1) * n_local]
        chosen = [pairs[i] for i in local]
        records = [a for a, _ in chosen] + [b for _, b in chosen]
        # INR j of the global batch: A's are 0..B-1, B's are B..2B-1; seeds do not depend on rank
        gidx = [rank * n_local + k for k in range(n_local)]
        gidx = gidx + [config.batch_pairs + k for k in gidx]
        seeds = [seed_of(config.seed, step, j) for j in gidx]
        with times("graphs"):
            batch = batch_graphs([r.graph() for r in records], device=device)
        # two pairs of one object in a batch are positives for each other, never negatives
        labels = same_object_labels([getattr(pairs[i][0], "object_id", i) for i in idx])
        with times("forward"), autocast_for(config.precision, device):
            terms = net(batch, records, seeds, n_global_inrs, world, labels)
            total = combine(terms, weights)
        with times("backward"):
            optimizer.zero_grad(set_to_none=True)
            total.backward()
        with times("optimizer"):
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()

        logged = {k: float(v.detach()) for k, v in terms.items()}
        logged["total"] = float(total.detach())
        if world > 1:
            import torch.distributed as dist
            vals = torch.tensor(list(logged.values()), dtype=torch.float64, device=device)
            dist.all_reduce(vals)
            logged = dict(zip(logged, (vals / world).cpu().tolist()))
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            history.append({"step": done, "lr": lr, **logged})
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in logged.items()})
        if out_dir is not None and rank == 0 and (done % config.ckpt_every == 0 or done == end):
            save_checkpoint(out_dir, model, optimizer, done, history)
            last_saved = done
    if bar is not None:
        bar.close()
    if out_dir is not None and rank == 0 and last_saved != end:
        save_checkpoint(out_dir, model, optimizer, end, history)
    model.__dict__.pop("_teachers", None)          # the device copies of the teachers: free them
    model.times = no_times
    return TrainResult(model=model.to(_home_device(config, pairs, device)), step=max(end, start), history=history,
                       checkpoint=(out_dir / CHECKPOINT_NAME) if out_dir is not None else None,
                       seconds=time.perf_counter() - t0)


@torch.no_grad()
def evaluate(model: GMNModel, pairs, seed: int = EVAL_SEED, batch_pairs: Optional[int] = None) -> dict[str, float]:
    """Each loss term averaged over the whole pair dataset, with fixed rays and query points
    (seeded by ``seed``), so two models — or one model before and after training — compare fairly."""
    pairs = _as_sequence(pairs)
    was_training = model.training
    model.eval()
    bp = batch_pairs or model.config.batch_pairs
    sums: dict[str, float] = {}
    n_batches = 0
    for start in range(0, len(pairs) - bp + 1, bp):
        chosen = [pairs[i] for i in range(start, start + bp)]
        records = [a for a, _ in chosen] + [b for _, b in chosen]
        seeds = [seed_of(seed, start, j) for j in range(len(records))]
        device = next(model.parameters()).device
        # as in training: two pairs of one object in a batch are positives for SigLIP, not negatives
        labels = same_object_labels([getattr(a, "object_id", start + j) for j, (a, _) in enumerate(chosen)])
        terms = model(batch_graphs([r.graph() for r in records], device=device), records, seeds, len(records), 1,
                      labels=labels)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n_batches += 1
    model.train(was_training)
    if n_batches == 0:
        raise ValueError(f"evaluate needs at least {bp} pairs, got {len(pairs)}")
    return {k: v / n_batches for k, v in sums.items()}
