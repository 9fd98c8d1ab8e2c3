"""``gmn-inr zoo import SRC --out STORE``: a folder of INR files -> a zoo store that ``train``,
``embed``, ``search`` and the benchmarks read.

Labels come from sub-folders (``SRC/<class>/<file>``) or from a CSV (``--labels FILE``, columns
``path`` and ``class``, optional ``object``, ``split``, ``function``; paths relative to SRC). An
object is named by the CSV's ``object`` column, else by ``<class>_<file name up to its first dot>``,
so ``SRC/chair/c01.mlp.safetensors`` and ``SRC/chair/c01.hash.safetensors`` are one object in two
architectures (what contrastive training pairs). Every file goes through :func:`gmn_inr.io.read_inr`
with the reader flags (``--module``, ``--tcnn-config``, ...), each file detected on its own; a file
no reader reads stops the import with its name (``--skip-unreadable`` lists and skips them). Every
file is read before anything is written, so a failed import leaves the store as it was. A module
given with ``--module`` whose traced forward is a plain MLP of xyz is stored as the equal built-in
MLP; any other is stored as itself (family ``traced``, arch its class name in lower case): its state
dict, the cube map, and a copy of its module file (``STORE/modules/<sha256>.py``) that reading the
store imports, checked here by rebuilding the field from that copy (``docs/formats.md``). The
modules of gmn_inr's own readers for known layouts (a DeepSDF checkpoint, NGLOD, ...) are refused:
their code is not a file a store can keep.
"""
from __future__ import annotations

import csv
import hashlib
import tempfile
from pathlib import Path
from typing import Optional

import torch

from gmn_inr.fields import FUNCTIONS, ArchSpec
from gmn_inr.fields.user_module import ModuleField, ModuleSpec

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
    if not isinstance(field, ModuleField) and not isinstance(getattr(field, "spec", None), ArchSpec):
        raise FormatError(f"{path} loads as a {type(field).__name__}, a module of gmn_inr's own reader for its layout, "
                          f"whose code a store cannot keep: embed it or query with it directly (gmn-inr embed / search "
                          f"query read it), or import its state dict with your module (--module FILE.py:factory)")
    return field


def _module_spec(field: ModuleField, path: Path, name: str, texts: dict, scratch: str) -> ModuleSpec:
    """What a store keeps of ``field`` (read from ``path`` by its ``--module`` factory), checked by
    rebuilding it from a copy of its module file in the folder ``scratch``, as a store will, and
    comparing values on the cube. ``texts`` collects each module file's bytes: what is checked is
    what is written."""
    from gmn_inr.zoo.store import MODULES, store_module_file

    file, _, factory = field.factory.rpartition(":")
    data = texts.setdefault(file, Path(file).read_bytes())
    spec = ModuleSpec.of(field, name, f"{MODULES}/{hashlib.sha256(data).hexdigest()}.py", factory)
    store_module_file(scratch, data)
    try:
        copy = spec.build(scratch, field.module.state_dict(), str(path))
    except FormatError as exc:
        raise FormatError(f"{path}: its module file {file} does not work as a copy in a store (it may import "
                          f"only installed packages, not files beside it): {exc}") from None
    x = torch.rand(1024, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        want, got = field(x), copy(x)
    if want.shape != got.shape or float((want - got).abs().max()) > 1e-5 * (1 + float(want.abs().max())):
        raise FormatError(f"{path}: {type(field.module).__name__} rebuilt from a copy of {file} does not give the "
                          "values read (a module whose values are not set by its file and state dict alone)")
    return spec


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
    bad, good, texts = [], [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for r in rows:                   # read everything before writing anything
            try:
                field = _stored_field(src / r["path"], opts)
                if isinstance(field, ModuleField):
                    r["arch"] = type(field.module).__name__.lower()
                    r["module"] = _module_spec(field, src / r["path"], r["arch"], texts, scratch)
                else:
                    r["arch"] = field.spec.name or field.spec.family
            except FormatError as exc:
                if not skip_unreadable:
                    raise
                bad.append(f"{src / r['path']}: {exc}")
                continue
            good.append(r)
    seen: dict[str, str] = {}
    for r in good:
        key = inr_key(r["object"], r["function"], r["arch"])
        if key in seen:
            raise FormatError(f"{src / r['path']}: object {r['object']!r} has two {r['arch']} {r['function']} INRs "
                              f"({seen[key]} and {r['path']})")
        seen[key] = r["path"]
    with lock if lock is not None else nullcontext():
        return _write(src, out, good, objects, bad, opts, texts)


def _write(src: Path, out, rows: list, objects: dict, bad: list, opts: ReadOptions, texts: dict) -> dict:
    from gmn_inr.zoo.store import inr_key, store_module_file
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
        o = objects[r["object"]]
        # entered for an INR already there too: a killed import journals INRs, not objects
        w.manifest["objects"].setdefault(r["object"], {**o, "label": classes.index(o["class_name"])})
        if key in w.inrs:
            skipped += 1
            continue
        field = _stored_field(src / r["path"], opts)
        gate = {"passed": True, "imported_from": str(r["path"])}
        if "module" in r:                # its module file first: an entry never names a missing file
            spec = r["module"]
            store_module_file(w.root, texts[field.factory.rpartition(":")[0]])
            w.add(spec, r["function"], r["object"], field.module.state_dict(), gate)
        else:
            w.add(field.spec.replace(name=r["arch"]), r["function"], r["object"], field.state_dict(), gate)
        done += 1
        if done % 500 == 0:
            w.flush()                    # an interrupted import keeps what it wrote
    w.compact()                          # the journal folded into the manifest
    n_obj = len({e["object_id"] for e in w.inrs.values()})
    return {"imported": done, "skipped": skipped, "unreadable": bad, "objects": n_obj, "classes": len(classes)}
