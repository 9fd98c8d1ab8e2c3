"""``gmn-inr zoo import SRC --out STORE``: a folder of INR files -> a zoo store that ``train``,
``embed``, ``search`` and the benchmarks read.

Labels come from sub-folders (``SRC/<class>/<file>``) or from a CSV (``--labels FILE``, columns
``path`` and ``class``, optional ``object``, ``split``, ``function``; paths relative to SRC). An
object is named by the CSV's ``object`` column, else by ``<class>_<file name up to its first dot>``,
so ``SRC/chair/c01.mlp.safetensors`` and ``SRC/chair/c01.hash.safetensors`` are one object in two
architectures (what contrastive training pairs). Every file goes through :func:`gmn_inr.io.read_inr`
with the reader flags (``--module``, ``--tcnn-config``, ...), each file detected on its own; a file
no reader reads stops the import with its name (``--skip-unreadable`` lists and skips them). Every
file is read before anything is written, so a failed import leaves the store as it was. A store
holds built-in fields: a module whose traced forward is not a plain MLP of xyz is read by ``embed``
and ``search query`` but not stored (``docs/formats.md``).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from gmn_inr.fields import FUNCTIONS, ArchSpec

from .common import FormatError
from .sources import SUFFIXES, ReadOptions, read_inr



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


def _stored_field(path: Path, opts: ReadOptions):
    field = read_inr(path, opts)
    if not isinstance(getattr(field, "spec", None), ArchSpec):
        raise FormatError(f"{path} loads as a {type(field).__name__} (a module with no ArchSpec whose traced forward is "
                          f"not a plain MLP of xyz, e.g. a DeepSDF decoder with a skip): a zoo stores gmn_inr fields "
                          f"only; embed it or query with it directly (gmn-inr embed / search query read it)")
    return field


def import_folder(src: str | Path, out: str | Path, labels: Optional[str | Path] = None, function: str = "radiance",
                  fmt: Optional[str] = None, skip_unreadable: bool = False,
                  options: Optional[ReadOptions] = None, lock=None) -> dict:
    """Import every INR file under ``src`` into the store ``out`` (created, or extended when it is an
    earlier import). Every file is read first; nothing is written when one fails (unless
    ``skip_unreadable``). ``lock``: a context manager entered only for the writing (the CLI's
    store lock). Returns counts: ``imported``, ``skipped`` (already there), ``unreadable`` (paths)."""
    from contextlib import nullcontext

    from gmn_inr.zoo.store import inr_key

    opts = (options or ReadOptions()).validate()
    if fmt is not None:
        opts = ReadOptions(**{**opts.__dict__, "fmt": fmt}).validate()
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
    bad, good = [], []
    for r in rows:                       # read everything before writing anything
        try:
            spec = _stored_field(src / r["path"], opts).spec
        except FormatError as exc:
            if not skip_unreadable:
                raise
            bad.append(f"{src / r['path']}: {exc}")
            continue
        r["arch"] = spec.name or spec.family
        good.append(r)
    seen: dict[str, str] = {}
    for r in good:
        key = inr_key(r["object"], r["function"], r["arch"])
        if key in seen:
            raise FormatError(f"{src / r['path']}: object {r['object']!r} has two {r['arch']} {r['function']} INRs "
                              f"({seen[key]} and {r['path']})")
        seen[key] = r["path"]
    with lock if lock is not None else nullcontext():
        return _write(src, out, good, objects, bad, opts)


def _write(src: Path, out, rows: list, objects: dict, bad: list, opts: ReadOptions) -> dict:
    from gmn_inr.zoo.store import inr_key
    from gmn_inr.zoo.writer import ZooWriter

    w = ZooWriter(out, config={"import": True})
    old = w.manifest["objects"]
    for oid, o in objects.items():
        if oid in old and (old[oid]["class_name"], old[oid]["split"]) != (o["class_name"], o["split"]):
            raise FormatError(f"object {oid!r} is stored as {old[oid]['class_name']}/{old[oid]['split']} in {out}")
    for r in rows:
        key = inr_key(r["object"], r["function"], r["arch"])
        if key in w.inrs and w.inrs[key].get("gate", {}).get("imported_from") != str(r["path"]):
            raise FormatError(f"{src / r['path']}: object {r['object']!r} already has a {r['arch']} {r['function']} INR "
                              f"({w.inrs[key].get('gate', {}).get('imported_from')})")
    w.manifest["classes"] = sorted(set(w.manifest.get("classes", [])) | {o["class_name"] for o in objects.values()})
    classes = w.manifest["classes"]
    done, skipped = 0, 0
    for r in rows:
        key = inr_key(r["object"], r["function"], r["arch"])
        if key in w.inrs:
            skipped += 1
            continue
        field = _stored_field(src / r["path"], opts)
        o = objects[r["object"]]
        w.manifest["objects"].setdefault(r["object"], {**o, "label": classes.index(o["class_name"])})
        w.add(field.spec.replace(name=r["arch"]), r["function"], r["object"], field.state_dict(),
              {"passed": True, "imported_from": str(r["path"])})
        done += 1
        if done % 500 == 0:
            w.flush()                    # an interrupted import keeps what it wrote
    w.compact()                          # the journal folded into the manifest
    n_obj = len({e["object_id"] for e in w.inrs.values()})
    return {"imported": done, "skipped": skipped, "unreadable": bad, "objects": n_obj, "classes": len(classes)}
