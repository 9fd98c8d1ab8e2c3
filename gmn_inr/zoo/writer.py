"""Writing an INR zoo: the journal, the one-writer lock and :class:`ZooWriter` (the reading side,
the file format and the manifest checks are in :mod:`gmn_inr.zoo.store`)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from gmn_inr.atomic import atomic_write_bytes, fault_point
from gmn_inr.fields import ArchSpec, SpecError
from gmn_inr.fields.user_module import FormatError, ModuleSpec, copy_problem

from .store import (ENTRY_FIELDS, FORMAT, JOURNAL, LOCK, MANIFEST, ZooBusyError, ZooError, ZooStore, inr_key,
                    inr_metadata, read_inr_file, rel_path, sha256_file, write_inr_file)


def _entry(meta: dict, rel: str, sha: str, n: int) -> dict:
    # a user's module has a "module" description and no ArchSpec (its arch_spec is empty)
    return {"path": rel, "sha256": sha, "bytes": n, "arch": meta["arch"], "family": meta["family"],
            "function": meta["function"], "object_id": meta["object_id"], "class_name": meta["class_name"],
            "label": int(meta["label"]), "split": meta["split"], "arch_spec": meta.get("arch_spec", ""),
            **({"module": meta["module"]} if "module" in meta else {}),
            "gate": json.loads(meta.get("gate", "{}"))}


def append_journal(root, record: dict) -> None:
    """Append one JSON line to ``root/journal.jsonl`` in a single ``write`` (O_APPEND: lines of several
    processes never interleave) and fsync it. A line cut by a kill is ignored on replay."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(Path(root) / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def store_inr(root, spec: "ArchSpec | ModuleSpec", function: str, object_id: str, obj: dict, state_dict: dict,
              gate: dict) -> tuple[str, dict]:
    """Write one INR file (atomically) and journal it: ``(key, manifest entry)``. Runs in the main
    process and in build workers alike."""
    rel = rel_path(object_id, function, spec.name)
    meta = inr_metadata(spec, function, object_id, obj, gate)
    sha, n = write_inr_file(Path(root) / rel, state_dict, meta)
    fault_point("after_inr_write")
    key, entry = inr_key(object_id, function, spec.name), _entry(meta, rel, sha, n)
    append_journal(root, {"op": "add", "key": key, "entry": entry})
    fault_point("after_journal")
    return key, entry


def journal_drop(root, spec: ArchSpec, function: str, object_id: str, gate: dict) -> tuple[str, dict]:
    """Journal an INR the quality gate dropped (persisted at once, like a stored INR)."""
    key = inr_key(object_id, function, spec.name)
    entry = {"arch": spec.name, "family": spec.family, "function": function, "object_id": object_id, "gate": gate}
    append_journal(root, {"op": "drop", "key": key, "entry": entry})
    fault_point("after_drop")
    return key, entry


