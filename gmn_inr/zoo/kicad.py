"""Real, labelled meshes: KiCad's 3D part models (Debian ``kicad-packages3d``) as a mesh folder.

    apt-get install -y kicad-packages3d      # flat VRML 2.0 models under /usr/share/kicad/3dmodels

The labels are the catalogue's own: the pin count and row count in a pin header's file name
(``Connector_PinHeader_<pitch>.3dshapes/PinHeader_<rows>x<pins>_...``), every pitch (1.00, 1.27,
2.00, 2.54 mm) and variant (vertical, horizontal, SMD pin-1 left/right) of one count in one class:

* ``pins-1xNN``: single-row headers 1x02 .. 1x20 (19 classes, 16 models each);
* ``pins-2xNN``: double-row headers 2x02 .. 2x10 (9 classes, 12 models each).

28 classes, 412 objects. Chosen because the class lives in fine repeated detail: once the longest
side is scaled to the cube, neighbouring pin counts differ only in the pitch of pins and body
segments, which an 8^3 reading blurs and a 32^3 reading resolves. Measured with the benchmark's
classifier on the exact geometry (docs/results/real_shapes_headroom.md): about 20 points from 8^3
to 32^3. IC package families were tried and dropped: dense geometry classified them no better
than the 8^3 reading (62 -> 57%), so they diluted the measurement.

Files that are byte-identical under two names are kept once (content hash); the few models that
use VRML ``Transform`` nodes are skipped and counted, since the parser reads flat
``IndexedFaceSet`` shapes only. Each model is written as ``OUT/<class>/<stem>.ply`` with one
colour per face (its material's ``diffuseColor``); :class:`gmn_inr.zoo.meshes.MeshShape` then
reads it like any mesh a user brings. Scale policy: MeshShape's, every model centred and its
largest side scaled to the probe cube ``[-0.8, 0.8]`` (so absolute size is not a cue).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

#: where Debian's kicad-packages3d installs the models
KICAD_ROOT = Path("/usr/share/kicad/3dmodels")
#: pin counts of each class set, by number of rows
PIN_COUNTS = {1: range(2, 21), 2: range(2, 11)}
PIN_HEADER = re.compile(r"^PinHeader_([12])x(\d\d)_P[\d.]+mm_")
PIN_LIBRARIES = "Connector_PinHeader_"

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_DEF_MATERIAL = re.compile(r"DEF\s+(\S+)\s+Material\s*\{([^}]*)\}")
_DIFFUSE = re.compile(rf"diffuseColor\s+({_NUM})\s+({_NUM})\s+({_NUM})")
_USE_MATERIAL = re.compile(r"material\s+USE\s+(\S+?)\s*\}")
_COORD_INDEX = re.compile(r"coordIndex\s*\[([^\]]*)\]")
_POINT = re.compile(r"point\s*\[([^\]]*)\]")
_SHAPE = re.compile(r"\bShape\s*\{")
#: a face of a shape whose material the file never defines
DEFAULT_COLOUR = (0.6, 0.6, 0.6)


class UnsupportedVRML(ValueError):
    """A VRML file this flat-IndexedFaceSet parser does not read (Transform nodes, no faces)."""


def parse_vrml(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flat VRML 2.0 file -> ``(vertices [V, 3], triangles [F, 3], face colours [F, 3])``.

    Reads every ``Shape`` with an ``IndexedFaceSet`` (polygons fan-triangulated) and its
    material's ``diffuseColor`` (``DEF`` inline or ``USE``); raises :class:`UnsupportedVRML` on
    ``Transform`` nodes (their coordinates would need the node's matrix) or when no face is found."""
    if re.search(r"\bTransform\s*\{", text):
        raise UnsupportedVRML("uses Transform nodes")
    colours = {m.group(1): _diffuse(m.group(2)) for m in _DEF_MATERIAL.finditer(text)}
    verts, tris, cols = [], [], []
    offset = 0
    for chunk in _SHAPE.split(text)[1:]:
        ci, pt = _COORD_INDEX.search(chunk), _POINT.search(chunk)
        if ci is None or pt is None:
            continue
        p = np.array(pt.group(1).replace(",", " ").split(), dtype=np.float64).reshape(-1, 3)
        idx = np.array(ci.group(1).replace(",", " ").split(), dtype=np.int64)
        t = _fan_triangles(idx)
        if len(t) == 0:
            continue
        if t.max() >= len(p):
            raise UnsupportedVRML(f"coordIndex {t.max()} past {len(p)} points")
        use = _USE_MATERIAL.search(chunk)
        d = _DEF_MATERIAL.search(chunk)
        name = use.group(1) if use else (d.group(1) if d else None)
        verts.append(p)
        tris.append(t + offset)
        cols.append(np.tile(colours.get(name, DEFAULT_COLOUR), (len(t), 1)))
        offset += len(p)
    if not tris:
        raise UnsupportedVRML("no IndexedFaceSet faces")
    return np.concatenate(verts), np.concatenate(tris), np.concatenate(cols)


def _diffuse(body: str) -> tuple:
    m = _DIFFUSE.search(body)
    return tuple(float(m.group(k)) for k in (1, 2, 3)) if m else DEFAULT_COLOUR


def _fan_triangles(idx: np.ndarray) -> np.ndarray:
    """``coordIndex`` (polygons ended by -1) -> triangles ``[T, 3]``, each polygon as a fan."""
    if len(idx) == 0:
        return np.zeros((0, 3), np.int64)
    if idx[-1] != -1:
        idx = np.append(idx, -1)
    ends = np.flatnonzero(idx == -1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    n = ends - starts                                 # vertices per polygon
    k = np.clip(n - 2, 0, None)                       # triangles per polygon
    first = np.repeat(starts, k)
    j = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)     # triangle number within its polygon
    return np.stack([idx[first], idx[first + j + 1], idx[first + j + 2]], 1)


