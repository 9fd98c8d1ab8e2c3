"""``gmn-inr zoo import SRC --out STORE``: a folder of INR files -> a zoo store that ``train``,
``embed``, ``search`` and the benchmarks read.

Labels come from sub-folders (``SRC/<class>/<file>``) or from a CSV (``--labels FILE``, columns
``path`` and ``class``, optional ``object``, ``split``, ``function``; paths relative to SRC). An
object is named by the CSV's ``object`` column, else by ``<class>_<file name up to its first dot>``,
so ``SRC/chair/c01.mlp.safetensors`` and ``SRC/chair/c01.hash.safetensors`` are one object in two
architectures (what contrastive training pairs). Every file goes through :func:`gmn_inr.io.load_inr`;
a file no loader reads stops the import with its name (``--skip-unreadable`` lists and skips them).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from gmn_inr.fields import FUNCTIONS, ArchSpec

from .formats import FormatError, load_inr

SUFFIXES = (".safetensors", ".pth", ".pt", ".msgpack", ".ingp", ".h5")


def _rows_from_folders(src: Path) -> list[dict]:
    rows = []
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."):
            rel = p.relative_to(src)
            if len(rel.parts) < 2:
                raise FormatError(f"{p} is not in a class sub-folder (SRC/<class>/<file>); give --labels CSV instead")
            rows.append({"path": str(rel), "class": rel.parts[0]})
    return rows


def _rows_from_csv(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "class"} <= set(rows[0]):
        raise FormatError(f"{csv_path} needs a header with at least 'path' and 'class' columns")
    return rows


def import_folder(src: str | Path, out: str | Path, labels: Optional[str | Path] = None, function: str = "radiance",
                  fmt: Optional[str] = None, skip_unreadable: bool = False) -> dict:
    """Import every INR file under ``src`` into the store ``out`` (created, or extended when it is an
    earlier import). Returns counts: ``imported``, ``skipped`` (already there), ``unreadable`` (paths)."""
    from gmn_inr.zoo.store import inr_key
    from gmn_inr.zoo.writer import ZooWriter

    src = Path(src)
    if not src.is_dir():
        raise FormatError(f"{src} is not a folder")
    rows = _rows_from_csv(Path(labels)) if labels else _rows_from_folders(src)
    if not rows:
        raise FormatError(f"no INR files ({', '.join(SUFFIXES)}) under {src}")
    classes = sorted({r["class"] for r in rows})
    objects: dict[str, dict] = {}       # entered in the store when its first INR is
    for r in rows:
        base = Path(r["path"]).name.split(".")[0]
        r["object"] = r.get("object") or f"{r['class']}_{base}"
        r["split"] = r.get("split") or "train"
        r["function"] = r.get("function") or function
        if r["function"] not in FUNCTIONS:
            raise FormatError(f"{r['path']}: unknown function {r['function']!r}; known: {FUNCTIONS}")
        o = objects.setdefault(r["object"], {"class_name": r["class"], "label": classes.index(r["class"]),
                                             "split": r["split"], "source": "import"})
        if o["class_name"] != r["class"] or o["split"] != r["split"]:
            raise FormatError(f"object {r['object']!r} is given two classes or splits ({r['path']})")
    w = ZooWriter(out, config={"import": True})
    old = w.manifest["objects"]
    for oid, o in objects.items():
        if oid in old and (old[oid]["class_name"], old[oid]["split"]) != (o["class_name"], o["split"]):
            raise FormatError(f"object {oid!r} is stored as {old[oid]['class_name']}/{old[oid]['split']} in {out}")
    w.manifest["classes"] = sorted(set(w.manifest.get("classes", [])) | set(classes))
    classes = w.manifest["classes"]
    done, skipped, bad = 0, 0, []
    for r in rows:
        path = src / r["path"]
        try:
            field = load_inr(path, fmt)
            if not isinstance(getattr(field, "spec", None), ArchSpec):
                raise FormatError(f"{path} loads as a {type(field).__name__} (a reference module with no ArchSpec, "
                                  f"e.g. a DeepSDF decoder): a zoo stores gmn_inr fields only; convert it with "
                                  f"graphs.to_graph instead")
        except FormatError as exc:
            if not skip_unreadable:
                raise
            bad.append(f"{path}: {exc}")
            continue
        spec = field.spec
        arch = spec.name or spec.family
        key = inr_key(r["object"], r["function"], arch)
        if key in w.inrs:
            if w.inrs[key].get("gate", {}).get("imported_from") == str(r["path"]):
                skipped += 1
                continue
            raise FormatError(f"{path}: object {r['object']!r} already has a {arch} {r['function']} INR "
                              f"({w.inrs[key].get('gate', {}).get('imported_from')})")
        o = objects[r["object"]]
        w.manifest["objects"].setdefault(r["object"], {**o, "label": classes.index(o["class_name"])})
        w.add(spec.replace(name=arch), r["function"], r["object"], field.state_dict(),
              {"passed": True, "imported_from": str(r["path"])})
        done += 1
        if done % 500 == 0:
            w.flush()                    # an interrupted import keeps what it wrote
    w.compact()                          # the journal folded into the manifest
    n_obj = len({e["object_id"] for e in w.inrs.values()})
    return {"imported": done, "skipped": skipped, "unreadable": bad, "objects": n_obj, "classes": len(classes)}
