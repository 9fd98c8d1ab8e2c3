"""A tiny in-memory stand-in for the zoo's records and pairs (used by the learning tests).

Records follow the interface ``gmn_inr.train`` expects: ``.graph()``, ``.field()``, ``.function``,
``.object_id``, ``.arch``, ``.family``. Teachers are "tiny" fields of each
architecture fitted for a moment to one coloured sphere per object.
"""
from __future__ import annotations

import itertools

import torch

from gmn_inr.fields import arch_spec_for, build_field
from gmn_inr.fields.activations import out_dim_of, radiance_from_raw
from graphs import to_graph


class TinyRecord:
    def __init__(self, field, object_id: str, arch: str, function: str):
        self._field = field.eval()
        for p in self._field.parameters():
            p.requires_grad_(False)
        self.object_id, self.arch, self.function = object_id, arch, function
        self.family = field.spec.family
        self._graph = None

    def field(self):
        return self._field

    def graph(self):
        if self._graph is None:
            self._graph = to_graph(self._field)
        return self._graph

    def __repr__(self):
        return f"TinyRecord({self.object_id}, {self.arch}, {self.function})"


def _target(function, centre, radius, colour, xyz):
    """Object j is a coloured sphere: its radiance (rgb, density) or its sdf / udf / occupancy."""
    d = (xyz - centre).norm(dim=-1, keepdim=True) - radius
    if function == "radiance":
        density = 30.0 * torch.sigmoid(-d / 0.03)
        return torch.cat([colour.expand(*xyz.shape[:-1], 3), density], dim=-1)
    if function == "sdf":
        return d
    if function == "udf":
        return d.abs()
    return -d / 0.05                                        # occupancy logit


def tiny_records(n_objects=4, archs=("MLP", "HASH"), function="radiance", seed=0, fit_steps=150):
    """``{object_id: [record per arch]}``: tiny fields of every arch, each briefly fitted (Adam) to
    object j's sphere, so the records of one object describe the same thing."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for j in range(n_objects):
        centre = (torch.rand(3, generator=g) - 0.5) * 0.6
        radius = 0.25 + 0.3 * torch.rand((), generator=g)
        colour = torch.rand(3, generator=g)
        recs = []
        for a, name in enumerate(archs):
            torch.manual_seed(seed * 100003 + j * 101 + a)
            f = build_field(arch_spec_for(name, out_dim_of(function), "tiny"))
            opt = torch.optim.Adam(f.parameters(), lr=1e-2)
            for _ in range(fit_steps):
                xyz = torch.rand(512, 3) * 2 - 1
                want = _target(function, centre, radius, colour, xyz)
                raw = f(xyz)
                if function == "radiance":
                    rgb, sigma = radiance_from_raw(raw)
                    loss = (rgb - want[:, :3]).square().mean() + (sigma - want[:, 3]).square().mean() / 100
                elif function == "occupancy":
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(raw, torch.sigmoid(want))
                else:
                    loss = (raw - want).abs().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            recs.append(TinyRecord(f, f"obj{j}", name, function))
        out[f"obj{j}"] = recs
    return out


def tiny_pairs(n_objects=4, archs=("MLP", "HASH"), function="radiance", seed=0, fit_steps=150):
    """Pairs ``(rec_a, rec_b)``: every object in every two different architectures."""
    recs = tiny_records(n_objects, archs, function, seed, fit_steps)
    return [(r[a], r[b]) for r in recs.values() for a, b in itertools.combinations(range(len(archs)), 2)]
