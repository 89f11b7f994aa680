"""Run a plan: passes over segments, exact halos, whole-tensor GroupNorm statistics, bounded memory.

Each pass produces one tensor of the graph segment by segment. Tensors the plan stores are kept as row
chunks (on the compute device, or in pinned host memory when offloaded) and released chunk by chunk
once the last pass reading them has moved past; every other tensor is recomputed inside the passes
that need it, with exactly the rows its consumers read. A tensor some GroupNorm normalises has its
statistics accumulated while its pass writes it, so every later normalisation uses whole-tensor
statistics. Several devices process the segments of a pass side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from MAISIEngine.tsp.graph import ADD, CONV, NORM, UPSAMPLE, Graph, Node
from MAISIEngine.tsp.segments import PassShape, Rows, clip, input_rows, pass_shape, regions, split_rows
from MAISIEngine.tsp.stats import GroupStats

CHANNELS_LAST = torch.channels_last_3d
INPUT_INDEX = 0  # the graph input is node 0 and always stored (it is the caller's tensor)


@dataclass(frozen=True)
class PassSpec:
    """One pass of a plan: the tensor it produces, in how many segments, and whether it is kept."""

    target: int
    segments: int
    store: bool
    offload: bool = False  # keep the stored chunks in host memory


class Stored:
    """A full-size tensor held as consecutive row chunks, released from the front as passes move on."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, int, torch.Tensor, object]] = []

    def add(self, lo: int, hi: int, value: torch.Tensor, ready: object = None) -> None:
        self.chunks.append((lo, hi, value, ready))

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
        moved = [p.to(device, non_blocking=True) for p in pieces]
        return torch.cat(moved, dim=2), True

    def release_below(self, row: int) -> None:
        self.chunks = [c for c in self.chunks if c[1] > row]


class DeviceWeights:
    """Conv weights permuted to the split-axis order, cast and laid out channels-last on one device."""

    def __init__(self, graph: Graph, device: torch.device, dtype: torch.dtype, perm: tuple[int, int, int]) -> None:
        self.device = device
        self.dtype = dtype
        self.conv: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        dims = (0, 1) + tuple(2 + p for p in perm)
        for node in graph.nodes:
            if node.op != CONV:
                continue
            conv = graph.modules[node.index]
            weight = conv.weight.detach().permute(dims).to(device=device, dtype=dtype)
            weight = weight.contiguous(memory_format=CHANNELS_LAST)
            bias = None if conv.bias is None else conv.bias.detach().to(device=device, dtype=dtype)
            self.conv[node.index] = (weight, bias)
        self.norm: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def set_norm(self, index: int, mean: torch.Tensor, rstd: torch.Tensor, module: torch.nn.GroupNorm) -> None:
        """Store y = (x - mean) * scale + bias for a norm node, from whole-tensor statistics."""
        shape = (1, -1, 1, 1, 1)
        weight = module.weight.detach().double().cpu() if module.affine else torch.ones_like(rstd)
        bias = module.bias.detach().double().cpu() if module.affine else torch.zeros_like(rstd)
        self.norm[index] = tuple(  # type: ignore[assignment]
            t.to(device=self.device, dtype=self.dtype).view(shape) for t in (mean, rstd * weight, bias)
        )


