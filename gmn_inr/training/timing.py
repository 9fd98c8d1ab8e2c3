"""Where a training step's time goes: :class:`PartTimes`, wall seconds per named part.

On CUDA each part is bracketed by ``torch.cuda.synchronize`` (kernels run asynchronously, so
without it a part's time would show up in whichever later part waits). Off by default: a
training run only pays for it when a caller passes one to :func:`~gmn_inr.training.loop.train`.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext

import torch


class PartTimes:
    """``with times("encoder"): ...`` adds the block's wall time to ``seconds["encoder"]``."""

    def __init__(self, device: "torch.device | str" = "cpu"):
        self.sync = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, name: str):
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - t0
            self.calls[name] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def no_times(name: str):
    """The timer a step uses when nobody measures: a no-op."""
    return nullcontext()
