"""CPU settings for long runs (zoo builds, training, benchmarks): one implementation.

glibc gives every large allocation its own ``mmap`` and returns it on free, so a loop that
allocates the same big tensors every step pays page faults each time; keeping freed memory
(no mmap, a high trim threshold) made batched zoo fitting 1.6-2.4x faster and a 16-graph
encoder step 2.5 s -> 1.1 s on one thread (docs/reference.md, "CPU allocator").
"""
from __future__ import annotations

#: glibc ``mallopt`` parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def tune_malloc() -> None:
    """Keep glibc from giving every large tensor its own mmap. A no-op where glibc is not the
    allocator."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def set_up_cpu(max_threads: int = 2) -> None:
    """Long batched runs: at most ``max_threads`` torch threads and :func:`tune_malloc`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(min(max_threads, n) if n > 0 else max_threads)
    tune_malloc()
