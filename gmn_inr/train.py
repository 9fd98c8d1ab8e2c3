"""Training the GMN encoder end to end (``gmn-inr train`` and :func:`train`).

Data: a sequence of pairs ``(rec_a, rec_b)``, one object in two architecture families, where a
record has ``.graph()`` (ParameterGraph), ``.field()`` (the INR, the teacher the decoder must
reproduce), ``.function`` (radiance | sdf | udf | occupancy), ``.object_id``, ``.arch``, ``.family``
(``gmn_inr.zoo.dataset.PairDataset`` yields exactly that).

One step, for a batch of ``B`` pairs (main paper eq. 4):
``L = w_R L_R + lambda L_C + mu L_2``, where ``L_R`` is the mean over the ``2B`` INRs of each
INR's reconstruction loss (rendering for radiance, query points for implicit functions),
``L_C`` is SigLIP between the ``A`` and ``B`` embeddings, ``L_2`` their mean squared distance.

Determinism and resume. Everything random in a step is a pure function of ``(seed, step)``: the
epoch's shuffle is ``randperm`` from a generator seeded with ``(seed, epoch)``, each INR's rays and
query points come from a generator seeded with ``(seed, step, index of the INR in the global
batch)``, and the learning rate is a closed-form function of the step. So a checkpoint needs only
the model, the optimizer state and the step, a resumed run equals an uninterrupted one, and every
process of a distributed run draws the same numbers for the same INR.

Several processes (``torchrun --nproc_per_node N -m gmn_inr.cli train ...``): each process takes
``B / N`` pairs of the same global batch; gradients are averaged by DistributedDataParallel. The
loss terms are written so that this average equals the single-process gradient: ``L_R`` is summed
over local INRs and divided by the global count / N; SigLIP is computed over the gathered global
batch with gradient through the local embeddings (scaled by N) and the temperature and bias
corrected so that they receive their gradient once (see :meth:`GMNModel._contrastive`).

Checkpoints (``OUT/checkpoint.safetensors`` + ``OUT/checkpoint.json``) hold tensors only
(model, optimizer moments) plus JSON metadata; they are written to a temporary file and moved
into place with ``os.replace``, so an interruption never leaves a half-written checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gmn_inr.decoder import PRESETS as DECODER_PRESETS, make_decoders
from gmn_inr.encoder import PRESETS as ENCODER_PRESETS, GMNEncoder, batch_graphs
from gmn_inr.fields.activations import FUNCTIONS
from gmn_inr.losses import (LossWeights, SigLIP, convert_target, implicit_loss, implicit_query_points,
                            l2_alignment, rendering_loss, same_object_labels)
from gmn_inr.render import composite, random_rays, sample_along_rays
from gmn_inr.fields.activations import radiance_from_raw

CHECKPOINT_FORMAT = "gmn_inr.checkpoint"
CHECKPOINT_VERSION = "1"
CHECKPOINT_NAME = "checkpoint.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: foreign file, wrong format, wrong shapes."""


