"""One value for every implicit function: what an sdf, udf or occupancy INR says about its shape.

An sdf, a udf and an occupancy INR of one object describe one surface, but their outputs are
different numbers: a signed distance, an unsigned one, and an occupancy *logit* whose scale is
arbitrary (the fit only constrains its sign: BCE against inside/outside), so one occupancy INR's
logits reach 15 and another's 50. An encoder reading the raw outputs at the probe points (the
output neuron's probe row, graphs/probe.py) sees a scale that differs from INR to INR and from
function to function; the shape is not what decides the neighbours (benchmarks/implicit_functions.py:
occupancy INRs stay at chance with raw rows).

:func:`canonical_values` maps every function's outputs to one bounded quantity, the shape's
*truncated unsigned distance* ``min(d, TRUNCATION)`` (the unified decoder's target, INRet, clamped
as :data:`gmn_inr.losses.SDF_CLAMP` clamps it):

* sdf: ``|f|``; udf: ``f`` (clamped at 0 from below);
* occupancy: the logit is a monotone function of the signed distance with an INR-specific
  scale; ``|logit| * OCC_MEDIAN_DISTANCE / median_K |logit|`` divides that scale out (the
  median over the ``K`` probe points of one INR) and puts the median probe point at a fixed
  distance. The constant was chosen on the cpu zoo's *training* objects (docs/results/implicit_functions.md).

:func:`canonical_graph` writes those values into the output neuron's probe row of a graph (the
encoder's ``probe_readout`` and node pre-encoder read them); :class:`FunctionCanonical` does it
for a zoo record. Radiance INRs are left as they are. The function comes from the record (the
zoo's metadata), not from the weights: the graph alone does not say whether an output is a
distance or a logit.

:class:`ShapeTeacher` (the unified decoder's teacher) and :func:`shape_teacher_pairs` make every
implicit INR of a pair reconstruct the *shape's* UDF, taken from the same object's SDF INR.
"""
from __future__ import annotations

import dataclasses

import torch

from graphs.layout import N_TYPE, NodeType

#: the truncation of the canonical distance (= gmn_inr.losses.SDF_CLAMP, the decoder's clamp)
TRUNCATION = 0.1
#: where an occupancy INR's median probe point is put after dividing out its logit scale.
#: No-learning recall@1 on the cpu zoo's 72 training objects (occupancy/sdf, occupancy/udf):
#: 0.35 (the median |sdf| of those objects, i.e. a linear logit) 24% / 17%, 0.15 76% / 68%,
#: 0.075 90% / 90%: logits grow more slowly than distance away from the surface.
OCC_MEDIAN_DISTANCE = 0.075
IMPLICIT = ("sdf", "udf", "occupancy")


def canonical_values(values: torch.Tensor, function: str) -> torch.Tensor:
    """An INR's outputs ``values [..., K]`` at ``K`` points (the last axis: one INR's points) ->
    its truncated unsigned distance estimate ``[..., K]`` in ``[0, TRUNCATION]``. Radiance:
    returned unchanged."""
    if function == "radiance":
        return values
    if function == "sdf":
        d = values.abs()
    elif function == "udf":
        d = values.clamp_min(0)
    elif function == "occupancy":
        a = values.abs()
        scale = a.median(dim=-1, keepdim=True).values.clamp_min(1e-6)      # [..., 1]
        d = a * (OCC_MEDIAN_DISTANCE / scale)
    else:
        raise ValueError(f"canonical_values: unknown function {function!r}; known: radiance, {', '.join(IMPLICIT)}")
    return d.clamp_max(TRUNCATION)


def canonical_graph(graph, function: str):
    """A copy of ``graph`` (ParameterGraph) whose output neurons' probe rows are
    :func:`canonical_values` of the originals (radiance: ``graph`` itself). Raises ``ValueError``
    if the graph has no probe rows for its output neurons."""
    if function == "radiance":
        return graph
    if graph.probe is None:
        raise ValueError("canonical_graph needs a graph with probe features (graphs.to_graph of a field)")
    is_out = graph.x[graph.probe_index, N_TYPE] == int(NodeType.OUTPUT)            # [M]
    if not bool(is_out.any()):
        raise ValueError("canonical_graph: the graph has no probe row for an output neuron")
    probe = graph.probe.clone()
    probe[is_out] = canonical_values(probe[is_out], function)
    return dataclasses.replace(graph, probe=probe)


@torch.no_grad()
def canonical_output_features(field: torch.nn.Module, function: str) -> torch.Tensor:
    """No-learning baseline: the INR's :func:`canonical_values` at the probe points, ``[K]``
    (implicit functions have one output), compared by cosine."""
    from gmn_inr.baselines import sampled_outputs

    out = sampled_outputs(field)                                       # [C, K]
    if function == "radiance" or out.shape[0] != 1:
        raise ValueError(f"canonical_output_features reads one-output implicit INRs, got {function!r} "
                         f"with {out.shape[0]} outputs")
    return canonical_values(out[0], function)


class _Wrapped:
    """Delegates every attribute to the wrapped record."""

    def __init__(self, rec):
        self._rec = rec

    def __getattr__(self, name):
        return getattr(self._rec, name)

    def __repr__(self):
        return f"{type(self).__name__}({self._rec!r})"


class FunctionCanonical(_Wrapped):
    """A record whose graph carries :func:`canonical_graph`'s output probe rows (cached)."""

    def __init__(self, rec):
        super().__init__(rec)
        self._canon = None

    def graph(self):
        if self._canon is None:
            self._canon = canonical_graph(self._rec.graph(), self._rec.function)
        return self._canon

    def field(self):
        return self._rec.field()


class ShapeTeacher(_Wrapped):
    """A record whose graph is its own but whose teacher is its object's SDF INR.

    INRet's unified decoder reconstructs one function (the UDF) of the *shape* from any INR's
    embedding; an occupancy INR alone does not determine a UDF, so the teacher is the same
    object's SDF INR (``convert_target`` makes its UDF ``|sdf|``), as INRet takes it from the shape."""

    def __init__(self, rec, sdf_rec):
        super().__init__(rec)
        if sdf_rec.function != "sdf" or sdf_rec.object_id != rec.object_id:
            raise ValueError(f"ShapeTeacher needs the SDF INR of {rec.object_id!r}, got {sdf_rec!r}")
        self._sdf = sdf_rec
        self.function = "sdf"                      # the teacher's function, read by the training loop
        self.input_function = rec.function         # what the graph is an INR of

    def graph(self):
        return self._rec.graph()

    def field(self):
        return self._sdf.field()


def shape_teacher_pairs(pairs: list, sdf_records=None) -> list:
    """``pairs`` of implicit records with every record's teacher replaced by its object's SDF INR
    (:class:`ShapeTeacher`). The SDF INRs are taken from the pairs themselves and ``sdf_records``;
    a pair of an object with none is dropped."""
    sdf = {r.object_id: r for pair in pairs for r in pair if r.function == "sdf"}
    for r in sdf_records or ():
        sdf.setdefault(r.object_id, r)
    return [tuple(ShapeTeacher(r, sdf[r.object_id]) for r in pair) for pair in pairs
            if all(r.object_id in sdf for r in pair)]