@dataclass(frozen=True)
class CatalogueEntry:
    path: Path
    class_name: str


def label_of(library: str, stem: str) -> Optional[str]:
    """The class of a model from its library and file name (None: in neither class set)."""
    if not library.startswith(PIN_LIBRARIES):
        return None
    m = PIN_HEADER.match(stem)
    if m is None or int(m.group(2)) not in PIN_COUNTS[int(m.group(1))]:
        return None
    return f"pins-{m.group(1)}x{m.group(2)}"


def catalogue(root=KICAD_ROOT, per_class: Optional[int] = None) -> tuple[list[CatalogueEntry], dict]:
    """The labelled models under ``root`` (``<Library>.3dshapes/*.wrl``), duplicates dropped, and
    counts ``{"duplicates", "over_class_cap"}``. ``per_class``: keep that many
    of every class, evenly spaced in name order (so every pitch and variant stays represented).
    Raises FileNotFoundError naming the apt package."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found: install KiCad's 3D models with "
                                "`apt-get install -y kicad-packages3d` (Debian/Ubuntu)")
    seen: dict[str, Path] = {}
    out: list[CatalogueEntry] = []
    dup = 0
    for f in sorted(root.glob("*.3dshapes/*.wrl")):
        c = label_of(f.parent.name[: -len(".3dshapes")], f.stem)
        if c is None:
            continue
        h = hashlib.sha256(f.read_bytes()).hexdigest()
        if h in seen:                    # the same model under a second name
            dup += 1
            continue
        seen[h] = f
        out.append(CatalogueEntry(f, c))
    if not out:
        raise FileNotFoundError(f"no labelled models (pin headers) under {root}")
    by_class: dict[str, list] = {}
    for e in out:
        by_class.setdefault(e.class_name, []).append(e)
    kept, counts = [], {"duplicates": dup, "over_class_cap": 0}
    for c, es in sorted(by_class.items()):
        if per_class is not None and len(es) > per_class:
            counts["over_class_cap"] += len(es) - per_class
            es = [es[(k * len(es)) // per_class] for k in range(per_class)]
        kept += es
    return kept, counts


def write_mesh_folder(entries, out) -> dict:
    """Write each entry as ``out/<class>/<stem>.ply`` (face colours; atomic, existing files kept,
    so a killed run resumes; ``.ply`` files of other models are removed: the folder is the zoo's
    object list). Returns ``{"written", "kept", "removed", "skipped": [(path, reason)]}``."""
    import trimesh

    from gmn_inr.atomic import atomic_write_bytes

    out = Path(out)
    wanted = {out / e.class_name / (e.path.stem + ".ply") for e in entries}
    stale = [p for p in out.glob("*/*.ply") if p not in wanted] if out.is_dir() else []
    for p in stale:
        p.unlink()
    stats = {"written": 0, "kept": 0, "removed": len(stale), "skipped": []}
    for e in entries:
        dest = out / e.class_name / (e.path.stem + ".ply")
        if dest.exists():
            stats["kept"] += 1
            continue
        try:
            v, f, c = parse_vrml(e.path.read_text(errors="replace"))
        except UnsupportedVRML as exc:
            stats["skipped"].append((str(e.path), str(exc)))
            continue
        rgba = np.concatenate([np.round(np.clip(c, 0, 1) * 255), np.full((len(c), 1), 255)], 1).astype(np.uint8)
        mesh = trimesh.Trimesh(v, f, face_colors=rgba, process=False)
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dest, trimesh.exchange.ply.export_ply(mesh, encoding="binary"))
        stats["written"] += 1
    return stats


def prepare_kicad(root, meshes, log=print, per_class: Optional[int] = None) -> str:
    """The catalogue of ``root`` written into the mesh folder ``meshes`` (resumable); returns it."""
    entries, counts = catalogue(root, per_class=per_class)
    s = write_mesh_folder(entries, meshes)
    n_classes = len({e.class_name for e in entries})
    log(f"kicad models: {len(entries) - len(s['skipped'])} objects in {n_classes} classes -> {meshes} "
        f"({s['written']} converted now, {s['kept']} already there; {counts['duplicates']} byte-identical "
        f"duplicates and {len(s['skipped'])} unreadable (Transform nodes) skipped, {counts['over_class_cap']} "
        f"over the per-class cap)")
    return str(meshes)


def real_zoo_config(preset: str = "cpu", unseen=None, **overrides):
    """The real-shape zoo: the preset's fitting, radiance and sdf INRs of every training
    architecture and of the unseen variants (``unseen``: these only; default all) on test objects,
    60/40 train/test objects per class."""
    from gmn_inr.fields import registry

    from .build import preset_config

    training = registry.architectures(training=True)
    others = [a for a in registry.architectures() if a not in training]
    if unseen is not None:
        bad = sorted(set(unseen) - set(others))
        if bad:
            raise ValueError(f"unknown unseen variants {', '.join(bad)}; known: {', '.join(others)}")
        others = [a for a in others if a in set(unseen)]
    archs = tuple(training) + tuple(others)
    init = overrides.get("init", "per-inr")
    return preset_config(preset, **{"name": f"real-{init}", "archs": {"radiance": archs, "sdf": archs},
                                    "splits": (0.6, 0.0, 0.4), "unseen_splits": ("test",), **overrides})
