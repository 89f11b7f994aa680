"""CPU-side runtime helpers: thread counts per kind of step, and returning freed memory to the OS."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable

import torch


class CpuThreads:
    """Thread counts on a single CPU device: all threads, unless the machine is busy.

    Work is split into short steps. On an idle machine all threads are faster; on a busy one every
    OpenMP barrier can wait a whole scheduler slice for a descheduled thread, and one thread can be
    faster. A step run with all threads also tells how busy the machine is: the process's CPU time
    over wall time times threads (its utilisation). While that stays high, steps simply use all
    threads (trying one thread costs a whole step at half speed). When it drops, each kind of step
    (keyed by operation and shape) is timed with both counts and runs with the faster one, re-timing
    the other now and then. Bookkeeping between steps runs on one thread.
    """

    RETRY = 16  # while busy: every this many calls of a kind, time the other thread count again
    BUSY = 0.75  # utilisation below which the machine counts as busy
    MIN_SAMPLE_S = 0.02  # shorter steps say too little about utilisation

    def __init__(self, devices: list[torch.device]) -> None:
        self.threads = torch.get_num_threads()
        self.active = len(devices) == 1 and devices[0].type == "cpu" and self.threads > 1
        self.seconds: dict[tuple, dict[int, float]] = {}
        self.calls: dict[tuple, int] = {}
        self.utilisation = 1.0  # running mean over all-thread steps

    def light(self) -> None:
        if self.active:
            torch.set_num_threads(1)

    def restore(self) -> None:
        if self.active:
            torch.set_num_threads(self.threads)

    def heavy(self, key: tuple, work: Callable[[], object]) -> object:
        """Run `work` (identified by `key`) with all threads, or the count that has been faster when busy."""
        if not self.active:
            return work()
        timed = self.seconds.setdefault(key, {})
        calls = self.calls[key] = self.calls.get(key, 0) + 1
        if self.utilisation >= self.BUSY:
            threads = self.threads
        elif len(timed) < 2:
            threads = 1 if self.threads in timed else self.threads
        else:
            best = min(timed, key=timed.__getitem__)
            threads = best if calls % self.RETRY else (1 if best != 1 else self.threads)
        torch.set_num_threads(threads)
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return work()
        finally:
            elapsed = time.perf_counter() - start
            timed[threads] = elapsed if threads not in timed else 0.5 * (timed[threads] + elapsed)
            if threads == self.threads and elapsed >= self.MIN_SAMPLE_S:
                used = (time.process_time() - cpu) / (elapsed * threads)
                self.utilisation = 0.7 * self.utilisation + 0.3 * min(used, 1.0)
            torch.set_num_threads(1)


def _load_libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


_LIBC = _load_libc()


def release_host_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so RSS follows the plan."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
