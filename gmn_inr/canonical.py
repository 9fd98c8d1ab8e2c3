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
* occupancy: only the logit's *sign* is fitted (BCE against inside/outside); its magnitude away
  from the surface is whatever the fit left, and where it is flat (the cpu zoo's tri-planes) it says
  nothing about distance. So the distance is read from the sign: :func:`surface_distance` finds
  where the INR's inside/outside changes on a grid ``SURFACE_SPACING`` apart around the probe points
  and measures each probe point's distance to those crossings. Given only the outputs at the probe
  points (no field), the fallback divides the logit's INR-specific scale out,
  ``|logit| * OCC_MEDIAN_DISTANCE / median_K |logit|``, which puts the median probe point at a
  fixed distance. Both constants were chosen on training objects
  (docs/results/history/implicit_functions.md, "Constants").

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
import itertools
import weakref
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from gmn_inr.devices import on_device
from gmn_inr.encoder import GEOMETRY_CHANNEL
from gmn_inr.zoo.dataset import RecordView
from graphs.layout import N_OUT, N_TYPE, OUT_SCALE, NodeType, output_channel

#: the truncation of the canonical distance (= gmn_inr.losses.SDF_CLAMP, the decoder's clamp)
TRUNCATION = 0.1
#: where an occupancy INR's median probe point is put after dividing out its logit scale: logits
#: grow more slowly than distance away from the surface (chosen on training objects: see
#: docs/results/history/implicit_functions.md, "Constants")
OCC_MEDIAN_DISTANCE = 0.075
IMPLICIT = ("sdf", "udf", "occupancy")
#: spacing of the grid on which :func:`surface_distance` looks for sign changes: half the truncation,
#: so the probe points (0.2 apart) lie on it (finer grids gain nothing: docs/results/history/implicit_functions.md)
SURFACE_SPACING = TRUNCATION / 2
#: the functions whose canonical distance comes from :func:`surface_distance` when the field is at
#: hand (an sdf and a udf are distances already; a udf has no sign to change). Radiance: in geometry
#: mode, its density read as an occupancy (its sign changes place the surface better than its scale)
SURFACE_FUNCTIONS = ("occupancy", "radiance")
#: the side's weight beside the row in the no-learning cosine (:func:`canonical_output_features`),
#: where that cosine peaks on training INRs (docs/results/history/implicit_functions.md, "Constants")
SIDE_COSINE_WEIGHT = 0.5
#: the density a radiance field reaches inside its object (the zoo fits ``SIGMA_MAX * sigmoid(-sdf /
#: eps)``, gmn_inr.zoo.gate.SIGMA_MAX): ``sigma / DENSITY_REF`` is read as an occupancy probability
DENSITY_REF = 30.0
# GEOMETRY_CHANNEL (the encoder's, radiance's density channel) carries the canonical distance in
# ``geometry`` mode: sdf / udf / occupancy outputs are moved there, so one readout reads the geometry
# of every INR, radiance or implicit


def canonical_values(values: torch.Tensor, function: str, surface: Optional[torch.Tensor] = None) -> torch.Tensor:
    """An INR's outputs ``values [..., K]`` at ``K`` points (the last axis: one INR's points) ->
    its truncated unsigned distance estimate over ``TRUNCATION``, ``[..., K]`` in ``[0, 1]``.
    Radiance: returned unchanged.

    ``surface [K]``: an occupancy INR's distance to its sign changes (:func:`surface_distance`), used
    instead of the logit's scale; only for occupancy."""
    if function == "radiance":
        return values
    if surface is not None and function != "occupancy":
        raise ValueError(f"canonical_values: a surface distance is read for occupancy INRs only, not {function!r}")
    if function == "sdf":
        d = values.abs()
    elif function == "udf":
        d = values.clamp_min(0)
    elif function == "occupancy" and surface is not None:
        if surface.shape != values.shape[-1:]:
            raise ValueError(f"canonical_values: surface distance {tuple(surface.shape)} for outputs "
                             f"{tuple(values.shape)}: one distance per point expected")
        d = surface.to(device=values.device, dtype=values.dtype).expand_as(values)
    elif function == "occupancy":
        a = values.abs()
        scale = a.median(dim=-1, keepdim=True).values.clamp_min(1e-6)      # [..., 1]
        d = a * (OCC_MEDIAN_DISTANCE / scale)
    else:
        raise ValueError(f"canonical_values: unknown function {function!r}; known: radiance, {', '.join(IMPLICIT)}")
    return d.clamp_max(TRUNCATION) / TRUNCATION


def _inside(values: torch.Tensor, function: str) -> Optional[torch.Tensor]:
    """One output channel ``values [..., K]`` (radiance: its density) -> ``[..., K]`` positive inside
    and negative outside: an occupancy logit, minus an sdf, a density's :func:`density_logit`;
    None for a udf, which has no sign."""
    if function == "radiance":
        return density_logit(values)
    if function == "occupancy":
        return values
    if function == "sdf":
        return -values
    if function == "udf":
        return None
    raise ValueError(f"unknown function {function!r}; known: radiance, {', '.join(IMPLICIT)}")


def canonical_side(values: torch.Tensor, function: str) -> torch.Tensor:
    """An implicit INR's outputs ``values [..., K]`` -> which side of the surface each point is on,
    where the function tells it: ``[..., K]``, +1 inside (sdf < 0, occupancy logit > 0), -1 outside,
    0 for a udf (no sign). Radiance: its density read as an occupancy (:func:`density_logit`).

    The unsigned distance of :func:`canonical_values` drops this, and where an occupancy INR's
    logits are flat (the cpu zoo's tri-planes: |logit| above half its maximum at 98% of the probe
    points) the sign is all its output says: it matches the SDF's inside/outside at 99% of them."""
    try:
        inside = _inside(values, function)
    except ValueError as e:
        raise ValueError(f"canonical_side: {e}") from None
    if inside is None:
        return torch.zeros_like(values)
    return (inside > 0).to(values.dtype) * 2 - 1


def inside_logit(outputs: torch.Tensor, function: str) -> torch.Tensor:
    """Raw outputs ``outputs [P, C]`` of an INR at ``P`` points -> ``[P]``, positive inside and
    negative outside: an occupancy logit, minus an sdf, a radiance field's :func:`density_logit`.
    A udf has no sign: ``ValueError``."""
    inside = _inside(outputs[:, 3 if function == "radiance" else 0], function)
    if inside is None:
        raise ValueError(f"inside_logit: {function!r} INRs have no inside and outside (known: sdf, occupancy, radiance)")
    return inside


#: crossings per distance block in :func:`surface_distance` (bounds its memory: K x this floats)
_CROSSING_BLOCK = 8192


@torch.no_grad()
def surface_distance(field: torch.nn.Module, function: str, points: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The distance from each point (default: the probe points) to where ``field``'s inside/outside
    changes, clamped to ``TRUNCATION``: ``[K]``, on the field's device.

    The field is evaluated once on a grid ``SURFACE_SPACING`` apart over the points' box grown by
    ``TRUNCATION`` (33^3 points for the probe points); along every grid edge whose ends differ in
    sign (:func:`inside_logit`) the crossing is placed by linear interpolation of the logit, and
    each point takes its nearest crossing. Only the sign decides where a crossing is; the logit's
    magnitude only places it within its edge, so a flat or saturated occupancy logit gives the same
    distances as a graded one, to within ``SURFACE_SPACING``."""
    device = next((p.device for p in field.parameters()), None)          # where the field runs
    return surface_distances([field], function, points, device=device)[0]


@torch.no_grad()
def surface_distances(fields: Sequence[torch.nn.Module], function: str, points: Optional[torch.Tensor] = None,
                      device: "torch.device | str | None" = None) -> torch.Tensor:
    """:func:`surface_distance` of many INRs at once, ``[N, K]`` on ``device`` (default: the
    points'): one grid, each field evaluated on it (a field elsewhere runs as a copy on ``device``;
    the caller's is not moved), then the crossings of all ``N`` found and reduced together."""
    from graphs.probe import probe_points

    points = probe_points() if points is None else points
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"surface_distance: points must be [K, 3], got {tuple(points.shape)}")
    device = points.device if device is None else torch.device(device)
    lo = float(points.abs().max()) + TRUNCATION
    n = int(round(2 * lo / SURFACE_SPACING)) + 1
    points = points.to(device)
    axis = torch.linspace(-lo, lo, n, dtype=points.dtype, device=device)
    grid = torch.cartesian_prod(axis, axis, axis).reshape(n, n, n, 3)
    flat = grid.reshape(-1, 3)

    # one forward per field (fields of any architectures), the rest batched over the N fields
    v = torch.stack([inside_logit(on_device(f, device)(flat), function) for f in fields]).reshape(-1, n, n, n)
    owner, crossings = [], []
    for dim in range(1, 4):                               # the grid's edges along x, y and z
        a, b = v.narrow(dim, 0, n - 1), v.narrow(dim, 1, n - 1)
        flip = (a > 0) != (b > 0)
        # inf / inf (logits beyond float range on both ends) puts the crossing mid-edge
        t = (a[flip] / (a[flip] - b[flip])).nan_to_num(0.5).clamp(0, 1).unsqueeze(-1)   # [C_dim, 1]
        ga = grid.narrow(dim - 1, 0, n - 1).expand(len(fields), -1, -1, -1, -1)
        gb = grid.narrow(dim - 1, 1, n - 1).expand(len(fields), -1, -1, -1, -1)
        pa, pb = ga[flip], gb[flip]
        crossings.append(pa + t * (pb - pa))
        owner.append(flip.nonzero()[:, 0])                # which field each crossing belongs to
    crossings, owner = torch.cat(crossings), torch.cat(owner)                      # [C, 3], [C]
    d = torch.full((len(fields), len(points)), TRUNCATION, dtype=points.dtype, device=device)
    for block, who in zip(crossings.split(_CROSSING_BLOCK), owner.split(_CROSSING_BLOCK)):   # none: all truncated
        near = torch.cdist(points, block).t()                                      # [c, K]
        d.scatter_reduce_(0, who[:, None].expand_as(near), near, reduce="amin")
    return d


def density_logit(raw_sigma: torch.Tensor) -> torch.Tensor:
    """A radiance field's raw density output ``[..., K]`` -> the logit of ``softplus(raw) /
    DENSITY_REF`` (an occupancy logit, ``[..., K]``), clamped to a probability in ``[1e-6, 1 - 1e-6]``."""
    p = (F.softplus(raw_sigma) / DENSITY_REF).clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


def canonical_geometry(outputs: torch.Tensor, function: str, surface: Optional[torch.Tensor] = None) -> torch.Tensor:
    """An INR's raw outputs ``outputs [C, K]`` at ``K`` points -> its truncated unsigned distance
    estimate ``[K]``: radiance reads its density channel as an occupancy (:func:`density_logit`).
    ``surface``: as :func:`canonical_values`' (occupancy, and radiance read as one)."""
    if function == "radiance":
        if outputs.shape[0] != 4:
            raise ValueError(f"a radiance INR has 4 outputs (r, g, b, sigma), got {outputs.shape[0]}")
        return canonical_values(density_logit(outputs[3]), "occupancy", surface)
    if outputs.shape[0] != 1:
        raise ValueError(f"an {function} INR has one output, got {outputs.shape[0]}")
    return canonical_values(outputs[0], function, surface)


def field_surface(field: torch.nn.Module, function: str) -> Optional[torch.Tensor]:
    """:func:`surface_distance` at the probe points for the functions that read it
    (``SURFACE_FUNCTIONS``), else None."""
    return surface_distance(field, function) if function in SURFACE_FUNCTIONS else None


def canonical_graph(graph, function: str, geometry: bool = False, surface: Optional[torch.Tensor] = None):
    """A copy of ``graph`` (ParameterGraph) whose output neurons' probe rows are
    :func:`canonical_values` of the originals (radiance: ``graph`` itself).

    ``geometry``: also the radiance fields' density row becomes their canonical distance
    (:func:`canonical_geometry`), an implicit INR's output neuron is given the density's channel
    (:data:`GEOMETRY_CHANNEL`), so every INR's geometry is read by one probe-readout matrix, and the
    graph carries the inside/outside of its outputs (``side``, :func:`canonical_side`).
    ``surface [K]``: an occupancy INR's :func:`surface_distance` (:func:`canonical_values`).
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
        probe[rows] = canonical_values(density_logit(probe[rows]), "occupancy", surface)
    else:
        if geometry:
            if int(is_out.sum()) != 1:
                raise ValueError(f"an {function} graph has one output neuron, found {int(is_out.sum())}")
            side = canonical_side(probe[is_out][0], function)
            x = x.clone()
            x[graph.probe_index[is_out], N_OUT] = GEOMETRY_CHANNEL / OUT_SCALE
        probe[is_out] = canonical_values(probe[is_out], function, surface)
    return dataclasses.replace(graph, x=x, probe=probe, side=side)


def canonical_features(outputs: torch.Tensor, function: str, side: bool = False,
                       surface: Optional[torch.Tensor] = None) -> torch.Tensor:
    """No-learning baseline features of an INR's raw outputs ``outputs [C, K]`` at the probe points:
    its :func:`canonical_geometry`, ``[K]``, compared by cosine (radiance fields: from their
    density). ``side``: ``[2K]``, the row through ``asinh`` beside ``SIDE_COSINE_WEIGHT *``
    :func:`canonical_side`. ``surface``: as :func:`canonical_values`'."""
    u = canonical_geometry(outputs, function, surface)
    if not side:
        return u
    values = outputs[3] if function == "radiance" else outputs[0]
    return torch.cat([torch.asinh(u), SIDE_COSINE_WEIGHT * canonical_side(values, function)])


@torch.no_grad()
def canonical_output_features(field: torch.nn.Module, function: str, side: bool = False) -> torch.Tensor:
    """:func:`canonical_features` of ``field`` sampled at the probe points (an occupancy INR's
    distance from its sign changes, :func:`field_surface`)."""
    from gmn_inr.baselines import sampled_outputs

    return canonical_features(sampled_outputs(field), function, side, field_surface(field, function))


#: record -> its :func:`field_surface` (a record's file does not change: the store verifies its
#: sha256), so the views of one record made for several trainings read its field's grid once
_SURFACES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def record_surface(rec, field: Optional[torch.nn.Module] = None) -> Optional[torch.Tensor]:
    """:func:`field_surface` of ``rec.field()`` (or of ``field``, the record's field already read),
    computed once per record object: a view (:class:`RecordView`) shares its record's."""
    while isinstance(rec, RecordView):
        rec = rec._rec
    if rec not in _SURFACES:
        _SURFACES[rec] = field_surface(rec.field() if field is None else field, rec.function)
    return _SURFACES[rec]


class FunctionCanonical(RecordView):
    """A record whose graph carries :func:`canonical_graph`'s output probe rows (cached; an occupancy
    INR's from its sign changes, :func:`field_surface`); ``geometry``: as :func:`canonical_graph`'s
    (radiance and implicit INRs in one space)."""

    def __init__(self, rec, geometry: bool = False):
        super().__init__(rec)
        self._geometry = geometry

    def transform_graph(self, graph):
        function = self._rec.function
        # a radiance row is rewritten only in geometry mode
        needs = function in SURFACE_FUNCTIONS and (self._geometry or function != "radiance")
        surface = record_surface(self._rec) if needs else None
        return canonical_graph(graph, function, self._geometry, surface)


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
