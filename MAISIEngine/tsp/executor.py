"""Run a plan: passes over segments, exact halos, whole-tensor GroupNorm statistics, bounded memory.

Each pass produces one tensor of the graph segment by segment, in row order. Tensors the plan keeps are
held as row chunks (on the compute device, or in pinned host memory when offloaded) and released chunk
by chunk once the last pass reading them has moved past; every other tensor is recomputed inside the
passes that need it, except for the first rows a plan asks to keep from its first computation, which
the next pass recomputing it takes instead (and releases as it moves past them). Within a pass, the
rows of an intermediate tensor that the next segment needs again (the halo) are carried over instead
of recomputed, so each row is computed once per pass. A tensor some GroupNorm normalises has its
statistics accumulated while its pass writes it, so every later normalisation uses whole-tensor
statistics. On the CPU the tensors a step drops come from a pool of reused buffers (`pool`). Several
devices each stream a contiguous part of the axis side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from MAISIEngine.tsp.graph import CONV, NORM, UPSAMPLE, Graph, Node
from MAISIEngine.tsp.host import CpuThreads, release_host_memory
from MAISIEngine.tsp.pool import BufferPool
from MAISIEngine.tsp.segments import (
    Schedule,
    clip,
    input_rows,
    partial_user_pass,
    pass_shape,
    upsampled_rows,
)
from MAISIEngine.tsp.stats import GroupStats
from MAISIEngine.tsp.storage import Pieces, Stored, gather, slices

CHANNELS_LAST = torch.channels_last_3d
INPUT_INDEX = 0  # the graph input is node 0 and always kept (it is the caller's tensor)


@dataclass(frozen=True)
class PassSpec:
    """One pass of a plan: the tensor it produces, in how many segments, and whether it is kept."""

    target: int
    segments: int
    store: bool
    offload: bool = False  # keep the stored chunks in host memory
    keep_rows: int = 0  # without `store`: keep the first rows, for the next pass that recomputes the tensor


class DeviceWeights:
    """Conv weights permuted to the split-axis order and cast for one device (channels-last on CUDA; on
    the CPU views of the module's own weights when their dtype matches, so they cost no memory)."""

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
                if device.type != "cpu":  # oneDNN runs as fast with the module's own weights: no copy
                    weight = weight.contiguous(memory_format=CHANNELS_LAST)
                self.conv[node.index] = (weight, bias)
        self.norm: dict[int, tuple[torch.Tensor, ...]] = {}

    def set_norm(self, index: int, mean: torch.Tensor, rstd: torch.Tensor, module: torch.nn.GroupNorm) -> None:
        """Keep y = (x - mean) * scale + bias for a norm node, from whole-tensor statistics.

        The parameters stay float32 when computing in half precision, so x - mean is formed in float32
        and rounded once, as MONAI's float16 GroupNorm does.
        """
        weight = module.weight.detach().double().cpu() if module.affine else torch.ones_like(rstd)
        bias = module.bias.detach().double().cpu() if module.affine else torch.zeros_like(rstd)
        dtype = torch.float32 if self.dtype in (torch.float16, torch.bfloat16) else self.dtype
        self.norm[index] = tuple(
            t.to(device=self.device, dtype=dtype).view(1, -1, 1, 1, 1) for t in (mean, rstd * weight, bias)
        )


_IN_PLACE_CONV = getattr(getattr(torch.ops.mkldnn, "_convolution_pointwise_", None), "binary", None) \
    if torch.backends.mkldnn.is_available() else None
_ONEDNN_MIN_MACS = 5e7  # below this, oneDNN's per-shape kernel generation costs more than it saves


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
        self.partial: dict[int, tuple[int, int]] = {}  # tensor -> (pass reusing its first rows, rows)
        targets = [p.target for p in passes]
        for p in passes:
            if p.keep_rows and not p.store:
                user = partial_user_pass(graph, targets, self.shapes, p.target)
                if user is None:
                    raise ValueError(f"no pass reuses the kept rows of node {p.target}")
                self.partial[p.target] = (user, p.keep_rows)
        self.copy_streams = {d: torch.cuda.Stream(d) for d in devices if d.type == "cuda"}
        self.host_compute = any(d.type == "cpu" for d in devices)
        self.cpu_threads = CpuThreads(devices)
        self.pool = BufferPool(enabled=self.host_compute)
        self.in_place_conv = _IN_PLACE_CONV is not None

    def _empty(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A channels-last buffer for a tensor dropped within the pass (reused on the CPU)."""
        if device.type == "cpu":
            return self.pool.empty(shape, self.dtype)
        return torch.empty(shape, dtype=self.dtype, device=device, memory_format=CHANNELS_LAST)

    def _gather(self, pieces: Pieces, a: int, b: int, device: torch.device) -> torch.Tensor:
        """Rows [a, b) as one tensor: a view when one piece holds them, else a copy into a buffer."""
        parts = slices(pieces, a, b)
        if len(parts) == 1:
            return parts[0][1]
        first = parts[0][1]
        out = self._empty((first.shape[0], first.shape[1], b - a, *first.shape[3:]), device)
        return torch.cat([t for _, t in parts], dim=2, out=out)

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
        self.cpu_threads.light()
        try:
            for k, spec in enumerate(self.passes):
                self._run_pass(k, spec, lengths, store, out_view, pool)
                self.pool.clear()
                release_host_memory()
                if progress is not None:
                    progress(k + 1, len(self.passes))
        finally:
            self.cpu_threads.restore()
            if pool is not None:
                pool.shutdown()

    def _run_pass(self, k: int, spec: PassSpec, lengths: list[int], store: dict[int, Stored], out_view: torch.Tensor, pool) -> None:
        graph, shape = self.graph, self.shapes[k]
        n = lengths[spec.target]
        step_rows = -(-n // spec.segments)
        D = len(self.devices)
        bounds = [(j * n) // D for j in range(D + 1)]
        reused = {v: rows for v, (user, rows) in self.partial.items() if user == k}
        kept_below = n if spec.store else spec.keep_rows  # target rows the pass keeps
        runs = [_Run(Schedule(graph, shape, lengths, (bounds[j], bounds[j + 1]), step_rows), j, kept_below, reused)
                for j in range(D) if bounds[j + 1] > bounds[j]]
        releasing = [r for r in shape.reads if self.last_reader[r] == k]
        norms = [nd for nd in graph.nodes if nd.pre == NORM and nd.inputs[0] == spec.target]
        stats = {nd.index: [GroupStats(graph.nodes[spec.target].channels, graph.norms[nd.index].num_groups)
                            for _ in self.devices] for nd in norms}
        produced = Stored() if spec.store or spec.keep_rows else None

        def work(run: _Run) -> tuple[int, int, torch.Tensor] | None:
            with torch.inference_mode():
                emitted = self._step(run, store, lengths)
                if emitted is not None:
                    for nd in norms:
                        stats[nd.index][run.device].add(emitted[2])  # one thread on CPU: sums do not depend on timing
                return emitted

        while any(not run.schedule.finished for run in runs):
            active = [run for run in runs if not run.schedule.finished]
            results = [work(run) for run in active] if pool is None else list(pool.map(work, active))
            while results:
                emitted = results.pop(0)
                if emitted is None:
                    continue
                lo, hi, value = emitted
                del emitted
                if spec.target == graph.output:
                    out_view[:, :, lo:hi].copy_(value)
                elif produced is not None and spec.store:
                    produced.add(lo, hi, *self._keep(value, spec.offload))
                elif produced is not None and lo < spec.keep_rows:  # the first rows only
                    end = min(hi, spec.keep_rows)
                    produced.add(lo, end, value if end == hi else value[:, :, : end - lo].clone(memory_format=CHANNELS_LAST))
                del value  # free the rows before the next step computes
            for r in releasing:
                store[r].release_below(min(run.keep.get(r, lengths[r]) for run in runs))
            for v in reused:  # what the steps took from kept rows lives on in their row buffers
                store[v].release_below(min(run.schedule.done[v] for run in runs))
            if self.host_compute:
                release_host_memory()
        for r in [*releasing, *reused]:
            del store[r]
        if produced is not None:
            store[spec.target] = produced
        for nd in norms:
            total = stats[nd.index][0]
            for extra in stats[nd.index][1:]:
                total.merge(extra)
            module = graph.norms[nd.index]
            mean, rstd = total.finish(module.eps)
            for weights in self.weights:
                weights.set_norm(nd.index, mean, rstd, module)

    def _step(self, run: _Run, store: dict[int, Stored], lengths: list[int]) -> tuple[int, int, torch.Tensor] | None:
        """One step of a device's schedule; returns the target rows it produced, if any."""
        graph, schedule, buffers = self.graph, run.schedule, run.buffers
        weights = self.weights[run.device]
        emitted = None
        for v, lo, hi in schedule.step():
            if v in run.reused and lo < run.reused[v]:  # rows kept by an earlier pass: taken, not computed
                ready = run.reused[v]
                buffers.setdefault(v, []).extend(store[v].pieces((lo, min(hi, ready)), weights.device))
                if hi <= ready:
                    continue
                lo = ready
            new = self._compute(graph.nodes[v], lo, hi, run, store, lengths)
            if v == schedule.shape.target:
                emitted = (lo, hi, new)
            else:
                buffers.setdefault(v, []).append((lo, new))
            del new
        run.keep = schedule.keep_from()
        for v in list(buffers):  # drop the pieces no consumer needs any more
            kept = [(start, tensor) for start, tensor in buffers[v] if start + tensor.shape[2] > run.keep[v]]
            if kept:
                buffers[v] = kept
            else:
                del buffers[v]
        return emitted

    def _compute(self, node: Node, lo: int, hi: int, run: _Run, store: dict[int, Stored], lengths: list[int]) -> torch.Tensor:
        """Rows [lo, hi) of one node, from kept tensors and the rows this pass holds."""
        schedule, weights = run.schedule, self.weights[run.device]
        sources = []
        for i in node.inputs:
            if i in schedule.shape.reads:
                rows = clip(input_rows(node, lo, hi, lengths[i]), lengths[i])
                sources.append((i, store[i].pieces(rows, weights.device)))
            else:
                sources.append((i, run.buffers[i]))
        fresh = node.index == schedule.shape.target and lo < run.kept_below  # kept rows get memory of their own
        if node.op == CONV:
            return self._conv(node, lo, hi, sources[0], lengths, weights, fresh)
        return self.cpu_threads.heavy(("add", node.index, hi - lo),
                                      partial(self._add, node, lo, hi, sources, schedule, fresh))

    def _keep(self, value: torch.Tensor, offload: bool) -> tuple[torch.Tensor, object]:
        """A produced chunk as kept: as is, or copied to pinned host memory on a side stream."""
        if not offload or value.device.type == "cpu":
            return (value.cpu() if offload else value), None
        stream = self.copy_streams[value.device]
        host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True, memory_format=CHANNELS_LAST)
        stream.wait_stream(torch.cuda.current_stream(value.device))
        with torch.cuda.stream(stream):
            host.copy_(value, non_blocking=True)
        value.record_stream(stream)
        ready = torch.cuda.Event()
        ready.record(stream)
        return host, ready

    def _add(self, node: Node, lo: int, hi: int, sources, schedule: Schedule, fresh: bool) -> torch.Tensor:
        """Rows [lo, hi) of a residual addition, in place in the first summand when nothing else needs it
        (unless the rows are kept: they then get an exact buffer of their own, not a reused one)."""
        (i, first), (_, second) = sources
        if not fresh and len(first) == 1 and first[0][0] == lo and first[0][1].shape[2] == hi - lo \
                and len(schedule.consumers[i]) == 1:
            out = first[0][1]
        else:
            source = gather(first, lo, hi)
            out = (torch.empty(source.shape, dtype=source.dtype, device=source.device, memory_format=CHANNELS_LAST)
                   if fresh else self._empty(tuple(source.shape), source.device)).copy_(source)
        for start, tensor in slices(second, lo, hi):
            out[:, :, start - lo : start - lo + tensor.shape[2]].add_(tensor)
        return out

    def _conv_input(self, node: Node, pieces: Pieces, a: int, b: int, n_source: int, weights: DeviceWeights) -> torch.Tensor:
        """Rows [a, b) of what the convolution reads: its source, normalised (+SiLU) or upsampled x2."""
        if node.pre == UPSAMPLE:
            la, lb = upsampled_rows((a, b), n_source)
            source = self._gather(pieces, la, lb, weights.device)
            if node.upsample == "zeros":  # a transposed convolution's input: values at even positions
                up = torch.zeros((*source.shape[:2], *(2 * s for s in source.shape[2:])), dtype=source.dtype,
                                 device=source.device)
                up[:, :, ::2, ::2, ::2] = source
            elif source.device.type != "cpu":
                up = F.interpolate(source, scale_factor=2.0, mode="trilinear")
            else:  # the same kernel F.interpolate calls, writing into a reused buffer
                size = [2 * s for s in source.shape[2:]]
                up = torch.ops.aten.upsample_trilinear3d.out(source, size, False, 2.0, 2.0, 2.0,
                                                              out=self._empty((*source.shape[:2], *size), source.device))
            return up[:, :, a - 2 * la : b - 2 * la]
        if node.pre == NORM:
            mean, scale, bias = weights.norm[node.index]
            parts = slices(pieces, a, b)
            out = self._empty((1, parts[0][1].shape[1], b - a, *parts[0][1].shape[3:]), weights.device)
            for start, tensor in parts:
                torch.sub(tensor, mean, out=out[:, :, start - a : start - a + tensor.shape[2]])
            torch.addcmul(bias, out, scale, out=out)  # (x - mean) * scale + bias, one pass over the rows
            return F.silu(out, inplace=True) if node.silu else out
        return self._gather(pieces, a, b, weights.device)

    def _conv3d(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                padding: tuple[int, int, int], fresh: bool = False) -> torch.Tensor:
        """A 3D convolution; on CPU large thin slabs go straight to oneDNN (PyTorch's heuristic sends
        them to a much slower kernel)."""
        if x.device.type != "cpu":
            return F.conv3d(x, weight, bias, stride=stride, padding=padding)
        if x.shape[1] == 1:  # one input channel: oneDNN answers in plain layout; keep every tensor channels-last
            return F.conv3d(x, weight, bias, stride=stride, padding=padding).contiguous(memory_format=CHANNELS_LAST)
        if x.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available() \
                and x[0, 0].numel() * weight.numel() / stride**3 >= _ONEDNN_MIN_MACS:
            def work() -> torch.Tensor:
                return self._onednn_conv(x, weight, bias, stride, padding, fresh)
        else:
            def work() -> torch.Tensor:
                return F.conv3d(x, weight, bias, stride=stride, padding=padding)
        return self.cpu_threads.heavy((tuple(x.shape), tuple(weight.shape), stride, padding), work)

    def _onednn_conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                     padding: tuple[int, int, int], fresh: bool) -> torch.Tensor:
        """oneDNN's convolution, into a reused buffer unless `fresh`: its fused "add" form, onto zeros,
        is the same convolution written in place (bit-identical); the plain form allocates its output."""
        k = weight.shape[2]
        shape = (1, weight.shape[0], *((n + 2 * p - k) // stride + 1 for n, p in zip(x.shape[2:], padding)))
        if self.in_place_conv and not fresh:
            out = self._empty(shape, x.device).zero_()
            try:
                return _IN_PLACE_CONV(out, x, weight, bias, list(padding), [stride] * 3, [1, 1, 1], 1,
                                      "add", 1.0, None, [], None)
            except RuntimeError:
                self.in_place_conv = False  # this build's oneDNN does not take the fused form: stop trying
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, list(padding), [stride] * 3, [1, 1, 1], 1)

    def _conv(self, node: Node, lo: int, hi: int, source, lengths, weights: DeviceWeights, fresh: bool) -> torch.Tensor:
        """Output rows [lo, hi) of a convolution; zero rows beyond the volume come from conv padding."""
        i, pieces = source
        n_in = lengths[i] * (2 if node.pre == UPSAMPLE else 1)  # rows the convolution itself sees
        a, b = lo * node.stride - node.pad[0], (hi - 1) * node.stride - node.pad[0] + node.kernel
        ca, cb = clip((a, b), n_in)
        x = self.cpu_threads.heavy(("input", node.index, cb - ca), partial(self._conv_input, node, pieces, ca, cb, lengths[i], weights))
        weight, bias = weights.conv[node.index]
        p0, p1 = node.pad
        before, after = ca - a, b - cb
        if p0 != p1:  # MaisiDownsample's (0, 1) padding: pad explicitly on every axis
            return self._conv3d(F.pad(x, (p0, p1, p0, p1, before, after)), weight, bias, node.stride, (0, 0, 0), fresh)
        if not (before or after):
            return self._conv3d(x, weight, bias, node.stride, (0, p0, p0), fresh)
        if node.stride == 1:
            # let the convolution pad the axis symmetrically, then drop the rows that used padding
            # where real rows exist: cheaper than copying the input into a zero-padded buffer
            y = self._conv3d(x, weight, bias, 1, (p0, p0, p0), fresh)
            return y[:, :, p0 - before : p0 - before + (hi - lo)]
        return self._conv3d(F.pad(x, (0, 0, 0, 0, before, after)), weight, bias, node.stride, (0, p0, p0), fresh)


class _Run:
    """One device's part of a pass: its schedule, the rows each node still holds, what reads must keep."""

    def __init__(self, schedule: Schedule, device: int, kept_below: int, reused: dict[int, int]) -> None:
        self.schedule = schedule
        self.device = device
        self.kept_below = kept_below  # the pass keeps the target rows below this one
        self.reused = reused  # member -> rows below this one were kept by an earlier pass
        self.buffers: dict[int, Pieces] = {}
        self.keep: dict[int, int] = {}