class Executor:
    """Runs the passes of a plan for one input of batch size 1."""

    def __init__(
        self,
        graph: Graph,
        passes: list[PassSpec],
        devices: list[torch.device],
        dtype: torch.dtype,
        axis: int,
    ) -> None:
        self.graph = graph
        self.passes = passes
        self.devices = devices
        self.dtype = dtype
        self.perm = (axis,) + tuple(a for a in range(3) if a != axis)
        self.weights = [DeviceWeights(graph, d, dtype, self.perm) for d in devices]  # type: ignore[arg-type]
        self.stored_nodes = {INPUT_INDEX} | {p.target for p in passes if p.store}
        self.shapes = [pass_shape(graph, p.target, self.stored_nodes) for p in passes]
        self.last_reader: dict[int, int] = {}
        for k, shape in enumerate(self.shapes):
            for r in shape.reads:
                self.last_reader[r] = k
        self.copy_streams = {d: torch.cuda.Stream(d) for d in devices if d.type == "cuda"}

    def permute_in(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute((0, 1) + tuple(2 + p for p in self.perm))

    def run(self, x: torch.Tensor, out: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> None:
        """Compute the graph on x (1, C, X, Y, Z) into the preallocated out (1, C', X', Y', Z')."""
        first = self.devices[0]
        staged = self.permute_in(x).to(device=first, dtype=self.dtype).contiguous(memory_format=CHANNELS_LAST)
        store: dict[int, Stored] = {INPUT_INDEX: Stored()}
        store[INPUT_INDEX].add(0, staged.shape[2], staged)
        del staged
        out_view = self.permute_in(out)
        lengths = [s[0] for s in self.graph.sizes(tuple(x.shape[2 + p] for p in self.perm))]  # type: ignore[arg-type]
        pool = ThreadPoolExecutor(max_workers=len(self.devices)) if len(self.devices) > 1 else None
        try:
            for k, spec in enumerate(self.passes):
                self._run_pass(k, spec, lengths, store, out_view, pool)
                if progress is not None:
                    progress(k + 1, len(self.passes))
        finally:
            if pool is not None:
                pool.shutdown()

    def _run_pass(self, k: int, spec: PassSpec, lengths: list[int], store: dict[int, Stored], out_view: torch.Tensor, pool) -> None:
        graph, shape = self.graph, self.shapes[k]
        segments = split_rows(lengths[spec.target], spec.segments)
        needs = [regions(graph, shape, lengths, rows) for rows in segments]
        releasing = [r for r in shape.reads if self.last_reader[r] == k]
        norms = [n for n in graph.nodes if n.op == NORM and n.inputs[0] == spec.target]
        stats = {n.index: [GroupStats(n.channels, graph.modules[n.index].num_groups) for _ in self.devices] for n in norms}
        produced = Stored() if spec.store else None
        is_output = spec.target == graph.output
        for first in range(0, len(segments), len(self.devices)):
            batch = list(range(first, min(first + len(self.devices), len(segments))))

            def work(j: int, s: int) -> torch.Tensor:
                with torch.inference_mode():
                    value = self._segment(shape, needs[s], lengths, store, self.weights[j])
                    for n in norms:
                        stats[n.index][j].add(value)
                    return value

            if pool is None:
                values = [work(0, s) for s in batch]
            else:
                values = list(pool.map(work, range(len(batch)), batch))
            for s in batch:
                lo, hi = segments[s]
                value = values.pop(0)
                if is_output:
                    out_view[:, :, lo:hi].copy_(value)
                elif produced is not None:
                    produced.add(lo, hi, *self._keep(value, spec.offload))
                del value  # free the segment before the next one is computed
            following = batch[-1] + 1
            for r in releasing:
                store[r].release_below(needs[following][r][0] if following < len(segments) else lengths[r])
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
        """A produced chunk as stored: as is, or copied to pinned host memory on a side stream."""
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

    def _segment(self, shape: PassShape, need: dict[int, Rows], lengths: list[int], store: dict[int, Stored], weights: DeviceWeights) -> torch.Tensor:
        """Evaluate the members of a pass over the rows `need` gives them; returns the target rows."""
        graph = self.graph
        remaining: dict[int, int] = {}
        for index in shape.members:
            for i in graph.nodes[index].inputs:
                remaining[i] = remaining.get(i, 0) + 1
        values: dict[int, tuple[torch.Tensor, bool]] = {r: store[r].read(need[r], weights.device) for r in shape.reads}
        for index in shape.members:
            node = graph.nodes[index]
            lo, hi = need[index]
            sources = []
            for i in node.inputs:
                src, owned = values[i]
                remaining[i] -= 1
                sources.append((i, src, owned and remaining[i] == 0))
            values[index] = (self._apply(node, lo, hi, sources, need, lengths, weights), True)
            for i in node.inputs:
                if remaining[i] == 0:
                    values.pop(i, None)
        return values[shape.target][0]

    def _apply(self, node: Node, lo: int, hi: int, sources, need, lengths, weights: DeviceWeights) -> torch.Tensor:
        if node.op == CONV:
            i, src, _ = sources[0]
            a, b = input_rows(node, lo, hi, lengths[i])
            ca, cb = clip((a, b), lengths[i])
            x = src[:, :, ca - need[i][0] : cb - need[i][0]]
            before, after = ca - a, b - cb
            weight, bias = weights.conv[node.index]
            p0, p1 = node.pad
            if p0 == p1:
                if before or after:
                    x = F.pad(x, (0, 0, 0, 0, before, after))
                padding = (0, p0, p0)
            else:
                x = F.pad(x, (p0, p1, p0, p1, before, after))
                padding = (0, 0, 0)
            return F.conv3d(x, weight, bias, stride=node.stride, padding=padding)
        if node.op == UPSAMPLE:
            i, src, _ = sources[0]
            a, b = clip(input_rows(node, lo, hi, lengths[i]), lengths[i])
            x = src[:, :, a - need[i][0] : b - need[i][0]]
            up = F.interpolate(x, scale_factor=2.0, mode="trilinear")
            return up[:, :, lo - 2 * a : hi - 2 * a]
        if node.op == NORM:
            i, src, reusable = sources[0]
            x = src[:, :, lo - need[i][0] : hi - need[i][0]]
            y = x if reusable else x.clone(memory_format=CHANNELS_LAST)
            mean, scale, bias = weights.norm[node.index]
            y.sub_(mean).mul_(scale).add_(bias)
            return F.silu(y, inplace=True) if node.silu else y
        if node.op == ADD:
            parts = [(src[:, :, lo - need[i][0] : hi - need[i][0]], reusable) for i, src, reusable in sources]
            parts.sort(key=lambda p: not p[1])
            target = parts[0][0] if parts[0][1] else parts[0][0].clone(memory_format=CHANNELS_LAST)
            for other, _ in parts[1:]:
                target.add_(other)
            return target
        raise AssertionError(f"unexpected node {node.op}")

