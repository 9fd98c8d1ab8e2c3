"""Geometry <-> appearance: one object's SDF INR and its radiance INRs in one embedding space.

The training pairs (:func:`cross_modal_pairs`) are, per object, its implicit INRs (SDFs of every
training family in the cpu zoo) with each of its radiance INRs (every training family), plus the radiance INRs
of two different families (the main paper's pairs), all read through
:class:`gmn_inr.canonical.FunctionCanonical` in ``geometry`` mode: the density row of a radiance
field and the output row of an SDF become the same quantity, the truncated distance to the
surface, read through one readout matrix. The loss is the paper's (rendering for radiance, SDF
reconstruction for the implicit INRs) + SigLIP + L2 between the two sides of each pair. With an
encoder geometry head (``EncoderConfig.geometry_dim``) SigLIP and L2 read only its columns, a
linear map of the geometry output neuron's probe row and node state, and the decoders only the
other columns: in one shared embedding the colour a radiance INR must carry for the rendering
loss keeps its SDF's embedding at chance (docs/results/implicit_functions.md).

:func:`cross_modal_recall`: query an object's SDF INR against the test objects' radiance INRs (one
gallery per family, and all families pooled) and back.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch

from gmn_inr.canonical import FunctionCanonical


def cross_modal_pairs(records: Sequence, implicit_archs: Sequence[str] = ("HASH",), implicit_function: str = "sdf",
                      radiance_archs: Sequence[str] = ("MLP", "TRI", "HASH", "OCT"),
                      radiance_pairs: bool = True) -> list:
    """Pairs ``(a, b)`` of one object, each record wrapped by ``FunctionCanonical(geometry=True)``:
    ``(its implicit_function INR of each of implicit_archs, its radiance INR of each of
    radiance_archs)`` and, with ``radiance_pairs``, every two of its radiance INRs of different
    architectures. Deterministic order (objects sorted, then architectures as given)."""
    if isinstance(implicit_archs, str):
        raise TypeError("implicit_archs: a sequence of architecture names, e.g. ('HASH',)")
    by_obj: dict = {}
    for r in records:
        if (r.function == implicit_function and r.arch in implicit_archs) or \
                (r.function == "radiance" and r.arch in radiance_archs):
            by_obj.setdefault(r.object_id, {})[(r.function, r.arch)] = FunctionCanonical(r, geometry=True)
    out = []
    for oid in sorted(by_obj):
        recs = by_obj[oid]
        rad = [recs[("radiance", a)] for a in radiance_archs if ("radiance", a) in recs]
        imp = [recs[(implicit_function, a)] for a in implicit_archs if (implicit_function, a) in recs]
        out += [(i, r) for i in imp for r in rad]
        if radiance_pairs:
            out += list(itertools.combinations(rad, 2))
    return out


def cross_modal_recall(z: torch.Tensor, recs: Sequence, implicit_function: str = "sdf",
                       ks=(1, 5, 10)) -> dict:
    """Recall@k between implicit and radiance INRs of the same object: ``z [N, D]`` embeddings of
    ``recs``. Returns ``{"sdf/radiance": {k: r}, "radiance/sdf": {k: r}, "by_family": {
    "sdf/radiance:triplane": {k: r}, "radiance:triplane/sdf": {k: r}, ...}, "by_implicit_family":
    {"sdf:hashgrid/radiance": {k: r}, "radiance/sdf:hashgrid": {k: r}, ...}, "matrix":
    {"sdf:hashgrid/radiance:triplane": {k: r}, ...}}`` (query/gallery; a query counts only where
    its gallery holds its object). Pooled: an SDF query hits if any radiance INR of its object (any
    family) is among the ``k`` nearest; every radiance INR is a query against the SDF gallery
    (every implicit family), where any of its object's implicit INRs is a hit."""
    from gmn_inr.tasks import object_ids, queries_in_gallery, recall_at_k

    ids = object_ids(recs)
    imp = [i for i, r in enumerate(recs) if r.function == implicit_function]
    rad = [i for i, r in enumerate(recs) if r.function == "radiance"]
    if not imp or not rad:
        raise ValueError(f"cross_modal_recall needs {implicit_function} and radiance INRs among the records")
    f = implicit_function

    def recall(q: list, g: list) -> dict:
        q = queries_in_gallery(q, g, ids)
        return recall_at_k(z[q], ids[q], z[g], ids[g], ks=ks)

    def of(idx: list, fam: str) -> list:
        return [i for i in idx if recs[i].family == fam]

    out = {f"{f}/radiance": recall(imp, rad), f"radiance/{f}": recall(rad, imp),
           "by_family": {}, "by_implicit_family": {}, "matrix": {}}
    for fam in sorted({recs[i].family for i in rad}):
        out["by_family"][f"{f}/radiance:{fam}"] = recall(imp, of(rad, fam))
        out["by_family"][f"radiance:{fam}/{f}"] = recall(of(rad, fam), imp)
    for ifam in sorted({recs[i].family for i in imp}):
        out["by_implicit_family"][f"{f}:{ifam}/radiance"] = recall(of(imp, ifam), rad)
        out["by_implicit_family"][f"radiance/{f}:{ifam}"] = recall(rad, of(imp, ifam))
        for rfam in sorted({recs[i].family for i in rad}):
            out["matrix"][f"{f}:{ifam}/radiance:{rfam}"] = recall(of(imp, ifam), of(rad, rfam))
    return out
