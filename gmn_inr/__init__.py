"""gmn_inr: embeddings of implicit neural representations of any architecture, from their weights.

Kept lean: importing ``gmn_inr`` imports nothing heavy; ``gmn_inr.Embedder`` loads lazily.
"""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# libgomp's threads that finish a parallel region spin (300000 rounds) before they sleep; with
# another busy process on the cores a 2-thread training step took 17.6 s against 1.3 s waiting
# passively, while passive waiting costs 10-20% on quiet cores and 1000 rounds neither
# (docs/reference.md, "OpenMP wait policy"). libgomp reads the variables once, when torch loads
# it, so they are set here, before this package imports torch; a value the user set wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "1000")

_LAZY = {"Embedder": "gmn_inr.embedder"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gmn_inr' has no attribute {name!r}")
