"""Where a module runs, and running it elsewhere without moving the caller's.

``Module.to`` moves a module in place, so code that evaluates a caller's field or encoder on
another device works on a copy: :func:`on_device`.
"""
from __future__ import annotations

import copy
import itertools
from typing import Optional

import torch
from torch import nn


def module_device(module: nn.Module, default: Optional[torch.device] = torch.device("cpu")) -> Optional[torch.device]:
    """The device of ``module``'s first parameter (or buffer); ``default`` for one with neither."""
    t = next(itertools.chain(module.parameters(), module.buffers()), None)
    return t.device if t is not None else default


def on_device(module: nn.Module, device: "torch.device | str") -> nn.Module:
    """``module`` itself when every parameter and buffer is on ``device``, else a copy moved there."""
    device = torch.device(device)
    if all(t.device == device for t in itertools.chain(module.parameters(), module.buffers())):
        return module
    return copy.deepcopy(module).to(device)
