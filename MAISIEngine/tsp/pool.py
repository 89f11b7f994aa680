"""Reused host buffers for the tensors a CPU pass allocates and drops at every step.

A pass computes the same shapes step after step. Freshly allocated host memory costs a page fault and
zeroing per 4 KiB page, and the executor returns freed memory to the OS after each step so that the
resident size follows the plan; allocating anew every step therefore spent about a fifth of a 128^3
decode in the kernel (measured: 38.7 s with fresh buffers, 31.1 s without returning memory). The pool
hands out buffers by size and takes them back as soon as nothing references them any more, so a
step's tensors reuse the previous step's pages. It is emptied after every pass: its size is one step's
working set, which the planner already counts. Tensors that a pass keeps stay out of it (they are
released chunk by chunk and must give their memory back).
"""

from __future__ import annotations

import threading

import torch

CHANNELS_LAST = torch.channels_last_3d


def _use_count(storage: torch.UntypedStorage) -> int | None:
    """How many tensors (plus the pool's own handle) share a storage; None if torch cannot say."""
    counter = getattr(torch._C, "_storage_Use_Count", None)
    if counter is None:
        return None
    return int(counter(storage._cdata))


class BufferPool:
    """Channels-last host buffers, reused once every tensor viewing them is gone.

    A request takes the smallest free buffer that is large enough (steps differ a little in their row
    counts, so exact shapes would rarely match). When none is, the free buffers too small for it are
    dropped and a new one of exactly its size is made, so the pool holds about one step's tensors.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and _use_count(torch.empty(0).untyped_storage()) is not None
        self._storages: list[torch.UntypedStorage] = []
        self._lock = threading.Lock()  # devices of one pass may run side by side in threads

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised channels-last 5D tensor, in a buffer nothing else uses when there is one."""
        if not self.enabled:
            return torch.empty(shape, dtype=dtype, memory_format=CHANNELS_LAST)
        _, c, d, h, w = shape
        nbytes = c * d * h * w * torch.empty((), dtype=dtype).element_size()
        with self._lock:
            free = [s for s in self._storages if _use_count(s) == 1]  # only the pool holds it
            fits = [s for s in free if s.nbytes() >= nbytes]
            if fits:
                storage = min(fits, key=lambda s: s.nbytes())
                return torch.empty(0, dtype=dtype).set_(storage, 0, shape, (c * d * h * w, 1, h * w * c, w * c, c))
            small = {id(s) for s in free}
            self._storages = [s for s in self._storages if id(s) not in small]
            tensor = torch.empty(shape, dtype=dtype, memory_format=CHANNELS_LAST)
            self._storages.append(tensor.untyped_storage())
            return tensor

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self._storages)

    def clear(self) -> None:
        """Forget every buffer (those still referenced live on with their tensors)."""
        with self._lock:
            self._storages.clear()