class zoo_lock:
    """One writer per zoo: an exclusive ``fcntl.flock`` on ``root/.lock``, which holds the PID of the
    process that has it. A second process gets :class:`ZooBusyError` naming that PID, or (``wait``)
    blocks until the first is done. The kernel releases the lock when its holder dies, kill -9
    included, so a killed build never leaves a stale lock."""

    def __init__(self, root, wait: bool = False, log=None):
        self.root, self.wait, self.log, self.fd = Path(root), wait, log, None

    def __enter__(self) -> "zoo_lock":
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not self.wait:
                os.close(fd)
                raise ZooBusyError(self.root, pid) from None
            if self.log is not None:
                self.log(f"zoo {self.root} is being built by process {pid}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def widens(old: dict, new: dict) -> bool:
    """True when zoo config ``new`` only adds architectures to ``old``'s functions (or new
    functions) and agrees on everything else: a zoo of ``old`` is part of a zoo of ``new``."""
    if not isinstance(old, dict) or not isinstance(new, dict) or set(old) != set(new):
        return False
    if any(old[k] != new[k] for k in old if k != "archs"):
        return False
    oa, na = old.get("archs") or {}, new.get("archs") or {}
    return all(f in na and set(a) <= set(na[f]) for f, a in oa.items())


class ZooWriter:
    """Builds (or resumes) a zoo: objects first, then INRs one file at a time.

    :meth:`add` / :meth:`drop` journal each INR at once (``journal.jsonl``); ``flush()`` rewrites
    the manifest atomically and :meth:`compact` folds the journal into it. Opening a writer replays
    the journal a killed build left. Hold :func:`zoo_lock` while writing (``build_zoo`` does).
    """

    def __init__(self, root, config: Optional[dict] = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        mpath = self.root / MANIFEST
        self._journal_pos = 0
        if mpath.exists():
            store = ZooStore(self.root)          # validates format and structure
            self.manifest = store.manifest
            for k, v in (("objects", {}), ("inrs", {}), ("dropped", {}), ("builds", []), ("classes", [])):
                self.manifest.setdefault(k, v)
            stored = self.manifest.get("config")
            if config is not None and stored not in (None, config):
                if not widens(stored, config):
                    raise ZooError(f"{self.root} holds a zoo built with a different configuration; "
                                   f"use another --out or delete it")
                # every INR is seeded by its own key, so the stored ones are what the wider config
                # fits too: the zoo becomes the wider one, bit for bit, once the rest is fitted
                self.manifest["config"] = config
            self.replay_journal()
        else:
            if any(p.name not in (LOCK, JOURNAL) for p in self.root.iterdir()):
                raise ZooError(f"{self.root} is not empty and has no {MANIFEST}: refusing to build a zoo there")
            self.manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": config,
                             "classes": [], "objects": {}, "inrs": {}, "dropped": {}, "builds": []}
            (self.root / JOURNAL).unlink(missing_ok=True)      # a journal without a manifest: nothing to keep
            self.flush()

    @property
    def inrs(self) -> dict:
        return self.manifest["inrs"]

    def set_objects(self, classes: list[str], objects: dict[str, dict]) -> None:
        """Register objects ``{object_id: {class_name, label, split, ...}}``; on resume they
        must agree with what is stored (an object never changes split)."""
        old = self.manifest["objects"]
        for oid, o in objects.items():
            if oid in old and old[oid].get("split") != o["split"]:
                raise ZooError(f"object {oid} is stored in split {old[oid]['split']!r}, asked for {o['split']!r}")
        self.manifest["classes"] = list(classes)
        old.update(objects)
        self.flush()

    def done(self, key: str) -> bool:
        return key in self.inrs or key in self.manifest["dropped"]

    def rel_path(self, object_id: str, function: str, arch: str) -> str:
        return rel_path(object_id, function, arch)

    def add(self, spec: "ArchSpec | ModuleSpec", function: str, object_id: str, state_dict: dict, gate: dict) -> dict:
        """Write one INR file (atomically), journal it and enter it in the manifest (on disk at the
        next :meth:`flush`; the journal keeps it until then)."""
        key, entry = store_inr(self.root, spec, function, object_id, self.manifest["objects"][object_id],
                               state_dict, gate)
        self.inrs[key] = entry
        self.manifest["dropped"].pop(key, None)
        return entry

    _entry = staticmethod(_entry)

    def drop(self, spec: ArchSpec, function: str, object_id: str, gate: dict) -> None:
        """Record an INR that failed the quality gate (journalled at once; it is not stored, and not
        refitted on resume)."""
        key, entry = journal_drop(self.root, spec, function, object_id, gate)
        self.manifest["dropped"][key] = entry

    def replay_journal(self) -> list[tuple[str, str]]:
        """Enter the journal's lines written since the last call (by this process, its workers or a
        killed build); returns ``[(op, key)]``. A last line without its newline (still being written,
        or cut by a kill) waits for the next call."""
        path = self.root / JOURNAL
        try:
            with open(path, "rb") as f:
                f.seek(self._journal_pos)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._journal_pos += end
        done = []
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
                op, key, entry = rec["op"], rec["key"], rec["entry"]
            except (ValueError, KeyError, TypeError):
                continue                      # a line cut by a kill (a later one is complete)
            if op == "add" and isinstance(entry, dict) and all(isinstance(entry.get(f), t)
                                                               for f, t in ENTRY_FIELDS.items()):
                self.inrs[key] = entry
                self.manifest["dropped"].pop(key, None)
            elif op == "drop" and isinstance(entry, dict):
                if key not in self.inrs:
                    self.manifest["dropped"][key] = entry
            else:
                continue
            done.append((op, key))
        return done

    def compact(self) -> None:
        """Fold the journal into the manifest and remove it (only while no other process appends)."""
        self.replay_journal()
        self.flush()
        (self.root / JOURNAL).unlink(missing_ok=True)
        self._journal_pos = 0

    def check_files(self) -> list[str]:
        """Re-verify every listed file (present, sha256 as listed); forget the entries of missing or
        corrupt ones (a corrupt file is renamed ``*.corrupt``, never adopted again) so that they are
        refitted. Returns their keys."""
        bad = []
        for key, e in sorted(self.inrs.items()):
            p = self.root / e["path"]
            mod = None
            try:
                ok = p.is_file() and sha256_file(p) == e["sha256"]
                mod = self._module_file(e)
                mod_ok = mod is None or copy_problem(mod) is None
            except (OSError, FormatError):
                ok = mod_ok = False
            if ok and mod_ok:
                continue
            bad.append(key)
            del self.inrs[key]
            if not ok and p.exists():
                os.replace(p, p.with_name(p.name + ".corrupt"))
            elif mod is not None and mod.exists():    # a changed module file: an import writes it again
                os.replace(mod, mod.with_name(mod.name + ".corrupt"))
        if bad:
            self.flush()
        return bad

    def _module_file(self, entry: dict) -> Optional[Path]:
        """The module file a user's module entry names (None for a built-in field)."""
        return self.root / ModuleSpec.from_json(entry["module"]).file if "module" in entry else None

    def adopt_orphans(self) -> int:
        """Enter complete INR files that a killed build wrote but never listed; returns how many.
        Only a file at its own key's path (``inrs/<object>/<function>/<arch>.safetensors``) whose
        tensors match their checksum is adopted, and never over a key the manifest lists or drops:
        a stray copy (``HASH.bak.safetensors``) or a foreign file is left alone. Half-written temp
        files are deleted (they never had a final name)."""
        n = 0
        base = self.root / "inrs"
        if not base.exists():
            return 0
        listed = {e["path"] for e in self.inrs.values()}
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink()
                continue
            if not p.is_file() or p.suffix != ".safetensors":
                continue
            rel = p.relative_to(self.root).as_posix()
            if rel in listed:
                continue
            try:
                _, meta = read_inr_file(p)
                if "module" in meta:             # a user's module: kept only with its module file
                    spec = ModuleSpec.from_json(meta["module"])
                    if copy_problem(self.root / spec.file):
                        continue
                else:
                    ArchSpec.from_json(meta["arch_spec"])
                if meta["object_id"] not in self.manifest["objects"]:
                    raise ZooError("unknown object")
                key = inr_key(meta["object_id"], meta["function"], meta["arch"])
                if rel != rel_path(meta["object_id"], meta["function"], meta["arch"]) or self.done(key):
                    continue         # not where its key lives, or the key is taken: not the record
                if "tensors_sha256" not in meta:
                    continue         # written before files carried a checksum: cannot be trusted
                entry = self._entry(meta, rel, sha256_file(p), p.stat().st_size)
            except (ZooError, SpecError, FormatError, KeyError, ValueError):
                continue             # not ours or unreadable: left alone; a refit overwrites it
            self.inrs[key] = entry
            n += 1
        if n:
            self.flush()
        return n

    def flush(self) -> None:
        data = json.dumps(self.manifest, indent=1, sort_keys=True).encode()
        atomic_write_bytes(self.root / MANIFEST, data)
        fault_point("after_manifest_flush")
