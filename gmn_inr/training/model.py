"""The model trained end to end: encoder + decoder heads + SigLIP parameters (:class:`GMNModel`).

One step, for a batch of ``B`` pairs (main paper eq. 4): ``L = w_R L_R + lambda L_C + mu L_2``,
where ``L_R`` is the mean over the ``2B`` INRs of each INR's reconstruction loss (rendering for
radiance, query points for implicit functions), ``L_C`` is SigLIP between the ``A`` and ``B``
embeddings, ``L_2`` their mean squared distance. With ``N`` processes the terms are written so
that DistributedDataParallel's gradient average equals the single-process gradient: ``L_R`` is
summed over local INRs and divided by the global count / N; SigLIP is computed over the gathered
global batch with gradient through the local embeddings (see :meth:`GMNModel._contrastive`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from gmn_inr.checkpoint import CheckpointError, load_state_strict, read_checkpoint
from gmn_inr.decoder import make_decoders
from gmn_inr.devices import on_device
from gmn_inr.encoder import GMNEncoder
from gmn_inr.fields.activations import FUNCTIONS, radiance_from_raw
from gmn_inr.losses import (SigLIP, convert_target, implicit_loss, implicit_query_points, l2_alignment,
                            rendering_loss)
from gmn_inr.render import composite, random_rays, sample_along_rays

from .config import INIT_SEED_SALT, TrainConfig, seed_of
from .timing import no_times


def z_device(batch) -> str:
    """The device type a PyG batch lives on (what ``torch.autocast`` is keyed by)."""
    return batch.x.device.type


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
        # with a geometry head (EncoderConfig.geometry_dim) the decoders read the other columns only
        self.decoders = (make_decoders(self.encoder.decoded_dim, self.functions, config.preset, config.unified,
                                       **config.decoder) if w.recon > 0 else nn.ModuleDict())
        self.siglip = SigLIP() if w.contrastive > 0 else None
        self.times = no_times       # train(times=...) sets a PartTimes here

    @classmethod
    def initial(cls, config: TrainConfig, functions: Sequence[str]) -> "GMNModel":
        """The model every training of ``config`` starts from: the same weights everywhere (seeded
        by ``config.seed``); its ``.encoder`` is the untrained encoder of a benchmark's no-learning row."""
        torch.manual_seed(seed_of(config.seed, INIT_SEED_SALT))
        return cls(config, functions)

    #: teachers rebuilt from disk are kept (records may re-read their file on every .field())
    TEACHER_CACHE = 4096

    def teacher(self, record) -> nn.Module:
        cache = self.__dict__.setdefault("_teachers", {})
        key = id(record)
        hit = cache.get(key)
        if hit is not None and hit[0] is record:
            return hit[1]
        f = on_device(record.field(), self.encoder.readout.weight.device)   # the caller's field stays put
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
        # the encoder runs in float32 even under autocast: its scatters (index_add into float32
        # buffers) and custom backward passes are written for one dtype; the decoders and teachers
        # (the rendering) take the bf16 matmuls
        with self.times("encoder"), torch.autocast(z_device(batch), enabled=False):
            z = self.encoder(batch)                                 # [2n, D]
        n = z.shape[0] // 2
        # with a geometry head, reconstruction reads the first D - D_geo columns and the alignment
        # terms the last D_geo: the rendering loss never reaches the geometry head, nor SigLIP / L2
        # the columns the decoders read
        decoded, geometry = self.encoder.split_geometry(z)         # [2n, D - D_geo], [2n, D_geo]
        aligned = geometry if self.encoder.config.geometry_dim else z
        terms: dict[str, torch.Tensor] = {}
        if w.recon > 0:
            terms.update(self._reconstruction(decoded, records, seeds, n_global_inrs, world))
        if w.contrastive > 0:
            terms["contrastive"] = self._contrastive(aligned[:n], aligned[n:], world, labels)
        if w.l2 > 0:
            terms["l2"] = l2_alignment(aligned[:n], aligned[n:])
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
                with self.times("teacher targets"):
                    # each INR's rays from its own generator; one copy to the device, one composite
                    # of every teacher; only the teachers' forwards (fields of any kind) go one by one
                    rays = [sample_along_rays(*random_rays(cfg.rays_per_inr, g), cfg.samples_per_ray, stratified=True,
                                              generator=g) for g in gens]
                    pts = torch.stack([r[0] for r in rays]).to(dev)                  # [k, R, S, 3]
                    delta = torch.stack([r[2] for r in rays]).to(dev)                # [k, R, S]
                    with torch.no_grad():
                        t_raw = torch.stack([self.teacher(records[i])(p).float() for i, p in zip(idx, pts)])
                        t_rgb, t_acc, _ = composite(*radiance_from_raw(t_raw), delta, cfg.background)
                raw = dec(zi, pts).float()                            # [k, R, S, 4]: compositing in float32
                rgb, sigma = radiance_from_raw(raw)
                pred, _, _ = composite(rgb, sigma, delta, cfg.background)
                per_inr = rendering_loss(pred, t_rgb, t_acc, reduction="none")
                key = "render"
            else:
                xyz, tgt = [], []
                for i, g in zip(idx, gens):
                    teacher = self.teacher(records[i])
                    with self.times("teacher targets"):
                        p, v = implicit_query_points(lambda x: teacher(x.to(dev)).float().cpu(), cfg.points_per_inr,
                                                     g, near_fraction=cfg.near_fraction)
                    p, v = p.to(dev), v.to(dev)
                    xyz.append(p), tgt.append(convert_target(v, records[i].function, head))
                pred = dec(zi, torch.stack(xyz)).squeeze(-1).float()  # [k, P]
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
        with torch.autocast(za.device.type, enabled=False):     # SigLIP's logits in float32
            return self._siglip_global(za.float(), zb.float(), world, labels)

    def _siglip_global(self, za, zb, world, labels):
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


def load_model(path: str | Path) -> tuple["GMNModel", dict[str, str], dict[str, torch.Tensor]]:
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
