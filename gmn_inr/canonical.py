"""One value for every implicit function: what an sdf, udf or occupancy INR says about its shape.

An sdf, a udf and an occupancy INR of one object describe one surface, but their outputs are
different numbers: a signed distance, an unsigned one, and an occupancy *logit* whose scale is
arbitrary (the fit only constrains its sign: BCE against inside/outside), so one occupancy INR's
logits reach 15 and another's 50. An encoder reading the raw outputs at the probe points (the
output neuron's probe row, graphs/probe.py) sees a scale that differs from INR to INR and from
function to function; the shape is not what decides the neighbours (benchmarks/implicit_functions.py:
occupancy INRs stay at chance with raw rows).

:func:`canonical_values` maps every function's outputs to one bounded quantity, the shape's
*truncated unsigned distance* in units of the truncation, ``min(d, TRUNCATION) / TRUNCATION`` in
``[0, 1]`` (the unified decoder's target, INRet, clamped as :data:`gmn_inr.losses.SDF_CLAMP` clamps
it). The unit matters to a learned reader: in units of distance (``[0, 0.1]``) the row's share of
the untrained cpu encoder's embedding spread is ~4x smaller than the rest's, and that untrained
encoder's cross-function recall@1 on the cpu zoo falls from 74% (mean of the six pairs) to 20%:

* sdf: ``|f|``; udf: ``f`` (clamped at 0 from below);
* occupancy: the logit is a monotone function of the signed distance with an INR-specific
  scale; ``|logit| * OCC_MEDIAN_DISTANCE / median_K |logit|`` divides that scale out (the
  median over the ``K`` probe points of one INR) and puts the median probe point at a fixed
  distance. The constant was chosen on the cpu zoo's *training* objects (docs/results/implicit_functions.md).

The unsigned distance drops what an sdf's or an occupancy's sign says, inside or outside; where an
occupancy INR's logits are flat that sign is nearly all its output says. :func:`canonical_side`
keeps it apart: +1 inside, -1 outside, 0 for a udf (no sign), which geometry mode gives the graph
(``ParameterGraph.side``) for the encoder's geometry head.

:func:`canonical_graph` writes those values into the output neuron's probe row of a graph (the
encoder's ``probe_readout`` and node pre-encoder read them); :class:`FunctionCanonical` does it
for a zoo record. Radiance INRs are left as they are, unless ``geometry``: then a radiance
field's density row becomes the same truncated distance (its density read as an occupancy,
``sigma / DENSITY_REF``, :func:`density_logit`) and an implicit INR's output neuron takes the
density's channel, so one readout matrix reads the geometry of both (gmn_inr.cross_modal). The function comes from the record (the
zoo's metadata), not from the weights: the graph alone does not say whether an output is a
distance or a logit.

:class:`ShapeTeacher` (the unified decoder's teacher) and :func:`shape_teacher_pairs` make every
implicit INR of a pair reconstruct the *shape's* UDF, taken from the same object's SDF INR.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from gmn_inr.encoder import GEOMETRY_CHANNEL
from gmn_inr.zoo.dataset import RecordView
from graphs.layout import N_OUT, N_TYPE, OUT_SCALE, NodeType, output_channel

#: the truncation of the canonical distance (= gmn_inr.losses.SDF_CLAMP, the decoder's clamp)
TRUNCATION = 0.1
#: where an occupancy INR's median probe point is put after dividing out its logit scale.
#: No-learning recall@1 on the cpu zoo's 72 training objects (occupancy/sdf, occupancy/udf):
#: 0.35 (the median |sdf| of those objects, i.e. a linear logit) 24% / 17%, 0.15 76% / 68%,
#: 0.075 90% / 90%: logits grow more slowly than distance away from the surface.
OCC_MEDIAN_DISTANCE = 0.075
IMPLICIT = ("sdf", "udf", "occupancy")
#: the side's weight beside the row in the no-learning cosine (:func:`canonical_output_features`):
#: the cosine of ``[asinh(u), w side]`` on the cpu zoo's training INRs peaks at w = 0.5 (cross-function
#: recall@1 71.4 / 75.3 / 76.8 / 75.2 / 70.9% at w = 0 / 0.25 / 0.5 / 0.75 / 1)
SIDE_COSINE_WEIGHT = 0.5
#: the density a radiance field reaches inside its object (the zoo fits ``SIGMA_MAX * sigmoid(-sdf /
#: eps)``, gmn_inr.zoo.gate.SIGMA_MAX): ``sigma / DENSITY_REF`` is read as an occupancy probability
DENSITY_REF = 30.0
# GEOMETRY_CHANNEL (the encoder's, radiance's density channel) carries the canonical distance in
# ``geometry`` mode: sdf / udf / occupancy outputs are moved there, so one readout reads the geometry
# of every INR, radiance or implicit


def canonical_values(values: torch.Tensor, function: str) -> torch.Tensor:
    """An INR's outputs ``values [..., K]`` at ``K`` points (the last axis: one INR's points) ->
    its truncated unsigned distance estimate over ``TRUNCATION``, ``[..., K]`` in ``[0, 1]``.
    Radiance: returned unchanged."""
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
    return d.clamp_max(TRUNCATION) / TRUNCATION


def canonical_side(values: torch.Tensor, function: str) -> torch.Tensor:
    """An implicit INR's outputs ``values [..., K]`` -> which side of the surface each point is on,
    where the function tells it: ``[..., K]``, +1 inside (sdf < 0, occupancy logit > 0), -1 outside,
    0 for a udf (no sign). Radiance: its density read as an occupancy (:func:`density_logit`).

    The unsigned distance of :func:`canonical_values` drops this, and where an occupancy INR's
    logits are flat (the cpu zoo's tri-planes: |logit| above half its maximum at 98% of the probe
    points) the sign is all its output says: it matches the SDF's inside/outside at 99% of them."""
    if function == "radiance":
        values, function = density_logit(values), "occupancy"
    if function == "udf":
        return torch.zeros_like(values)
    if function == "sdf":
        inside = values < 0
    elif function == "occupancy":
        inside = values > 0
    else:
        raise ValueError(f"canonical_side: unknown function {function!r}; known: radiance, {', '.join(IMPLICIT)}")
    return inside.to(values.dtype) * 2 - 1


