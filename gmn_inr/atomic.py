"""Atomic file writes, the one implementation: zoo files and manifests, checkpoints, embeddings.

``atomic_write_bytes(path, data)`` writes to a temporary file in the same directory, fsyncs it
and ``os.replace`` s it into place, so a reader (or a resumed run) sees the old file or the new
one, never half of one.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name per process and call; open() (not mkstemp) so the file gets the umask's
    # permissions, like any other file the user writes; ".<name>.*.tmp" is what a resumed zoo
    # build deletes as half-written
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    """``safetensors.torch.save`` with a deterministic header: the library writes its metadata map
    in a random (hash) order, so identical tensors and metadata gave different bytes (and sha256)
    from one process to the next. The header is re-serialised with sorted keys; tensor data and
    offsets are the library's (ordered by dtype and name, already deterministic)."""
    import json

    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    new = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    new += b" " * (-len(new) % 8)             # data starts on an 8-byte boundary, as the library pads
    return len(new).to_bytes(8, "little") + new + data[8 + n:]


class NotWritableError(OSError):
    """An output folder that cannot be created or written (checked before any work starts)."""


def ensure_writable_dir(path) -> Path:
    """Create ``path`` (and parents) if needed and check that a file can be written in it; raise
    :class:`NotWritableError` naming the folder otherwise. Returns the path."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise NotWritableError(f"output {path} exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        with open(probe, "xb"):
            pass
        probe.unlink()
    except NotWritableError:
        raise
    except OSError as exc:
        raise NotWritableError(f"output folder {path} is not writable: {exc.strerror or exc}") from None
    return path


def fault_point(name: str) -> None:
    """Fault-injection test hook (used by the test suite only): with ``GMN_INR_FAULT=NAME:K`` in the
    environment, the K-th time this process reaches the point ``NAME`` it kills itself with SIGKILL,
    exactly as ``kill -9`` at that moment would. Points: ``after_inr_write`` (an INR file is in place,
    its journal line not yet), ``after_journal`` (both), ``after_drop`` (a gate drop journalled),
    ``after_module_write`` (an imported module's file copied into a store),
    ``after_manifest_flush``, ``after_checkpoint_write`` (training). Without the variable: a no-op."""
    spec = os.environ.get("GMN_INR_FAULT")
    if not spec:
        return
    want, _, k = spec.partition(":")
    if want != name:
        return
    _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if _FAULT_COUNTS[name] == int(k or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_COUNTS: dict = {}


def tensors_digest(tensors: dict) -> str:
    """sha256 over named tensors (name, dtype, shape and bytes, in name order): the checksum that zoo
    INR files and checkpoints carry in their metadata and verify on read."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()