# -- configuration ---------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in every checkpoint)."""

    preset: str = "cpu"                 #: encoder and decoder sizes: paper | cpu | tiny
    encoder: dict = field(default_factory=dict)    #: overrides of the encoder preset
    decoder: dict = field(default_factory=dict)    #: overrides of the decoder preset (width, n_freqs)
    loss: str = "R+C"                   #: R | R+C | C | R+C+L2 | R+L2 (LossWeights.named)
    recon_weight: Optional[float] = None         #: override the named combination's weights
    contrastive_weight: Optional[float] = None
    l2_weight: Optional[float] = None
    functions: Optional[list] = None    #: decoder heads; None = the functions found in the data
    unified: Optional[str] = None       #: INRet unified decoder: decode every implicit INR as this
    steps: int = 200
    batch_pairs: int = 8                #: pairs per (global) batch (the paper: 8)
    lr: float = 1e-3                    #: one-cycle maximum learning rate (paper 1e-4 over 250 epochs)
    weight_decay: float = 1e-2
    pct_start: float = 0.3              #: one-cycle warm-up fraction
    grad_clip: float = 0.0              #: max gradient norm; 0 = off
    seed: int = 0
    rays_per_inr: int = 64              #: rendering loss: rays per radiance INR per step
    samples_per_ray: int = 24
    points_per_inr: int = 512           #: implicit loss: query points per INR per step
    near_fraction: float = 0.5          #: share of query points near the surface
    background: float = 1.0             #: background colour (white, as ShapeNet renders)
    ckpt_every: int = 100
    log_every: int = 10
    device: str = "auto"                #: auto (cuda:LOCAL_RANK when available, else cpu) | cpu | cuda[:i]

    @classmethod
    def for_preset(cls, preset: str, **overrides: Any) -> "TrainConfig":
        """Sensible run settings per preset: ``paper`` (the paper's lr 1e-4 and batch 8, more rays
        per INR for a GPU), ``cpu`` (a step of 8 pairs in about a second on 2 cores), ``tiny``
        (tests)."""
        table = {
            "paper": dict(lr=1e-4, batch_pairs=8, rays_per_inr=1024, samples_per_ray=64, points_per_inr=4096),
            "cpu": dict(lr=1e-3, batch_pairs=8, rays_per_inr=64, samples_per_ray=24, points_per_inr=512),
            "tiny": dict(lr=3e-3, batch_pairs=4, rays_per_inr=32, samples_per_ray=12, points_per_inr=128),
        }
        if preset not in table:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(table)}")
        return cls(**{"preset": preset, **table[preset], **overrides})

    def weights(self) -> LossWeights:
        w = LossWeights.named(self.loss)
        return LossWeights(recon=w.recon if self.recon_weight is None else self.recon_weight,
                           contrastive=w.contrastive if self.contrastive_weight is None else self.contrastive_weight,
                           l2=w.l2 if self.l2_weight is None else self.l2_weight)

    def validate(self) -> None:
        if self.preset not in ENCODER_PRESETS or self.preset not in DECODER_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(ENCODER_PRESETS)}")
        if self.steps < 1 or self.batch_pairs < 1:
            raise ValueError("steps and batch_pairs must be >= 1")
        if self.weights().contrastive > 0 and self.batch_pairs < 2:
            raise ValueError("the contrastive loss needs batch_pairs >= 2 (negatives)")
        if self.unified is not None and self.unified not in FUNCTIONS[1:]:
            raise ValueError(f"unified must be one of {FUNCTIONS[1:]}, got {self.unified!r}")
        self.weights()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {sorted(unknown)}")
        return cls(**d)

    #: fields that shape the model: a checkpoint can only be resumed with the same values
    SHAPING = ("preset", "encoder", "decoder", "functions", "unified", "loss", "recon_weight",
               "contrastive_weight", "l2_weight")


def one_cycle_lr(step: int, total: int, max_lr: float, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4) -> float:
    """The learning rate of ``torch.optim.lr_scheduler.OneCycleLR`` (cosine annealing) at ``step``,
    in closed form so that resuming needs no scheduler state."""
    initial = max_lr / div_factor
    final = initial / final_div_factor
    peak = float(pct_start * total) - 1
    end = float(total - 1)

    def cos(a: float, b: float, pct: float) -> float:
        return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)

    if peak > 0 and step <= peak:
        return cos(initial, max_lr, step / peak)
    span = max(end - max(peak, 0.0), 1.0)
    return cos(max_lr, final, min(1.0, (step - max(peak, 0.0)) / span))


