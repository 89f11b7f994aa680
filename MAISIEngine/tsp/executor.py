"""Run a plan: passes over segments, exact halos, whole-tensor GroupNorm statistics, bounded memory.

Each pass produces one tensor of the graph segment by segment, in row order. Tensors the plan keeps are
held as row chunks (on the compute device, or in pinned host memory when offloaded) and released chunk
by chunk once the last pass reading them has moved past; every other tensor is recomputed inside the
passes that need it. Within a pass, the rows of an intermediate tensor that the next segment needs
again (the halo) are carried over instead of recomputed, so each row is computed once per pass. A
tensor some GroupNorm normalises has its statistics accumulated while its pass writes it, so every
later normalisation uses whole-tensor statistics. Several devices each stream a contiguous part of
the axis side by side.
"""

from __future__ import annotations

import bisect
import ctypes
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from MAISIEngine.tsp.graph import ADD, CONV, NORM, UPSAMPLE, Graph, Node
from MAISIEngine.tsp.segments import PassShape, Rows, clip, input_rows, pass_shape, regions, split_rows
from MAISIEngine.tsp.stats import GroupStats

CHANNELS_LAST = torch.channels_last_3d
INPUT_INDEX = 0  # the graph input is node 0 and always kept (it is the caller's tensor)


@dataclass(frozen=True)
class PassSpec:
    """One pass of a plan: the tensor it produces, in how many segments, and whether it is kept."""

    target: int
    segments: int
    store: bool
    offload: bool = False  # keep the stored chunks in host memory


