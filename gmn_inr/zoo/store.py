"""On-disk INR zoo: one safetensors file per INR, a JSON manifest, sha256 checksums.

Layout of a zoo directory ``DIR``::

    DIR/manifest.json                         the index (atomic rewrites)
    DIR/inrs/<object_id>/<function>/<arch>.safetensors

Each ``.safetensors`` file holds the field's ``state_dict`` (tensors only: nothing is ever
unpickled) and string metadata: ``format``, ``arch_spec`` (ArchSpec JSON), ``arch``,
``family``, ``function``, ``object_id``, ``class_name``, ``label``, ``split``, ``gate``
(JSON metrics). The manifest maps a key ``object_id/function/arch`` to the file's relative
path, sha256, size and the same facts, and lists the objects (class, label, split) and
the INRs the quality gate dropped.

Writes are atomic: a file is written to a temporary name in the same directory and
``os.replace`` d into place, the manifest likewise. Every stored INR and every gate drop is also
appended, as it happens, to ``DIR/journal.jsonl`` (one JSON line each, fsynced; worker processes
append to it too), so nothing a killed build did is lost: the next :class:`ZooWriter` replays the
journal into the manifest, then :meth:`ZooWriter.adopt_orphans` enters complete files written
just before a kill (at their own key's path only, checksum verified, never over a listed key).
``DIR/.lock`` holds the PID of the one process building the zoo (:func:`zoo_lock`). Each INR file
carries ``tensors_sha256`` (its tensors' checksum) and its bytes are deterministic (sorted header).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterator, Optional

import torch

from gmn_inr.atomic import atomic_write_bytes, fault_point, safetensors_bytes, tensors_digest
from gmn_inr.fields import ArchSpec, SpecError, load_field

MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
LOCK = ".lock"
FORMAT = "gmn_inr.zoo/1"
FILE_FORMAT = "gmn_inr.zoo.inr/1"
SPLITS = ("train", "val", "test")


class ZooError(RuntimeError):
    """A zoo directory or file that is missing, foreign or malformed."""


class ZooBusyError(ZooError):
    """Another process holds the zoo's build lock (``.pid`` names it)."""

    def __init__(self, root, pid):
        super().__init__(f"zoo {root} is being built by process {pid} (wait for it, or pass --wait)")
        self.pid = pid


class ZooCorruptError(ZooError):
    """A stored file whose bytes do not match the manifest's checksum (``.path`` names it)."""

    def __init__(self, path, msg: str):
        super().__init__(msg)
        self.path = Path(path)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inr_key(object_id: str, function: str, arch: str) -> str:
    return f"{object_id}/{function}/{arch}"


def _safe_name(s: str) -> str:
    bad = set('/\\:*?"<>|') | {"\0"}
    if not s or s in (".", "..") or any(c in bad for c in s):
        raise ValueError(f"{s!r} cannot be used in a file name")
    return s


def rel_path(object_id: str, function: str, arch: str) -> str:
    """Where an INR lives inside a zoo directory."""
    return f"inrs/{_safe_name(object_id)}/{_safe_name(function)}/{_safe_name(arch)}.safetensors"


def inr_metadata(spec: ArchSpec, function: str, object_id: str, obj: dict, gate: dict) -> dict:
    """The string metadata of one INR file (the one place it is assembled): ``obj`` is the
    object's manifest entry (``class_name``, ``label``, ``split``), ``gate`` its gate metrics."""
    return {"format": FILE_FORMAT, "arch_spec": spec.to_json(), "arch": spec.name, "family": spec.family,
            "function": function, "object_id": object_id, "class_name": obj["class_name"],
            "label": str(obj["label"]), "split": obj["split"], "gate": json.dumps(gate, sort_keys=True)}