def _seed_of(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (so every process derives the same one)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


# -- the model -----------------------------------------------------------------------------
class GMNModel(nn.Module):
    """Encoder + decoder heads + SigLIP parameters; ``forward`` returns the loss terms of a step.

    All losses are computed inside ``forward`` so DistributedDataParallel sees every parameter
    that receives a gradient.
    """

    def __init__(self, config: TrainConfig, functions: Sequence[str]):
        super().__init__()
        self.config = config
        w = config.weights()
        self.encoder = GMNEncoder.from_preset(config.preset, **config.encoder)
        self.functions = list(functions)
        self.decoders = (make_decoders(self.encoder.embed_dim, self.functions, config.preset, config.unified,
                                       **config.decoder) if w.recon > 0 else nn.ModuleDict())
        self.siglip = SigLIP() if w.contrastive > 0 else None

    #: teachers rebuilt from disk are kept (records may re-read their file on every .field())
    TEACHER_CACHE = 4096

    def teacher(self, record) -> nn.Module:
        cache = self.__dict__.setdefault("_teachers", {})
        key = id(record)
        hit = cache.get(key)
        if hit is not None and hit[0] is record:
            return hit[1]
        f = record.field().to(self.encoder.readout.weight.device)
        if len(cache) >= self.TEACHER_CACHE:
            cache.pop(next(iter(cache)))
        cache[key] = (record, f)
        return f

    def head_of(self, function: str) -> str:
        if function == "radiance" or self.config.unified is None:
            return function
        return self.config.unified

    def forward(self, batch, records: Sequence[Any], seeds: Sequence[int], n_global_inrs: int,
                world: int = 1, labels: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """``batch``: PyG batch of the local ``2n`` graphs (all A's, then all B's);
        ``seeds [2n]``: one RNG seed per INR; ``labels [B, B]``: SigLIP labels of the global
        batch (None: only pair j matches j). Returns the (local, DDP-scaled) loss terms."""
        w = self.config.weights()
        z = self.encoder(batch)                                     # [2n, D]
        n = z.shape[0] // 2
        terms: dict[str, torch.Tensor] = {}
        if w.recon > 0:
            terms.update(self._reconstruction(z, records, seeds, n_global_inrs, world))
        if w.contrastive > 0:
            terms["contrastive"] = self._contrastive(z[:n], z[n:], world, labels)
        if w.l2 > 0:
            terms["l2"] = l2_alignment(z[:n], z[n:])
        return terms

    # reconstruction: sum over local INRs / (global INR count / world) = the global mean after DDP
    def _reconstruction(self, z, records, seeds, n_global, world) -> dict[str, torch.Tensor]:
        cfg = self.config
        scale = world / n_global
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            if r.function not in FUNCTIONS:
                raise ValueError(f"record {getattr(r, 'object_id', '?')}/{getattr(r, 'arch', '?')} has unknown "
                                 f"function {r.function!r}")
            head = self.head_of(r.function)
            if head not in self.decoders:
                raise ValueError(f"no decoder head for {head!r} (this model decodes {list(self.decoders)}); "
                                 f"set TrainConfig.functions to include {r.function!r}")
            groups.setdefault(head, []).append(i)
        out: dict[str, torch.Tensor] = {}
        dev = z.device
        # random numbers come from CPU generators and are moved afterwards, so a run draws the same
        # rays and points on any device and in any process
        for head, idx in groups.items():
            dec = self.decoders[head]
            gens = [torch.Generator().manual_seed(seeds[i]) for i in idx]
            zi = z[idx]
            if head == "radiance":
                pts, delta, t_rgb, t_acc = [], [], [], []
                for i, g in zip(idx, gens):
                    ro, rd = random_rays(cfg.rays_per_inr, g)
                    p, _, d = sample_along_rays(ro, rd, cfg.samples_per_ray, stratified=True, generator=g)
                    p, d = p.to(dev), d.to(dev)
                    with torch.no_grad():
                        rgb, sigma = radiance_from_raw(self.teacher(records[i])(p))
                        c, a, _ = composite(rgb, sigma, d, cfg.background)
                    pts.append(p), delta.append(d), t_rgb.append(c), t_acc.append(a)
                pts = torch.stack(pts)                                # [k, R, S, 3]
                raw = dec(zi, pts)                                    # [k, R, S, 4]
                rgb, sigma = radiance_from_raw(raw)
                pred, _, _ = composite(rgb, sigma, torch.stack(delta), cfg.background)
                per_inr = rendering_loss(pred, torch.stack(t_rgb), torch.stack(t_acc), reduction="none")
                key = "render"
            else:
                xyz, tgt = [], []
                for i, g in zip(idx, gens):
                    teacher = self.teacher(records[i])
                    p, v = implicit_query_points(lambda x: teacher(x.to(dev)).cpu(), cfg.points_per_inr, g,
                                                 near_fraction=cfg.near_fraction)
                    p, v = p.to(dev), v.to(dev)
                    xyz.append(p), tgt.append(convert_target(v, records[i].function, head))
                pred = dec(zi, torch.stack(xyz)).squeeze(-1)          # [k, P]
                per_inr = implicit_loss(pred, torch.stack(tgt), head, reduction="none")
                key = "implicit"
            val = per_inr.sum() * scale
            out[key] = out[key] + val if key in out else val
        return out

    def _contrastive(self, za: torch.Tensor, zb: torch.Tensor, world: int,
                     labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """SigLIP over the global batch. With ``world`` processes, the other processes' embeddings
        arrive without gradient; the returned value ``N L(mixed) - (N - 1) L(all detached)`` equals
        ``L`` and gives the local embeddings ``N`` times their gradient (DDP divides by ``N``) and
        ``log_t``, ``b`` exactly their gradient."""
        if labels is not None:
            labels = labels.to(za.device)
        if world == 1:
            return self.siglip(za, zb, labels)
        import torch.distributed as dist

        rank = dist.get_rank()
        ga = [torch.empty_like(za) for _ in range(world)]
        gb = [torch.empty_like(zb) for _ in range(world)]
        dist.all_gather(ga, za.detach().contiguous())
        dist.all_gather(gb, zb.detach().contiguous())
        all_a, all_b = torch.cat(ga), torch.cat(gb)
        ga[rank], gb[rank] = za, zb
        mixed = self.siglip(torch.cat(ga), torch.cat(gb), labels)
        detached = self.siglip(all_a, all_b, labels)
        return world * mixed - (world - 1) * detached


# -- checkpoints ---------------------------------------------------------------------------
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(out_dir: str | Path, model: GMNModel, optimizer: Optional[torch.optim.Optimizer],
                    step: int, history: Optional[list] = None) -> Path:
    """Write ``out_dir/checkpoint.safetensors`` (+ ``checkpoint.json``) atomically; returns its path."""
    from safetensors.torch import save

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
            "encoder": json.dumps(asdict(model.encoder.config)), "optim_groups": json.dumps(groups)}
    path = out_dir / CHECKPOINT_NAME
    _atomic_write_bytes(path, save(tensors, metadata=meta))
    info = {"step": step, "config": asdict(model.config), "functions": model.functions,
            "encoder": asdict(model.encoder.config), "history": history or []}
    _atomic_write_bytes(out_dir / "checkpoint.json", json.dumps(info, indent=1).encode())
    return path


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
    return meta, tensors


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


def load_model(path: str | Path) -> tuple[GMNModel, dict[str, str], dict[str, torch.Tensor]]:
    """Rebuild the :class:`GMNModel` stored in a checkpoint; returns ``(model, metadata, tensors)``."""
    meta, tensors = read_checkpoint(path)
    try:
        config = TrainConfig.from_dict(json.loads(meta["config"]))
        functions = json.loads(meta["functions"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged ({exc})") from None
    model = GMNModel(config, functions)
    state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    load_state_strict(model, state, f"checkpoint {path}")
    return model, meta, tensors


def _load_optimizer(optimizer: torch.optim.Optimizer, meta: dict, tensors: dict) -> None:
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


# -- data --------------------------------------------------------------------------------
def _as_sequence(pairs) -> Sequence:
    if hasattr(pairs, "__len__") and hasattr(pairs, "__getitem__"):
        return pairs
    return list(pairs)


def pairs_from_records(records: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Every pair of records of one object and one function in two different families
    (the main paper's (M_j, T_j), (T_j, H_j), (M_j, H_j)), in a deterministic order."""
    import itertools

    groups: dict[tuple[str, str], list] = {}
    for r in records:
        groups.setdefault((r.object_id, r.function), []).append(r)
    out = []
    for key in sorted(groups):
        recs = sorted(groups[key], key=lambda r: (r.family, r.arch))
        out.extend((a, b) for a, b in itertools.combinations(recs, 2) if a.family != b.family)
    return out


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
    perm = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(_seed_of(seed, epoch)))
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
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev


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
          progress: bool = True, stop_after: Optional[int] = None) -> TrainResult:
    """Train (or resume training) the encoder on ``pairs``; returns a :class:`TrainResult`.

    ``out_dir``: where checkpoints go (None = none written). ``resume``: continue from
    ``out_dir``'s checkpoint when there is one. ``stop_after``: stop once this step is reached
    (saving a checkpoint), as an interruption would. Under ``torchrun`` every process calls this
    with the same arguments; only rank 0 writes.
    """
    config.validate()
    tune_malloc()                 # measured: a 16-graph encoder step 2.5 s -> 1.1 s on 1 thread
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
        old = json.loads(meta["config"])
        diff = [k for k in TrainConfig.SHAPING if old.get(k) != asdict(config).get(k)]
        if diff:
            raise CheckpointError(f"{ckpt} was trained with a different {', '.join(diff)} "
                                  f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out, "
                                  f"or start over with --no-resume (resume=False)")
        functions = json.loads(meta["functions"])
        start = int(meta["step"])
        jpath = out_dir / "checkpoint.json"
        if jpath.exists():
            history = [h for h in json.loads(jpath.read_text()).get("history", []) if h["step"] <= start]

    device = _pick_device(config.device)
    torch.manual_seed(_seed_of(config.seed, 7))                      # same initial weights everywhere
    model = GMNModel(config, functions).to(device)
    if tensors is not None:
        state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        try:
            load_state_strict(model, state, f"checkpoint {ckpt}")
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; it was written by a model of another shape (another gmn_inr version?): "
                                  "use another --out, or start over with --no-resume (resume=False)") from None
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    if tensors is not None:
        _load_optimizer(optimizer, meta, tensors)
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
        seeds = [_seed_of(config.seed, step, j) for j in gidx]
        batch = batch_graphs([r.graph() for r in records], device=device)
        # two pairs of one object in a batch are positives for each other, never negatives
        labels = same_object_labels([getattr(pairs[i][0], "object_id", i) for i in idx])
        terms = net(batch, records, seeds, n_global_inrs, world, labels)
        total = sum((_weight_of(k, weights) * v for k, v in terms.items()), torch.zeros((), device=device))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
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
    return TrainResult(model=model, step=max(end, start), history=history,
                       checkpoint=(out_dir / CHECKPOINT_NAME) if out_dir is not None else None,
                       seconds=time.perf_counter() - t0)


def _weight_of(term: str, w: LossWeights) -> float:
    return {"render": w.recon, "implicit": w.recon, "contrastive": w.contrastive, "l2": w.l2}[term]


# -- CLI ---------------------------------------------------------------------------------
def tune_malloc() -> None:
    """Keep glibc from giving every large tensor its own mmap (REFERENCE.md: 1.6-2.4x faster
    long CPU runs). A no-op where glibc is not the allocator."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)                  # M_MMAP_MAX
        libc.mallopt(-1, 1 << 30)            # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


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
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    from gmn_inr.zoo import open_store

    store = open_store(args.store)
    archs = tuple(args.archs.split(",")) if args.archs else None
    try:
        from gmn_inr.zoo.dataset import PairDataset
    except ImportError:                    # the zoo's datasets not available: pair records here
        pairs = pairs_from_records(store.records(split="train", functions=[args.function], archs=archs))
    else:
        pairs = PairDataset(store, "train", function=args.function, **({"archs": archs} if archs else {}))
    given = {"batch_pairs": args.batch_pairs, "lr": args.lr, "rays_per_inr": args.rays,
             "samples_per_ray": args.samples, "points_per_inr": args.points}
    config = TrainConfig.for_preset(args.preset, loss=args.loss, contrastive_weight=args.lambda_c,
                                    l2_weight=args.mu_l2, unified=args.unified, steps=args.steps, seed=args.seed,
                                    ckpt_every=args.ckpt_every, device=args.device, **{k: v for k, v in given.items() if v is not None})
    if len(pairs) < config.batch_pairs:
        raise SystemExit(f"{args.store} has {len(pairs)} training pairs of {args.function!r} INRs in two "
                         f"families; a batch of {config.batch_pairs} pairs needs at least that many")
    try:
        res = train(config, pairs, args.out, resume=not args.no_resume, progress=not args.no_progress)
    except CheckpointError as exc:
        print(f"gmn-inr train: error: {exc}", file=sys.stderr)
        return 2
    last = res.history[-1] if res.history else {}
    print(f"trained to step {res.step} in {res.seconds:.1f}s; last losses "
          + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k != "step") + f"; checkpoint {res.checkpoint}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="gmn-inr train")
    add_arguments(ap)
    sys.exit(run(ap.parse_args()))


@torch.no_grad()
def evaluate(model: GMNModel, pairs, seed: int = 12345, batch_pairs: Optional[int] = None) -> dict[str, float]:
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
        seeds = [_seed_of(seed, start, j) for j in range(len(records))]
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
