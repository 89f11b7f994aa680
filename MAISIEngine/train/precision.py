"""Mixed precision: bf16 autocast on CUDA (no loss scaling needed), full precision elsewhere."""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager

import torch


def autocast(device: torch.device, enabled: bool) -> ContextManager[object]:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