class Stored:
    """A full-size tensor held as row chunks, released from the front as passes move on."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, int, torch.Tensor, object]] = []

    def add(self, lo: int, hi: int, value: torch.Tensor, ready: object = None) -> None:
        bisect.insort(self.chunks, (lo, hi, value, ready), key=lambda c: c[0])

    def read(self, rows: Rows, device: torch.device) -> tuple[torch.Tensor, bool]:
        """Rows [a, b) on `device`; returns (tensor, owned) where owned=False means a view into storage."""
        a, b = rows
        pieces = []
        for lo, hi, value, ready in self.chunks:
            if hi <= a or lo >= b:
                continue
            if ready is not None and device.type == "cuda":
                torch.cuda.current_stream(device).wait_event(ready)  # type: ignore[arg-type]
            pieces.append(value[:, :, max(a, lo) - lo : min(b, hi) - lo])
        if len(pieces) == 1 and pieces[0].device == device:
            return pieces[0], False
        return torch.cat([p.to(device, non_blocking=True) for p in pieces], dim=2), True

    def release_below(self, row: int) -> None:
        self.chunks = [c for c in self.chunks if c[1] > row]


class DeviceWeights:
    """Conv weights permuted to the split-axis order, cast and laid out channels-last on one device."""

    def __init__(self, graph: Graph, device: torch.device, dtype: torch.dtype, perm: tuple[int, ...]) -> None:
        self.device = device
        self.dtype = dtype
        self.conv: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        dims = (0, 1) + tuple(2 + p for p in perm)
        for node in graph.nodes:
            if node.op == CONV:
                conv = graph.modules[node.index]
                weight = conv.weight.detach().permute(dims).to(device=device, dtype=dtype)
                bias = None if conv.bias is None else conv.bias.detach().to(device=device, dtype=dtype)
                self.conv[node.index] = (weight.contiguous(memory_format=CHANNELS_LAST), bias)
        self.norm: dict[int, tuple[torch.Tensor, ...]] = {}

    def set_norm(self, index: int, mean: torch.Tensor, rstd: torch.Tensor, module: torch.nn.GroupNorm) -> None:
        """Keep y = (x - mean) * scale + bias for a norm node, from whole-tensor statistics."""
        weight = module.weight.detach().double().cpu() if module.affine else torch.ones_like(rstd)
        bias = module.bias.detach().double().cpu() if module.affine else torch.zeros_like(rstd)
        self.norm[index] = tuple(
            t.to(device=self.device, dtype=self.dtype).view(1, -1, 1, 1, 1) for t in (mean, rstd * weight, bias)
        )


def _release_host_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so RSS follows the plan."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Executor:
    """Runs the passes of a plan for one input of batch size 1."""

    def __init__(self, graph: Graph, passes: list[PassSpec], devices: list[torch.device], dtype: torch.dtype, axis: int) -> None:
        self.graph = graph
        self.passes = passes
        self.devices = devices
        self.dtype = dtype
        self.perm = (axis,) + tuple(a for a in range(3) if a != axis)
        self.weights = [DeviceWeights(graph, d, dtype, self.perm) for d in devices]
        stored = {INPUT_INDEX} | {p.target for p in passes if p.store}
        self.shapes = [pass_shape(graph, p.target, stored) for p in passes]
        self.last_reader: dict[int, int] = {}
        for k, shape in enumerate(self.shapes):
            for r in shape.reads:
                self.last_reader[r] = k
        self.copy_streams = {d: torch.cuda.Stream(d) for d in devices if d.type == "cuda"}

    def _permuted(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute((0, 1) + tuple(2 + p for p in self.perm))

    def run(self, x: torch.Tensor, out: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> None:
        """Compute the graph on x (1, C, X, Y, Z) into the preallocated out (1, C', X', Y', Z')."""
        staged = self._permuted(x).to(device=self.devices[0], dtype=self.dtype).contiguous(memory_format=CHANNELS_LAST)
        store: dict[int, Stored] = {INPUT_INDEX: Stored()}
        store[INPUT_INDEX].add(0, staged.shape[2], staged)
        del staged
        out_view = self._permuted(out)
        lengths = [s[0] for s in self.graph.sizes(tuple(x.shape[2 + p] for p in self.perm))]  # type: ignore[arg-type]
        pool = ThreadPoolExecutor(max_workers=len(self.devices)) if len(self.devices) > 1 else None
        try:
            for k, spec in enumerate(self.passes):
                self._run_pass(k, spec, lengths, store, out_view, pool)
                _release_host_memory()
                if progress is not None:
                    progress(k + 1, len(self.passes))
        finally:
            if pool is not None:
                pool.shutdown()

    def _run_pass(self, k: int, spec: PassSpec, lengths: list[int], store: dict[int, Stored], out_view: torch.Tensor, pool) -> None:
        graph, shape = self.graph, self.shapes[k]
        segments = split_rows(lengths[spec.target], spec.segments)
        needs = [regions(graph, shape, lengths, rows) for rows in segments]
        D = len(self.devices)
        runs = [list(range(j * len(segments) // D, (j + 1) * len(segments) // D)) for j in range(D)]
        releasing = [r for r in shape.reads if self.last_reader[r] == k]
        norms = [n for n in graph.nodes if n.op == NORM and n.inputs[0] == spec.target]
        stats = {n.index: [GroupStats(n.channels, graph.modules[n.index].num_groups) for _ in self.devices] for n in norms}
        carries: list[dict[int, tuple[int, torch.Tensor]]] = [{} for _ in self.devices]
        produced = Stored() if spec.store else None

        def work(j: int, s: int) -> torch.Tensor:
            following = needs[s + 1] if s + 1 in runs[j] else None
            with torch.inference_mode():
                value = self._segment(shape, needs[s], following, carries[j], lengths, store, self.weights[j])
                for n in norms:
                    stats[n.index][j].add(value)
            return value

        for step in range(max(len(run) for run in runs)):
            jobs = [(j, runs[j][step]) for j in range(D) if step < len(runs[j])]
            if pool is None:
                values = [work(j, s) for j, s in jobs]
            else:
                values = list(pool.map(lambda job: work(*job), jobs))
            for j, s in jobs:
                lo, hi = segments[s]
                value = values.pop(0)
                if spec.target == graph.output:
                    out_view[:, :, lo:hi].copy_(value)
                elif produced is not None:
                    produced.add(lo, hi, *self._keep(value, spec.offload))
                del value  # free the segment before the next one is computed
            upcoming = [needs[runs[j][step + 1]] for j in range(D) if step + 1 < len(runs[j])]
            for r in releasing:
                store[r].release_below(min((u[r][0] for u in upcoming), default=lengths[r]))
        for r in releasing:
            del store[r]
        if produced is not None:
            store[spec.target] = produced
        for n in norms:
            total = stats[n.index][0]
            for extra in stats[n.index][1:]:
                total.merge(extra)
            module = graph.modules[n.index]
            mean, rstd = total.finish(module.eps)
            for weights in self.weights:
                weights.set_norm(n.index, mean, rstd, module)

    def _keep(self, value: torch.Tensor, offload: bool) -> tuple[torch.Tensor, object]:
        """A produced chunk as kept: as is, or copied to pinned host memory on a side stream."""
        if not offload or value.device.type == "cpu":
            return (value.cpu() if offload else value), None
        stream = self.copy_streams[value.device]
        host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True).contiguous(memory_format=CHANNELS_LAST)
        stream.wait_stream(torch.cuda.current_stream(value.device))
        with torch.cuda.stream(stream):
            host.copy_(value, non_blocking=True)
        value.record_stream(stream)
        ready = torch.cuda.Event()
        ready.record(stream)
        return host, ready

    def _segment(self, shape: PassShape, need: dict[int, Rows], following: dict[int, Rows] | None,
                 carry: dict[int, tuple[int, torch.Tensor]], lengths: list[int], store: dict[int, Stored],
                 weights: DeviceWeights) -> torch.Tensor:
        """Evaluate the members of a pass over the rows `need` gives them; returns the target rows.

        Rows carried from the previous segment are reused; the rows the following segment will need
        again are copied into `carry` before anything may modify them in place.
        """
        graph = self.graph
        remaining: dict[int, int] = {}
        for index in shape.members:
            for i in graph.nodes[index].inputs:
                remaining[i] = remaining.get(i, 0) + 1
        values: dict[int, tuple[torch.Tensor, bool]] = {r: store[r].read(need[r], weights.device) for r in shape.reads}
        for index in shape.members:
            node = graph.nodes[index]
            a, b = need[index]
            start, old = carry.pop(index, (a, None))
            fresh = a if old is None else start + old.shape[2]
            sources = []
            for i in node.inputs:
                src, owned = values[i]
                remaining[i] -= 1
                sources.append((i, src, owned and remaining[i] == 0))
            parts = [] if old is None else [old[:, :, a - start :]]
            if fresh < b:
                parts.append(self._apply(node, fresh, b, sources, need, lengths, weights))
            value = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
            del parts, sources
            if following is not None and index in following and following[index][0] < b:
                carry[index] = (following[index][0], value[:, :, following[index][0] - a :].clone(memory_format=CHANNELS_LAST))
            values[index] = (value, True)
            for i in node.inputs:
                if remaining[i] == 0:
                    values.pop(i, None)
        return values[shape.target][0]

    def _apply(self, node: Node, lo: int, hi: int, sources, need, lengths, weights: DeviceWeights) -> torch.Tensor:
        """Rows [lo, hi) of one node from its inputs' rows."""
        if node.op == CONV:
            return self._conv(node, lo, hi, sources[0], need, lengths, weights)
        if node.op == UPSAMPLE:
            i, src, _ = sources[0]
            a, b = clip(input_rows(node, lo, hi, lengths[i]), lengths[i])
            up = F.interpolate(src[:, :, a - need[i][0] : b - need[i][0]], scale_factor=2.0, mode="trilinear")
            return up[:, :, lo - 2 * a : hi - 2 * a]
        if node.op == NORM:
            i, src, reusable = sources[0]
            x = src[:, :, lo - need[i][0] : hi - need[i][0]]
            mean, scale, bias = weights.norm[node.index]
            y = x.sub_(mean) if reusable else torch.sub(x, mean).contiguous(memory_format=CHANNELS_LAST)
            y.mul_(scale).add_(bias)
            return F.silu(y, inplace=True) if node.silu else y
        if node.op == ADD:
            parts = sorted(((src[:, :, lo - need[i][0] : hi - need[i][0]], reusable) for i, src, reusable in sources),
                           key=lambda p: not p[1])
            if parts[0][1]:
                return parts[0][0].add_(parts[1][0])
            return torch.add(parts[0][0], parts[1][0]).contiguous(memory_format=CHANNELS_LAST)
        raise AssertionError(f"unexpected node {node.op}")

    def _conv(self, node: Node, lo: int, hi: int, source, need, lengths, weights: DeviceWeights) -> torch.Tensor:
        """Output rows [lo, hi) of a convolution; zero rows beyond the volume come from conv padding."""
        i, src, _ = source
        a, b = input_rows(node, lo, hi, lengths[i])
        ca, cb = clip((a, b), lengths[i])
        x = src[:, :, ca - need[i][0] : cb - need[i][0]]
        weight, bias = weights.conv[node.index]
        p0, p1 = node.pad
        before, after = ca - a, b - cb
        if p0 != p1:  # MaisiDownsample's (0, 1) padding: pad explicitly on every axis
            return F.conv3d(F.pad(x, (p0, p1, p0, p1, before, after)), weight, bias, stride=node.stride)
        if not (before or after):
            return F.conv3d(x, weight, bias, stride=node.stride, padding=(0, p0, p0))
        if node.stride == 1:
            # let the convolution pad the axis symmetrically, then drop the rows that used padding
            # where real rows exist: cheaper than copying the input into a zero-padded buffer
            y = F.conv3d(x, weight, bias, padding=(p0, p0, p0))
            return y[:, :, p0 - before : p0 - before + (hi - lo)]
        return F.conv3d(F.pad(x, (0, 0, 0, 0, before, after)), weight, bias, stride=node.stride, padding=(0, p0, p0))
