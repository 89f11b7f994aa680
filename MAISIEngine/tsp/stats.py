"""Whole-tensor GroupNorm statistics accumulated segment by segment.

A GroupNorm over a split tensor is exact only with the statistics of the whole tensor. While a pass
writes the segments of a tensor, `GroupStats.add` accumulates per-channel sums of (x - k) and
(x - k)^2 in float64, with k a per-channel shift taken from the first segment (so a large mean cannot
cancel the variance away). `finish` merges channels into groups and gives the affine map
y = (x - mean) * scale + bias that the normalisation applies per segment.
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 22  # centre at most this many values at a time (bounds the temporary buffer)


class GroupStats:
    def __init__(self, channels: int, groups: int) -> None:
        self.channels = channels
        self.groups = groups
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.sum1: torch.Tensor | None = None
        self.sum2: torch.Tensor | None = None
        self._buffer: torch.Tensor | None = None  # reused by every segment (fresh pages cost faults)

    def add(self, segment: torch.Tensor) -> None:
        """Accumulate one segment (1, C, D, H, W), channels-last, on any device."""
        flat = segment.permute(0, 2, 3, 4, 1).reshape(-1, self.channels)
        if self.shift is None:
            self.shift = flat.mean(0, dtype=torch.float32)
            self.sum1 = torch.zeros(self.channels, dtype=torch.float64, device=segment.device)
            self.sum2 = torch.zeros(self.channels, dtype=torch.float64, device=segment.device)
        shift = self.shift.to(segment.device)
        rows = max(1, _CHUNK_ELEMENTS // self.channels)
        size = min(rows, flat.shape[0]) * self.channels
        if self._buffer is None or self._buffer.numel() < size or self._buffer.device != segment.device:
            self._buffer = torch.empty(size, dtype=torch.float32, device=segment.device)
        buffer = self._buffer[:size].view(-1, self.channels)
        for start in range(0, flat.shape[0], rows):
            part = flat[start : start + rows]
            centred = buffer[: part.shape[0]]
            torch.sub(part, shift, out=centred)
            self.sum1 += centred.sum(0).double()  # type: ignore[operator]
            self.sum2 += torch.linalg.vecdot(centred, centred, dim=0).double()  # type: ignore[operator]
        self.count += flat.shape[0]

    def merge(self, other: GroupStats) -> None:
        """Fold in statistics gathered elsewhere (another device) with their own shift."""
        if other.shift is None:
            return
        if self.shift is None:
            self.shift, self.sum1, self.sum2, self.count = other.shift.cpu(), other.sum1.cpu(), other.sum2.cpu(), other.count  # type: ignore[union-attr]
            return
        delta = (other.shift.double().cpu() - self.shift.double().cpu())  # x - k_self = (x - k_other) + delta
        s1, s2 = other.sum1.cpu(), other.sum2.cpu()  # type: ignore[union-attr]
        self.sum1 = self.sum1.cpu() + s1 + other.count * delta  # type: ignore[union-attr]
        self.sum2 = self.sum2.cpu() + s2 + 2 * delta * s1 + other.count * delta * delta  # type: ignore[union-attr]
        self.count += other.count

    def finish(self, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (mean, 1 / sqrt(var + eps)) of each channel's group, float64 on the CPU."""
        assert self.shift is not None and self.sum1 is not None and self.sum2 is not None
        per_group = self.channels // self.groups
        k = self.shift.double().cpu().view(self.groups, per_group)
        s1 = self.sum1.cpu().view(self.groups, per_group)
        s2 = self.sum2.cpu().view(self.groups, per_group)
        n = float(self.count * per_group)
        mean = (s1 + self.count * k).sum(1) / n
        d = k - mean[:, None]
        m2 = (s2 + 2 * d * s1 + self.count * d * d).sum(1)
        var = (m2 / n).clamp_min(0.0)
        rstd = 1.0 / torch.sqrt(var + eps)
        return mean.repeat_interleave(per_group), rstd.repeat_interleave(per_group)