def write_inr_file(path: Path, state_dict: dict, meta: dict) -> tuple[str, int]:
    """Serialise a state dict + string metadata to ``path`` atomically; ``(sha256, bytes)``."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    meta = {**{k: str(v) for k, v in meta.items()}, "tensors_sha256": tensors_digest(tensors)}
    data = safetensors_bytes(tensors, metadata=meta)      # same tensors + metadata -> same bytes
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest(), len(data)


def read_inr_file(path) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of one INR file; :class:`ZooError` if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
        tensors = load(data)
        from safetensors import safe_open  # metadata without a second parse of tensors

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise ZooError(f"INR file {path} is missing") from None
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise ZooError(f"{path} is not a readable safetensors file: {exc}") from None
    if meta.get("format") != FILE_FORMAT:
        raise ZooError(f"{path} is not a gmn_inr zoo INR (format {meta.get('format')!r}, want {FILE_FORMAT!r})")
    if "tensors_sha256" in meta and tensors_digest(tensors) != meta["tensors_sha256"]:
        raise ZooCorruptError(path, f"corrupt INR file {path}: its tensors do not match their checksum")
    return tensors, meta


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
class ZooRecord:
    """One stored INR. Cheap to create; the file is read only by :meth:`field` /
    :meth:`state_dict` (checksum verified first) and the graph is cached by :meth:`graph`."""

    def __init__(self, root: Path, key: str, entry: dict):
        self.root = root
        self.key = key
        self.entry = entry
        self.arch: str = entry["arch"]
        self.family: str = entry["family"]
        self.function: str = entry["function"]
        self.object_id: str = entry["object_id"]
        self.class_name: str = entry["class_name"]
        self.label: int = int(entry["label"])
        self.split: str = entry["split"]
        self.gate: dict = entry.get("gate", {})
        self.path: Path = root / entry["path"]
        self._spec: Optional[ArchSpec] = None
        self._graph = None

    @property
    def spec(self) -> ArchSpec:
        if self._spec is None:
            self._spec = ArchSpec.from_json(self.entry["arch_spec"])
        return self._spec

    def verify(self) -> None:
        """Raise :class:`ZooCorruptError` naming the file if its sha256 differs from the manifest's."""
        if not self.path.exists():
            raise ZooCorruptError(self.path, f"INR file {self.path} is missing")
        got = sha256_file(self.path)
        if got != self.entry["sha256"]:
            raise ZooCorruptError(self.path, f"corrupt INR file {self.path}: sha256 {got[:12]}... != manifest "
                                             f"{self.entry['sha256'][:12]}...")

    def state_dict(self, verify: bool = True) -> dict[str, torch.Tensor]:
        if verify:
            self.verify()
        tensors, meta = read_inr_file(self.path)
        if meta.get("object_id") != self.object_id or meta.get("arch") != self.arch:
            raise ZooError(f"{self.path} holds {meta.get('object_id')}/{meta.get('arch')}, manifest says "
                           f"{self.object_id}/{self.arch}")
        return tensors

    def field(self, verify: bool = True) -> torch.nn.Module:
        """The rebuilt field module (``gmn_inr.fields.load_field``), in eval mode."""
        return load_field(self.spec, self.state_dict(verify)).eval()

    def graph(self):
        """The parameter graph (``graphs.to_graph(self.field())``), computed once and cached."""
        if self._graph is None:
            import graphs

            self._graph = graphs.to_graph(self.field())
        return self._graph

    def __repr__(self) -> str:
        return (f"ZooRecord({self.object_id!r}, {self.class_name!r}, arch={self.arch!r}, "
                f"function={self.function!r}, split={self.split!r})")


#: what every manifest entry of an INR must hold (and the type of each)
ENTRY_FIELDS = {"path": str, "sha256": str, "bytes": int, "arch": str, "family": str, "function": str,
                "object_id": str, "class_name": str, "label": int, "split": str, "arch_spec": str}


def check_manifest(m: dict, mpath) -> None:
    """Raise :class:`ZooError` naming ``mpath`` and the first entry whose structure is wrong (a manifest
    that parses as JSON but is not one gmn_inr wrote: lists where maps belong, missing fields, ...)."""
    def bad(what: str):
        raise ZooError(f"{mpath} is malformed: {what}")

    for k, t in (("classes", list), ("objects", dict), ("inrs", dict), ("dropped", dict), ("builds", list)):
        if k in m and not isinstance(m[k], t):
            bad(f"'{k}' must be a {t.__name__}, got {type(m[k]).__name__}")
    for oid, o in m.get("objects", {}).items():
        if not isinstance(o, dict) or not isinstance(o.get("class_name"), str) or o.get("split") not in SPLITS:
            bad(f"object {oid!r} needs a class_name and a split in {SPLITS}, got {o!r}"[:300])
    for key, e in m.get("inrs", {}).items():
        if not isinstance(e, dict):
            bad(f"INR {key!r} is a {type(e).__name__}, not a map")
        for f, t in ENTRY_FIELDS.items():
            if not isinstance(e.get(f), t) or isinstance(e.get(f), bool):
                bad(f"INR {key!r} has no valid {f!r} (want {t.__name__}, got {e.get(f)!r})"[:300])
        if e["split"] not in SPLITS:
            bad(f"INR {key!r} has split {e['split']!r}, not one of {SPLITS}")
        p = Path(e["path"])
        if p.is_absolute() or ".." in p.parts:
            bad(f"INR {key!r} points outside the zoo ({e['path']!r})")
        if not isinstance(e.get("gate", {}), dict):
            bad(f"INR {key!r} has a gate that is not a map")
    for key, e in m.get("dropped", {}).items():
        if not isinstance(e, dict):
            bad(f"dropped INR {key!r} is a {type(e).__name__}, not a map")


