"""A tiny in-memory stand-in for the zoo's records and pairs (used by the learning tests).

Records follow the interface ``gmn_inr.train`` expects: ``.graph()``, ``.field()``, ``.function``,
``.object_id``, ``.arch``, ``.family``. Teachers are freshly initialised "tiny" fields with a
per-object seed, plus a per-object shift of the output layer, so objects differ visibly.
"""
from __future__ import annotations

import itertools

import torch

from gmn_inr.fields import arch_spec_for, build_field
from gmn_inr.fields.activations import out_dim_of
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


def tiny_records(n_objects=4, archs=("MLP", "HASH"), function="radiance", seed=0):
    """``{object_id: [record per arch]}`` of tiny random fields."""
    out = {}
    for j in range(n_objects):
        recs = []
        for a, name in enumerate(archs):
            torch.manual_seed(seed * 100003 + j * 101 + a)
            f = build_field(arch_spec_for(name, out_dim_of(function), "tiny"))
            with torch.no_grad():
                if hasattr(f, "grid") and hasattr(f.grid, "params"):
                    f.grid.params.uniform_(-1.0, 1.0)      # tcnn's 1e-4 init would make a constant field
                last = f.mlp.layers[-1]
                # object j's output offset, shared by its architectures: a visible per-object signal
                shift = torch.linspace(-1.5, 1.5, n_objects)[j]
                last.weight.mul_(10.0)   # default inits give near-constant outputs
                if last.bias is not None:
                    last.bias.add_(shift)
                else:
                    last.weight[:, 0].add_(shift)
            recs.append(TinyRecord(f, f"obj{j}", name, function))
        out[f"obj{j}"] = recs
    return out


def tiny_pairs(n_objects=4, archs=("MLP", "HASH"), function="radiance", seed=0):
    """Pairs ``(rec_a, rec_b)``: every object in every two different architectures."""
    recs = tiny_records(n_objects, archs, function, seed)
    return [(r[a], r[b]) for r in recs.values() for a, b in itertools.combinations(range(len(archs)), 2)]
