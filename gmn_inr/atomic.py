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
