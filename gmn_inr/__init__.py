"""gmn_inr: embeddings of implicit neural representations of any architecture, from their weights.

Kept lean: importing ``gmn_inr`` imports nothing heavy; ``gmn_inr.Embedder`` loads lazily.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {"Embedder": "gmn_inr.embedder"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gmn_inr' has no attribute {name!r}")
