"""What a benchmark's numbers depend on besides the code: the machine's floating-point kernels,
the thread count and the exact bytes of the INRs it read.

Float sums regroup with the SIMD width and the thread count, so a table is reproducible bit for
bit only where all of these match; every results JSON records them (``meta``) so that two runs
that differ can be told apart by their inputs before anyone reads the cells.
"""
from __future__ import annotations

import hashlib
import platform
from pathlib import Path


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), or the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_meta() -> dict:
    """CPU model, the SIMD level torch dispatches its kernels to, torch's version and threads."""
    import torch

    cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "unknown")()
    return {"cpu": cpu_model(), "cpu_capability": cap, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def files_digest(root: str | Path, pattern: str = "*.safetensors") -> dict:
    """sha256 over the sorted relative paths and contents of every file matching ``pattern`` under
    ``root``: equal digests mean byte-identical INR files. ``{"files": n, "sha256": hex}``."""
    root = Path(root)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob(pattern) if p.is_file())
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return {"files": len(files), "sha256": h.hexdigest()}