class ZooStore:
    """A zoo directory opened for reading: iterate it for :class:`ZooRecord` s (sorted by key)."""

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ZooError(f"zoo directory {self.root} does not exist")
        mpath = self.root / MANIFEST
        if not mpath.exists():
            raise ZooError(f"{self.root} is not an INR zoo: it has no {MANIFEST} "
                           f"(build one with `gmn-inr zoo build --out {self.root}`)")
        try:
            self.manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ZooError(f"{mpath} is not valid JSON: {exc}") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise ZooError(f"{mpath} is not a gmn_inr zoo manifest (format "
                           f"{self.manifest.get('format') if isinstance(self.manifest, dict) else None!r}, want {FORMAT!r})")
        check_manifest(self.manifest, mpath)
        self.classes: list[str] = list(self.manifest.get("classes", []))
        self.objects: dict[str, dict] = self.manifest.get("objects", {})
        self._records = [ZooRecord(self.root, k, e) for k, e in sorted(self.manifest.get("inrs", {}).items())]

    def __iter__(self) -> Iterator[ZooRecord]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> ZooRecord:
        return self._records[i]

    def records(self, split: Optional[str] = None, archs=None, functions=None, families=None,
                classes=None) -> list[ZooRecord]:
        """Records filtered by split, architecture names, functions, families, class names."""
        def ok(r: ZooRecord) -> bool:
            return ((split is None or r.split == split) and (archs is None or r.arch in archs)
                    and (functions is None or r.function in functions)
                    and (families is None or r.family in families)
                    and (classes is None or r.class_name in classes))
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
        return [r for r in self._records if ok(r)]

    def verify(self) -> list[Path]:
        """Check every file's sha256; returns the paths of missing or corrupt files."""
        bad = []
        for r in self._records:
            try:
                r.verify()
            except ZooCorruptError as exc:
                bad.append(exc.path)
        return bad

    def counts(self) -> dict:
        """Counts per family, arch, class, function, split (of INRs) and objects per split."""
        from collections import Counter

        out = {k: Counter() for k in ("family", "arch", "class_name", "function", "split")}
        for r in self._records:
            for k in out:
                out[k][getattr(r, k)] += 1
        out["objects_per_split"] = Counter(o["split"] for o in self.objects.values())
        return {k: dict(sorted(v.items())) for k, v in out.items()}


def open_store(root) -> ZooStore:
    """Open a zoo directory for reading (clear :class:`ZooError` if it is not one)."""
    return ZooStore(root)


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _entry(meta: dict, rel: str, sha: str, n: int) -> dict:
    return {"path": rel, "sha256": sha, "bytes": n, "arch": meta["arch"], "family": meta["family"],
            "function": meta["function"], "object_id": meta["object_id"], "class_name": meta["class_name"],
            "label": int(meta["label"]), "split": meta["split"], "arch_spec": meta["arch_spec"],
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


def store_inr(root, spec: ArchSpec, function: str, object_id: str, obj: dict, state_dict: dict,
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
            if config is not None and self.manifest.get("config") not in (None, config):
                raise ZooError(f"{self.root} holds a zoo built with a different configuration; "
                               f"use another --out or delete it")
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

    def add(self, spec: ArchSpec, function: str, object_id: str, state_dict: dict, gate: dict) -> dict:
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
            try:
                ok = p.is_file() and sha256_file(p) == e["sha256"]
            except OSError:
                ok = False
            if ok:
                continue
            bad.append(key)
            del self.inrs[key]
            if p.exists():
                os.replace(p, p.with_name(p.name + ".corrupt"))
        if bad:
            self.flush()
        return bad

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
                ArchSpec.from_json(meta["arch_spec"])
                if meta["object_id"] not in self.manifest["objects"]:
                    raise ZooError("unknown object")
                key = inr_key(meta["object_id"], meta["function"], meta["arch"])
                if rel != rel_path(meta["object_id"], meta["function"], meta["arch"]) or self.done(key):
                    continue         # not where its key lives, or the key is taken: not the record
                if "tensors_sha256" not in meta:
                    continue         # written before files carried a checksum: cannot be trusted
                entry = self._entry(meta, rel, sha256_file(p), p.stat().st_size)
            except (ZooError, SpecError, KeyError, ValueError):
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
