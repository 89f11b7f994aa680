"""Row-chunked tensors: the pieces a pass holds and the tensors a plan keeps between passes."""

from __future__ import annotations

import bisect

import torch

from MAISIEngine.tsp.segments import Rows

Pieces = list[tuple[int, torch.Tensor]]  # consecutive row ranges: (first row, tensor)


def slices(pieces: Pieces, a: int, b: int) -> Pieces:
    """Views of the pieces covering rows [a, b)."""
    out = []
    for start, tensor in pieces:
        end = start + tensor.shape[2]
        if end > a and start < b:
            out.append((max(a, start), tensor[:, :, max(a, start) - start : min(b, end) - start]))
    return out


def gather(pieces: Pieces, a: int, b: int) -> torch.Tensor:
    """Rows [a, b) as one tensor: a view when one piece holds them, else a copy."""
    parts = slices(pieces, a, b)
    return parts[0][1] if len(parts) == 1 else torch.cat([t for _, t in parts], dim=2)


class Stored:
    """A full-size tensor held as row chunks, released from the front as passes move on."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, int, torch.Tensor, object]] = []

    def add(self, lo: int, hi: int, value: torch.Tensor, ready: object = None) -> None:
        bisect.insort(self.chunks, (lo, hi, value, ready), key=lambda c: c[0])

    def pieces(self, rows: Rows, device: torch.device) -> Pieces:
        """Rows [a, b) as (first row, view) pieces on `device` (copied there only if stored elsewhere)."""
        a, b = rows
        out: Pieces = []
        for lo, hi, value, ready in self.chunks:
            if hi <= a or lo >= b:
                continue
            if ready is not None and device.type == "cuda":
                torch.cuda.current_stream(device).wait_event(ready)  # type: ignore[arg-type]
            part = value[:, :, max(a, lo) - lo : min(b, hi) - lo]
            out.append((max(a, lo), part.to(device, non_blocking=True)))
        return out

    def release_below(self, row: int) -> None:
        self.chunks = [c for c in self.chunks if c[1] > row]