def density_logit(raw_sigma: torch.Tensor) -> torch.Tensor:
    """A radiance field's raw density output ``[..., K]`` -> the logit of ``softplus(raw) /
    DENSITY_REF`` (an occupancy logit, ``[..., K]``), clamped to a probability in ``[1e-6, 1 - 1e-6]``."""
    p = (F.softplus(raw_sigma) / DENSITY_REF).clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


def canonical_geometry(outputs: torch.Tensor, function: str) -> torch.Tensor:
    """An INR's raw outputs ``outputs [C, K]`` at ``K`` points -> its truncated unsigned distance
    estimate ``[K]``: radiance reads its density channel as an occupancy (:func:`density_logit`)."""
    if function == "radiance":
        if outputs.shape[0] != 4:
            raise ValueError(f"a radiance INR has 4 outputs (r, g, b, sigma), got {outputs.shape[0]}")
        return canonical_values(density_logit(outputs[3]), "occupancy")
    if outputs.shape[0] != 1:
        raise ValueError(f"an {function} INR has one output, got {outputs.shape[0]}")
    return canonical_values(outputs[0], function)


def canonical_graph(graph, function: str, geometry: bool = False):
    """A copy of ``graph`` (ParameterGraph) whose output neurons' probe rows are
    :func:`canonical_values` of the originals (radiance: ``graph`` itself).

    ``geometry``: also the radiance fields' density row becomes their canonical distance
    (:func:`canonical_geometry`), an implicit INR's output neuron is given the density's channel
    (:data:`GEOMETRY_CHANNEL`), so every INR's geometry is read by one probe-readout matrix, and the
    graph carries the inside/outside of its outputs (``side``, :func:`canonical_side`).
    Raises ``ValueError`` if the graph has no probe rows for its output neurons."""
    if function == "radiance" and not geometry:
        return graph
    if graph.probe is None:
        raise ValueError("canonical_graph needs a graph with probe features (graphs.to_graph of a field)")
    is_out = graph.x[graph.probe_index, N_TYPE] == int(NodeType.OUTPUT)            # [M]
    if not bool(is_out.any()):
        raise ValueError("canonical_graph: the graph has no probe row for an output neuron")
    probe, x, side = graph.probe.clone(), graph.x, None
    if function == "radiance":
        rows = is_out & (output_channel(graph.x[graph.probe_index]) == GEOMETRY_CHANNEL)
        if int(rows.sum()) != 1:
            raise ValueError(f"a radiance graph needs one density output neuron, found {int(rows.sum())}")
        side = canonical_side(probe[rows][0], "radiance")
        probe[rows] = canonical_values(density_logit(probe[rows]), "occupancy")
    else:
        if geometry:
            if int(is_out.sum()) != 1:
                raise ValueError(f"an {function} graph has one output neuron, found {int(is_out.sum())}")
            side = canonical_side(probe[is_out][0], function)
            x = x.clone()
            x[graph.probe_index[is_out], N_OUT] = GEOMETRY_CHANNEL / OUT_SCALE
        probe[is_out] = canonical_values(probe[is_out], function)
    return dataclasses.replace(graph, x=x, probe=probe, side=side)


def canonical_features(outputs: torch.Tensor, function: str, side: bool = False) -> torch.Tensor:
    """No-learning baseline features of an INR's raw outputs ``outputs [C, K]`` at the probe points:
    its :func:`canonical_geometry`, ``[K]``, compared by cosine (radiance fields: from their
    density). ``side``: ``[2K]``, the row through ``asinh`` beside ``SIDE_COSINE_WEIGHT *``
    :func:`canonical_side`."""
    u = canonical_geometry(outputs, function)
    if not side:
        return u
    values = outputs[3] if function == "radiance" else outputs[0]
    return torch.cat([torch.asinh(u), SIDE_COSINE_WEIGHT * canonical_side(values, function)])


@torch.no_grad()
def canonical_output_features(field: torch.nn.Module, function: str, side: bool = False) -> torch.Tensor:
    """:func:`canonical_features` of ``field`` sampled at the probe points."""
    from gmn_inr.baselines import sampled_outputs

    return canonical_features(sampled_outputs(field), function, side)


class FunctionCanonical(RecordView):
    """A record whose graph carries :func:`canonical_graph`'s output probe rows (cached);
    ``geometry``: as :func:`canonical_graph`'s (radiance and implicit INRs in one space)."""

    def __init__(self, rec, geometry: bool = False):
        super().__init__(rec)
        self._geometry = geometry

    def transform_graph(self, graph):
        return canonical_graph(graph, self._rec.function, self._geometry)


class ShapeTeacher(RecordView):
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
