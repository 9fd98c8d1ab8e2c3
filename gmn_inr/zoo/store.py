"""On-disk INR zoo: one safetensors file per INR, a JSON manifest, sha256 checksums.

Layout of a zoo directory ``DIR``::

    DIR/manifest.json                         the index (atomic rewrites)
    DIR/inrs/<object_id>/<function>/<arch>.safetensors
    DIR/modules/<sha256>.py                   an imported module's file (``traced`` family only)

Each ``.safetensors`` file holds the field's ``state_dict`` (tensors only: nothing is ever
unpickled) and string metadata: ``format``, ``arch_spec`` (ArchSpec JSON; for a user's module of
the ``traced`` family ``module`` instead, a :class:`~gmn_inr.fields.user_module.ModuleSpec` naming
its copy of the module file, which reading the field imports), ``arch``,
``family``, ``function``, ``object_id``, ``class_name``, ``label``, ``split``, ``gate``
(JSON metrics). The manifest maps a key ``object_id/function/arch`` to the file's relative
path, sha256, size and the same facts, and lists the objects (class, label, split) and
the INRs the quality gate dropped.

Writes are atomic: a file is written to a temporary name in the same directory and
``os.replace`` d into place, the manifest likewise. Every stored INR and every gate drop is also
appended, as it happens, to ``DIR/journal.jsonl`` (one JSON line each, fsynced; worker processes
append to it too), so nothing a killed build did is lost: the next :class:`~gmn_inr.zoo.writer.ZooWriter` replays the
journal into the manifest, then :meth:`ZooWriter.adopt_orphans` enters complete files written
just before a kill (at their own key's path only, checksum verified, never over a listed key).
``DIR/.lock`` holds the PID of the one process building the zoo (:func:`~gmn_inr.zoo.writer.zoo_lock`). Each INR file
carries ``tensors_sha256`` (its tensors' checksum) and its bytes are deterministic (sorted header).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator, Optional

import torch

from gmn_inr.atomic import atomic_write_bytes, fault_point, safetensors_bytes, tensors_digest  # noqa: F401  (search imports it from here)
from gmn_inr.fields import ArchSpec, load_field
from gmn_inr.fields.user_module import TRACED_FAMILY, FormatError, ModuleSpec, copy_problem

MANIFEST = "manifest.json"
MODULES = "modules"
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


def inr_metadata(spec: "ArchSpec | ModuleSpec", function: str, object_id: str, obj: dict, gate: dict) -> dict:
    """The string metadata of one INR file (the one place it is assembled): ``obj`` is the
    object's manifest entry (``class_name``, ``label``, ``split``), ``gate`` its gate metrics."""
    what = {"module": spec.to_json()} if isinstance(spec, ModuleSpec) else {"arch_spec": spec.to_json()}
    return {"format": FILE_FORMAT, **what, "arch": spec.name, "family": spec.family,
            "function": function, "object_id": object_id, "class_name": obj["class_name"],
            "label": str(obj["label"]), "split": obj["split"], "gate": json.dumps(gate, sort_keys=True)}


def store_module_file(root, data: bytes) -> str:
    """Keep a module file's bytes in the store as ``modules/<sha256>.py`` (atomically, once per
    content); its path relative to ``root``."""
    rel = f"{MODULES}/{hashlib.sha256(data).hexdigest()}.py"
    path = Path(root) / rel
    if copy_problem(path):
        atomic_write_bytes(path, data)
        fault_point("after_module_write")
    return rel


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
        self._spec: "Optional[ArchSpec | ModuleSpec]" = None
        self._graph = None

    @property
    def spec(self) -> "ArchSpec | ModuleSpec":
        """The field's :class:`ArchSpec`, or for a user's module (``traced`` family) its :class:`ModuleSpec`."""
        if self._spec is None:
            if self.family == TRACED_FAMILY:
                try:
                    self._spec = ModuleSpec.from_json(self.entry.get("module", ""))
                except FormatError as exc:
                    raise ZooError(f"INR {self.key} of {self.root}: {exc}") from None
            else:
                self._spec = ArchSpec.from_json(self.entry["arch_spec"])
        return self._spec

    def verify(self) -> None:
        """Raise :class:`ZooCorruptError` naming the file if its sha256 differs from the manifest's
        (for a user's module, also its module file: missing, or not the content it is named by)."""
        if not self.path.exists():
            raise ZooCorruptError(self.path, f"INR file {self.path} is missing")
        got = sha256_file(self.path)
        if got != self.entry["sha256"]:
            raise ZooCorruptError(self.path, f"corrupt INR file {self.path}: sha256 {got[:12]}... != manifest "
                                             f"{self.entry['sha256'][:12]}...")
        if self.family == TRACED_FAMILY:
            mod = self.root / self.spec.file
            problem = copy_problem(mod)
            if problem:
                raise ZooCorruptError(mod, f"module file {mod} of INR {self.key} {problem}")

    def state_dict(self, verify: bool = True) -> dict[str, torch.Tensor]:
        if verify:
            self.verify()
        tensors, meta = read_inr_file(self.path)
        if meta.get("object_id") != self.object_id or meta.get("arch") != self.arch:
            raise ZooError(f"{self.path} holds {meta.get('object_id')}/{meta.get('arch')}, manifest says "
                           f"{self.object_id}/{self.arch}")
        return tensors

    def field(self, verify: bool = True) -> torch.nn.Module:
        """The rebuilt field module (``gmn_inr.fields.load_field``; a user's module: its
        :class:`~gmn_inr.fields.user_module.ModuleField`, built by the store's copy of its file), in eval mode."""
        state = self.state_dict(verify)
        if self.family != TRACED_FAMILY:
            return load_field(self.spec, state).eval()
        try:
            return self.spec.build(self.root, state, f"INR {self.key}")
        except FormatError as exc:
            raise ZooError(str(exc)) from None

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
        if e["family"] == TRACED_FAMILY and not isinstance(e.get("module"), str):
            bad(f"INR {key!r} is a user's module with no 'module' description")
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
                if exc.path not in bad:          # a module file several entries share: once
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


def record_of_file(path) -> ZooRecord:
    """The record of a stored INR file, found through the store it lies in
    (``STORE/inrs/<object>/<function>/<arch>.safetensors``): a user's module is rebuilt by the
    store's copy of its module file, so its INR file alone does not make a field."""
    path = Path(path).resolve()
    root = path.parents[3] if len(path.parents) > 3 else None
    if root is None or not (root / MANIFEST).is_file():
        raise ZooError(f"{path} is a stored user's module away from its store (the store keeps its module file): "
                       f"read it as STORE/inrs/<object>/<function>/<arch>.safetensors")
    rel = path.relative_to(root).as_posix()
    found = [r for r in ZooStore(root) if r.entry["path"] == rel]
    if not found:
        raise ZooError(f"{path} is not listed in {root / MANIFEST}")
    return found[0]


def open_store(root) -> ZooStore:
    """Open a zoo directory for reading (clear :class:`ZooError` if it is not one)."""
    return ZooStore(root)
