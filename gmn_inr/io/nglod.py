"""NGLOD ``OctreeSDF`` checkpoints (nv-tlabs/nglod, ``sdf-net/lib/models/OctreeSDF.py``) -> ``OctreeField``.

Facts relied on (``docs/formats.md``): the trainer saves ``net.state_dict()`` (``--save-all`` pickles
the whole module instead: refused, as nothing is unpickled here) with

* ``features.{i}.fm`` ``[1, C, s_i + 1, s_i + 1, s_i + 1]``, ``s_i = 2^(base_lod + i)``: a *dense*
  feature volume per LOD, read by ``grid_sample(fm, xyz, align_corners=True, padding_mode="border")``
  (so ``fm[0, :, z, y, x]`` is the feature at vertex ``(x, y, z)``);
* ``louts.{j}.0.weight/bias`` ``[H, 3 + C]`` and ``louts.{j}.2.weight/bias`` ``[1, H]``: one decoder per
  LOD (one in all with ``--joint-decoder``), ReLU between, reading ``cat(xyz, features)`` (``[H, C]``:
  ``--pos-invariant``, features only).

At LOD ``i`` the SDF is ``louts[i](cat(xyz, sum_{k <= i} features_k(xyz)))``; the default (finest) LOD
is what NGLOD returns without ``lod``. This maps exactly onto an all-occupied ``OctreeField`` (corner
features, trilinear with ``align_corners=True``, clamped to the box like border padding, summed over
LODs) whose first layer's columns are reordered to its ``cat(features, xyz)``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from gmn_inr.fields import ArchSpec, MLPSpec, OctreeSpec, SpecError
from gmn_inr.fields.octree import OctreeField
from gmn_inr.fields.spec import RAW_XYZ

from .common import FormatError, read_torch_state

_FM = re.compile(r"^features\.(\d+)\.fm$")


def is_nglod_state(state: dict) -> bool:
    return any(_FM.match(str(k)) for k in state) and any(str(k).startswith("louts.") for k in state)


def load_nglod(path: str | Path, lod: Optional[int] = None) -> nn.Module:
    """An NGLOD ``OctreeSDF`` state dict -> ``OctreeField`` (``out_dim=1``: the SDF) at LOD index ``lod``
    (0 = ``base_lod``; default the finest), the same function on xyz in [-1, 1]."""
    path = Path(path)
    state = read_torch_state(path)
    if not is_nglod_state(state):
        raise FormatError(f"{path} is not an NGLOD OctreeSDF state dict: it needs 'features.<i>.fm' and "
                          f"'louts.<j>.*', its keys are {sorted(state)[:6]}")
    n_vol = 1 + max(int(_FM.match(str(k)).group(1)) for k in state if _FM.match(str(k)))
    vols = []
    for i in range(n_vol):
        fm = state.get(f"features.{i}.fm")
        if not isinstance(fm, torch.Tensor) or fm.dim() != 5 or fm.shape[0] != 1 or not fm.is_floating_point() \
                or len(set(fm.shape[2:])) != 1:
            raise FormatError(f"{path}: 'features.{i}.fm' must be a float [1, C, s+1, s+1, s+1] volume, got "
                              f"{tuple(fm.shape) if isinstance(fm, torch.Tensor) else fm!r}")
        vols.append(fm.detach().float()[0])
    C, s0 = vols[0].shape[0], vols[0].shape[1] - 1
    if s0 < 1 or s0 & (s0 - 1):
        raise FormatError(f"{path}: 'features.0.fm' has {s0 + 1} vertices a side; NGLOD's LOD grids have 2^k + 1")
    base_lod = s0.bit_length() - 1
    for i, v in enumerate(vols):
        want = (C, 2 ** (base_lod + i) + 1)
        if (v.shape[0], v.shape[1]) != want:
            raise FormatError(f"{path}: 'features.{i}.fm' is {tuple(v.shape)}; LOD {base_lod + i} with {C} channels "
                              f"needs [{C}, {want[1]}, {want[1]}, {want[1]}]")
    lod = n_vol - 1 if lod is None else int(lod)
    if not 0 <= lod < n_vol:
        raise FormatError(f"{path}: LOD index {lod} out of range (the file has {n_vol} LODs)")
    n_dec = len({str(k).split(".")[1] for k in state if str(k).startswith("louts.")})
    j = 0 if n_dec == 1 else lod                                        # --joint-decoder: one for all LODs
    keys = [f"louts.{j}.0.weight", f"louts.{j}.0.bias", f"louts.{j}.2.weight", f"louts.{j}.2.bias"]
    missing = [k for k in keys if not isinstance(state.get(k), torch.Tensor)]
    if missing:
        raise FormatError(f"{path}: the NGLOD decoder of LOD index {lod} lacks {missing}")
    w0, b0, w1, b1 = (state[k].detach().float() for k in keys)
    H = w0.shape[0]
    if w0.dim() != 2 or w0.shape[1] not in (C, C + 3) or tuple(b0.shape) != (H,) or tuple(w1.shape) != (1, H) \
            or tuple(b1.shape) != (1,):
        raise FormatError(f"{path}: decoder {j} is {[tuple(state[k].shape) for k in keys]}; NGLOD's is Linear(3 + {C} "
                          f"or {C}, H), ReLU, Linear(H, 1) (a positional encoding of xyz is not supported)")
    with_xyz = w0.shape[1] == C + 3
    try:
        spec = ArchSpec(family="octree", out_dim=1, name="nglod", encoding=RAW_XYZ if with_xyz else None,
                        mlp=MLPSpec(hidden_layers=1, hidden_dim=H, activation="relu", bias=True),
                        grid=OctreeSpec(base_lod=base_lod, n_lods=lod + 1, channels=C))
    except SpecError as exc:
        raise FormatError(f"{path}: {exc}") from None
    # every vertex of every LOD stored, rows in the OctreeField's order x + y n + z n^2
    verts, feats = [], []
    for v in vols[:lod + 1]:
        n = v.shape[1]
        lin = torch.arange(n ** 3)
        verts.append(torch.stack([lin % n, (lin // n) % n, lin // (n * n)], -1))
        feats.append(v.permute(1, 2, 3, 0).reshape(-1, C))             # fm[c, z, y, x] -> row z n^2 + y n + x
    field = OctreeField(spec, vertices=verts)
    w_first = torch.cat([w0[:, 3:], w0[:, :3]], 1) if with_xyz else w0   # NGLOD cat(xyz, f) -> ours cat(f, xyz)
    tensors = (*feats, w_first, b0, w1, b1)
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise FormatError(f"{path}: NaN or inf among the NGLOD parameters")
    with torch.no_grad():
        for p, f in zip(field.features, feats):
            p.copy_(f)
        lin0, lin1 = field.mlp.layers
        lin0.weight.copy_(w_first)
        lin0.bias.copy_(b0)
        lin1.weight.copy_(w1)
        lin1.bias.copy_(b1)
    return field.eval()


__all__ = ["is_nglod_state", "load_nglod"]
