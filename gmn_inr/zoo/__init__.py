"""The INR zoo: procedural shapes and user meshes, batched fitting of every architecture
family and variant, a safetensors store with a manifest, and datasets over it.

``open_store(DIR)`` opens a built zoo; ``gmn-inr zoo build|info|show`` make and inspect one.
Only light names are imported here (the store needs torch and safetensors; fitting and
shapes are imported when used).
"""
from .store import ZooCorruptError, ZooError, ZooRecord, ZooStore, open_store

__all__ = ["open_store", "ZooStore", "ZooRecord", "ZooError", "ZooCorruptError"]
