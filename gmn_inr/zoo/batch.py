"""Many fields of one architecture as stacked parameters: ``torch.func.functional_call`` + ``vmap``.

The parameters of ``B`` fields are stacked along a new leading dimension and the reference
module from :mod:`gmn_inr.fields` runs under ``vmap`` over that dimension, so one optimiser
steps all of them; the stack splits back into ordinary ``state_dict`` s that
:func:`gmn_inr.fields.load_field` rebuilds.

Sparse fields (octrees) differ per object (each has its own vertex buffers). They are stacked
by padding: each LOD's feature table is padded to the batch's largest vertex count, each
object's dense ``vertex -> row`` lookup is stacked too, and the padding rows are never read
(missing vertices point at the shared zero row past the padding), so they get no gradient and
are cut off afterwards. The stored field is exactly the sparse octree that was trained.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.func import functional_call, vmap

from gmn_inr.fields import ArchSpec, build_field, get_family


class FieldStack:
    """``B`` fields of one spec as stacked tensors around one template module.

    ``params[name] [B, ...]`` (leaves that require grad), ``buffers[name] [B, ...]`` (only the
    lookups of sparse fields: they differ per object) and ``grid_names``: the parameters that
    are grid storage (the field's ``grid_parameters()``), fitted at the grid learning rate.
    """

    def __init__(self, spec: ArchSpec, occupancies: Optional[Sequence[torch.Tensor]], B: int,
                 seed: "int | Sequence[int]", device: "torch.device | str | None" = None):
        # ``seed``: one int (field b is initialised from ``seed + b``) or one seed per field. Each
        # field's initial parameters come from its own seed, so they do not depend on which batch
        # (or which position in it) the field lands in: the zoo seeds each INR by its own key.
        # ``device``: where the stack lives and runs; the fields are initialised on the CPU (its
        # generator) and moved, so an INR starts from the same weights on every device.
        seeds = [int(seed) + b for b in range(B)] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != B:
            raise ValueError(f"FieldStack needs {B} seeds, got {len(seeds)}")
        self.seeds = seeds
        self.spec = spec
        self.B = B
        self.sparse = getattr(get_family(spec.family).field, "sparse", False)
        if self.sparse:      # the octree's layout: features.i [V_i, C], vertices_i, lookup_i
            fields = [_seeded_field(spec, s, occupancy=o) for s, o in zip(seeds, occupancies)]
            self.template = build_field(spec, occupancy=torch.ones_like(occupancies[0]))
            self.buffers = {}
            self.n_vertices = [[f.vertices(i).shape[0] for f in fields] for i in range(len(spec.grid.lods))]
            self.vertices = [[f.vertices(i) for i in range(len(spec.grid.lods))] for f in fields]
            params = {}
            for i in range(len(spec.grid.lods)):
                vmax = max(self.n_vertices[i])
                feats = torch.zeros(B, vmax, spec.grid.channels)
                looks = []
                for b, f in enumerate(fields):
                    v = self.n_vertices[i][b]
                    feats[b, :v] = f.features[i].detach()
                    look = getattr(f, f"lookup_{i}")
                    # "not stored" points at this object's own zero row (index v); move it to the
                    # shared zero row after the padding so padding rows are never read
                    looks.append(torch.where(look == v, vmax, look))
                params[f"features.{i}"] = feats
                self.buffers[f"lookup_{i}"] = torch.stack(looks)
            for name, p in fields[0].named_parameters():
                if not name.startswith("features."):
                    params[name] = torch.stack([dict(f.named_parameters())[name].detach() for f in fields])
        else:
            fields = [_seeded_field(spec, s) for s in seeds]
            self.template = fields[0]
            self.buffers = {}
            names = [n for n, _ in fields[0].named_parameters()]
            params = {n: torch.stack([dict(f.named_parameters())[n].detach() for f in fields]) for n in names}
        dev = torch.device("cpu") if device is None else torch.device(device)
        self.params = {n: p.to(dev).clone().requires_grad_(True) for n, p in params.items()}
        self.buffers = {n: b.to(dev) for n, b in self.buffers.items()}
        self.template.to(dev)            # its own buffers (e.g. encoding frequencies) run there too
        self.device = dev
        self.grid_names = {n for n, _ in self.template.grid_parameters()}
        self.freq_mask = None

    def mask_frequencies(self, max_freq: float) -> None:
        """Hold the first-layer weights of encoding inputs above ``max_freq`` at zero.

        Why: nf2vec's encoding goes up to ``2^23 pi`` (tcnn style); such inputs are
        pseudo-random per point, so a short fit memorises its training points through them
        and is noise everywhere else. Zero weights (kept zero by masking their gradient;
        Adam then never moves them) make the field ignore those inputs, exactly, in the
        unchanged architecture."""
        enc = self.template.encoding
        if enc is None:
            return
        start = self.template.spec.mlp_in_dim - enc.out_dim       # encoding follows the grid features
        keep = torch.ones(self.template.spec.mlp_in_dim, device=self.device)
        keep[start:] = (enc.freq <= max_freq).float()
        if bool(keep.all()):
            return
        w = self.params["mlp.layers.0.weight"]                      # [B, H, in]
        with torch.no_grad():
            w.mul_(keep)
        w.register_hook(lambda g: g * keep)
        self.freq_mask = keep

    def forward(self, x: torch.Tensor, idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x [B', N, 3] -> raw [B', N, out_dim]`` for the fields ``idx`` (default all)."""
        params = self.params if idx is None else {n: p[idx] for n, p in self.params.items()}
        buffers = self.buffers if idx is None else {n: b[idx] for n, b in self.buffers.items()}

        def one(p, b, xx):
            return functional_call(self.template, (p, b), (xx,))

        return vmap(one)(params, buffers, x)

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """Split the stack into ``B`` ordinary ``state_dict`` s (octree: padding cut off,
        own vertex buffers), each loadable by :func:`load_field`."""
        out = []
        for b in range(self.B):
            sd = {}
            for n, p in self.params.items():
                t = p[b].detach().cpu()
                if self.sparse and n.startswith("features."):
                    t = t[: self.n_vertices[int(n.split(".")[1])][b]]
                sd[n] = t.clone().contiguous()
            if self.sparse:
                for i, v in enumerate(self.vertices[b]):
                    sd[f"vertices_{i}"] = v.clone()
            out.append(sd)
        return out


def _seeded_field(spec: ArchSpec, seed: int, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_field(spec, **kw)


_Batch = FieldStack   # the name fit_batch used before the split
