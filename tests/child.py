"""The environment of a test's child Python process: this checkout's package and the tests' helper
modules importable through PYTHONPATH (the child's own code never edits sys.path)."""
import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def child_env(**extra: str) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}
