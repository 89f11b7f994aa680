"""Memory planner: which tensors to keep, where, and how many segments each pass uses.

A plan is a list of passes (see `executor`), one per tensor that is kept or whose GroupNorm statistics
are needed. Keeping a tensor costs memory for as long as later passes read it; not keeping it costs
time, because every later pass that needs it recomputes it. The planner starts from keeping nothing
but the input (first keeping whatever lowers the peak most, if even that does not fit) and then
greedily keeps the tensor that saves the most predicted time while the predicted peak stays within the
budget; on CUDA a kept tensor may live in pinned host memory instead (it then costs transfers, not
device memory). The memory left over then keeps the first rows of tensors that are computed twice
(once for their statistics, once where they are used), so the second time computes only the rest.
A plan may also evaluate a 1x1 shortcut convolution fused with the convolution before it, when that
one's large output is not kept (`graph.fuse_shortcuts`); the planner tries that where it applies and
keeps the faster plan. Each pass uses the thickest segments that fit. The memory model replays the
pass schedule and counts what the executor holds (kept chunks, the rows each step computes and keeps,
the output, the weights); time is predicted from multiply-accumulates, element-wise work and transfers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from MAISIEngine.errors import MaisiError
from MAISIEngine.tsp.executor import INPUT_INDEX, PassSpec
from MAISIEngine.tsp.graph import CONV, UPSAMPLE, Graph, fusable_shortcuts, fuse_shortcuts
from MAISIEngine.tsp.segments import (
    PassShape,
    Rows,
    Schedule,
    clip,
    partial_user_pass,
    pass_shape,
    regions,
)

GiB = 1 << 30
AXIS_NAMES = ("x", "y", "z")
_STATS_BUFFER = 1 << 24  # GroupStats squares at most 4 Mi float32 values at a time
_CPU_FRACTION = 0.5  # default CPU budget: this share of the available memory
_CUDA_FRACTION = 0.9  # default CUDA budget: this share of the free device memory
_KEPT_CHUNKS = 16  # a kept tensor is written in at least this many chunks
_CUDA_RESERVE = 1 << 30  # left free on a CUDA device for cuDNN workspaces and allocator rounding
_PIN_BYTES_PER_S = 8e9  # pinning host memory for offloaded tensors


@dataclass(frozen=True)
class DeviceModel:
    """Throughputs the planner assumes (per device) to compare plans."""

    mac_per_s: float
    elements_per_s: float
    link_bytes_per_s: float  # host <-> device
    segment_overhead_s: float


def device_model(device: torch.device, dtype: torch.dtype) -> DeviceModel:
    if device.type == "cuda":
        half = dtype in (torch.float16, torch.bfloat16)
        return DeviceModel(1.2e14 if half else 2.5e13, 2e11, 2e10, 2e-3)
    threads = max(1, torch.get_num_threads())
    return DeviceModel(1.1e11 * threads, 1e9 * threads, 1e10, 5e-3)  # oneDNN here: ~115 GMAC/s per thread


@dataclass(frozen=True)
class Plan:
    """How `decode`/`encode` will run one volume; made by `plan_decode` / `plan_encode`."""

    kind: str  # "decode" or "encode"
    input_shape: tuple[int, int, int, int]  # (channels, x, y, z) of one batch item
    output_shape: tuple[int, int, int, int]
    axis: int  # spatial axis the segments split (0 = x)
    devices: tuple[str, ...]
    dtype: str
    passes: tuple[PassSpec, ...]
    budget_bytes: int
    predicted_peak_bytes: int  # per device
    predicted_host_bytes: int  # offloaded tensors in host memory
    predicted_seconds: float
    node_names: tuple[str, ...] = field(repr=False, default=())
    fused: tuple[int, ...] = ()  # shortcut convolutions evaluated fused with their source (graph.fuse_shortcuts)

    @property
    def stored(self) -> list[int]:
        return [p.target for p in self.passes if p.store]

    @property
    def offloaded(self) -> bool:
        return any(p.offload for p in self.passes)

    @property
    def max_segments(self) -> int:
        return max(p.segments for p in self.passes)


@dataclass
class _Outcome:
    seconds: float
    peak: int
    host_peak: int
    passes: list[PassSpec]
    pass_peaks: list[int]


class _CostModel:
    """Predicts memory and time of passes for one graph, input size, dtype and device count."""

    def __init__(self, graph: Graph, spatial: tuple[int, int, int], itemsize: int, devices: int, model: DeviceModel,
                 input_bytes: int, output_bytes: int, shared: dict | None = None) -> None:
        self.graph = graph
        sizes = graph.sizes(spatial)
        self.lengths = [s[0] for s in sizes]
        self.row_elements = [n.channels * s[1] * s[2] for n, s in zip(graph.nodes, sizes)]
        self.itemsize = itemsize
        self.full_bytes = [r * l * itemsize for r, l in zip(self.row_elements, self.lengths)]
        self.devices = devices
        self.model = model
        self.input_bytes = input_bytes
        self.output_bytes = output_bytes
        self.weight_bytes = sum(module.weight.numel() * itemsize for module in graph.modules.values())
        self.normalised = graph.normalised()
        self.fused = tuple(n.index for n in graph.nodes if n.fused)
        # working sets and times by the nodes a pass evaluates: graphs that differ only in fused
        # shortcuts (planned one after another) share every pass that does not touch them
        self._ws_cache: dict[tuple, int] = {} if shared is None else shared.setdefault("working_set", {})
        self._time_cache: dict[tuple, float] = {} if shared is None else shared.setdefault("seconds", {})

    def _nodes_of(self, shape: PassShape) -> tuple:
        """A cache key: the pass and which of its members are fused shortcuts."""
        return (shape, tuple(m for m in self.fused if m in shape.members))

    def working_set(self, shape: PassShape, rows: int) -> int:
        """Bytes one interior segment of `rows` target rows holds at most (carried halo rows included)."""
        key = (self._nodes_of(shape), rows)
        if key not in self._ws_cache:
            self._ws_cache[key] = self._working_set(shape, rows)
        return self._ws_cache[key]

    def _working_set(self, shape: PassShape, rows: int) -> int:
        """Replay the pass schedule's first steps, counting the bytes the executor holds at each point."""
        graph, lengths, row_el, item = self.graph, self.lengths, self.row_elements, self.itemsize
        n = lengths[shape.target]
        schedule = Schedule(graph, shape, lengths, (0, n), rows)
        held: dict[int, list[Rows]] = {}  # pieces each member buffers
        peak = 0
        emitted_steps = 0
        while not schedule.finished and emitted_steps < 4:
            live = sum((b - a) * row_el[v] for v in held for a, b in held[v]) * item
            for v, lo, hi in schedule.step():
                node = graph.nodes[v]
                new = (hi - lo) * row_el[v] * item
                extra = 0
                if node.op == CONV:
                    i = node.inputs[0]
                    scale = 2 if node.pre == UPSAMPLE else 1
                    a, b = clip((lo * node.stride - node.pad[0], (hi - 1) * node.stride - node.pad[0] + node.kernel), scale * lengths[i])
                    extra = (b - a) * row_el[i] * scale * scale * item  # the rows the conv reads, prepared
                    if node.pre == UPSAMPLE:
                        extra += (b - a + 4) * row_el[i] * 4 * item  # interpolated slab (4x the plane), a little wider
                    if node.pad[0] != node.pad[1]:
                        extra *= 2  # zero-padded copy
                    if graph.nodes[i].channels == 1:
                        extra += new  # the output arrives in plain layout and is copied to channels-last
                else:
                    extra = new  # a residual sum not done in place
                peak = max(peak, live + extra + new)
                live += new
                if v == shape.target:
                    emitted_steps += 1
                else:
                    held.setdefault(v, []).append((lo, hi))
            keep = schedule.keep_from()
            for v in list(held):
                held[v] = [(a, b) for a, b in held[v] if b > keep[v]]
        if shape.target in self.normalised:
            peak += min(_STATS_BUFFER, rows * row_el[shape.target] * 4)
        return peak

    def pass_seconds(self, shape: PassShape, segments: int, offloaded: frozenset[int]) -> float:
        """Predicted time of a pass: every row of every member once, plus reads, transfers, overheads."""
        key = self._nodes_of(shape)
        if key not in self._time_cache:
            graph, lengths, row_el = self.graph, self.lengths, self.row_elements
            need = regions(graph, shape, lengths, (0, lengths[shape.target]))
            macs = 0.0
            elements = float(sum((need[r][1] - need[r][0]) * row_el[r] for r in shape.reads))
            for index in shape.members:
                m, e = self._work(index, need[index][1] - need[index][0])
                macs, elements = macs + m, elements + e
            self._time_cache[key] = macs / self.model.mac_per_s + elements / self.model.elements_per_s
        seconds = self._time_cache[key]
        link = sum(self.full_bytes[r] for r in shape.reads if r in offloaded)
        pinning = 0.0
        if shape.target in offloaded:
            link += self.full_bytes[shape.target]
            pinning = self.full_bytes[shape.target] / _PIN_BYTES_PER_S
        overhead = segments * len(shape.members) * self.model.segment_overhead_s
        return seconds / self.devices + link / self.model.link_bytes_per_s + pinning + overhead / self.devices

    def rows_within(self, shape: PassShape, left: float, row_bytes: int) -> int:
        """The most target rows per segment whose working set (plus its kept chunk) fits in `left` bytes."""
        n = self.lengths[shape.target]
        if self.working_set(shape, 1) + row_bytes > left:
            return 0
        lo, hi = 1, n
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.working_set(shape, mid) + mid * row_bytes <= left:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _work(self, index: int, rows: int) -> tuple[float, float]:
        """Multiply-accumulates and element-wise operations for `rows` rows of one node."""
        node = self.graph.nodes[index]
        out = rows * self.row_elements[index]
        if node.op != CONV:
            return 0.0, float(out)
        src = self.graph.nodes[node.inputs[0]].channels
        return float(out * src * node.kernel**3), float(out * src // node.channels * (8 if node.pre == UPSAMPLE else 2 if node.pre else 0))

    def node_seconds(self, index: int) -> float:
        """Predicted time to compute one whole tensor of the graph once."""
        macs, elements = self._work(index, self.lengths[index])
        return macs / self.model.mac_per_s + elements / self.model.elements_per_s

    def simulate(self, keep: dict[int, bool], budget: float, force_rows: int | None = None,
                 partial: dict[int, int] | None = None) -> _Outcome | None:
        """Predict a plan keeping `keep` (node -> offloaded) and the first `partial[v]` rows of the
        statistics-only tensors v (reused by the next pass that recomputes v); None if some pass cannot
        fit the budget or a partial tensor cannot be reused."""
        partial = partial or {}
        graph = self.graph
        stored = {INPUT_INDEX} | set(keep)
        offloaded = frozenset(i for i, off in keep.items() if off)
        targets = [n.index for n in graph.nodes if n.index != INPUT_INDEX and (
            n.index in keep or n.index in self.normalised or n.index == graph.output)]
        shapes = [pass_shape(graph, t, stored) for t in targets]
        last_reader: dict[int, int] = {}
        for k, shape in enumerate(shapes):
            for r in shape.reads:
                last_reader[r] = k
        partial_user: dict[int, int] = {}  # pass that reuses (and releases) a partial tensor
        for v, rows_kept in partial.items():
            user = partial_user_pass(graph, targets, shapes, v)
            if v in keep or v not in targets or user is None or not 0 < rows_kept <= self.lengths[v]:
                return None
            partial_user[v] = user
        partial_bytes = {v: rows_kept * self.row_elements[v] * self.itemsize for v, rows_kept in partial.items()}
        D = self.devices
        resident = self.input_bytes + self.output_bytes  # kept bytes on the devices, all together
        host = peak = host_peak = 0
        seconds = 0.0
        passes: list[PassSpec] = []
        pass_peaks: list[int] = []
        chunk = {INPUT_INDEX: self.input_bytes}  # a kept tensor is released chunk by chunk
        for k, (target, shape) in enumerate(zip(targets, shapes)):
            released = [r for r in shape.reads if last_reader[r] == k]
            reused = [v for v, user in partial_user.items() if user == k]
            lag = sum(chunk[r] for r in released if r not in offloaded) + sum(chunk[v] for v in reused)
            freed_dev = sum(self.input_bytes if r == INPUT_INDEX else self.full_bytes[r] for r in released if r not in offloaded)
            freed_dev += sum(partial_bytes[v] for v in reused)
            freed_host = sum(self.full_bytes[r] for r in released if r in offloaded)
            dev_grow = self.full_bytes[target] if target in keep and target not in offloaded else partial_bytes.get(target, 0)
            host_grow = self.full_bytes[target] if target in offloaded else 0
            # inputs are released while the output grows (one device streams in order; several release at the end)
            kept_peak = max(resident, resident - freed_dev + dev_grow + lag) if D == 1 else resident + dev_grow
            kept = math.ceil(kept_peak / D)
            row_bytes = self.row_elements[target] * self.itemsize if dev_grow else 0
            n = self.lengths[target]
            left = budget - self.weight_bytes - kept
            rows = force_rows or self.rows_within(shape, left, row_bytes)
            while True:
                if rows <= 0:
                    return None
                segments = math.ceil(n / rows)
                if target in keep:  # small chunks, so that later passes can release them early
                    segments = max(segments, min(n, _KEPT_CHUNKS))
                if D > 1:
                    segments = min(n, max(D, math.ceil(segments / D) * D))
                balanced = math.ceil(n / segments)
                if force_rows or self.working_set(shape, balanced) + balanced * row_bytes <= left:
                    break
                rows -= 1
            rows = balanced
            chunk[target] = math.ceil(self.full_bytes[target] / segments)
            pass_peaks.append(self.weight_bytes + kept + self.working_set(shape, rows) + rows * row_bytes)
            peak = max(peak, pass_peaks[-1])
            host_peak = max(host_peak, host + max(0, host_grow - freed_host))
            seconds += self.pass_seconds(shape, segments, offloaded)
            seconds -= sum(partial[v] / self.lengths[v] * self.node_seconds(v) for v in reused)
            resident += dev_grow - freed_dev
            host += host_grow - freed_host
            passes.append(PassSpec(target, segments, target in keep, target in offloaded, partial.get(target, 0)))
        return _Outcome(seconds, peak, host_peak, passes, pass_peaks)


def available_memory(device: torch.device) -> int:
    """Free memory TSP may use on a device by default (CPU: half of MemAvailable; CUDA: 90% of free)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((free + cached) * _CUDA_FRACTION)
    return int(_host_available() * _CPU_FRACTION)


def _host_available() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * GiB


def resolve_devices(devices) -> list[torch.device]:
    """Check device names ("cpu", "cuda:1", a list, or "cuda:0,cuda:1"); MaisiError for one that does not exist."""
    if isinstance(devices, torch.device):
        devices = [devices]
    elif isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    if not devices:
        raise MaisiError("no device given", "use e.g. cpu or cuda:0")
    out: list[torch.device] = []
    for name in devices:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise MaisiError(f"unknown device '{name}'", "use cpu, cuda or cuda:N") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise MaisiError(f"device '{name}' is not available: this machine has no usable CUDA GPU", "use cpu")
            index = torch.cuda.current_device() if device.index is None else device.index
            if index >= torch.cuda.device_count():
                raise MaisiError(
                    f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)",
                    f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}",
                )
            device = torch.device("cuda", index)
        elif device.type != "cpu":
            raise MaisiError(f"device '{name}' is not supported by tensor splitting", "use cpu or cuda:N")
        out.append(device)
    return out


_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def resolve_dtype(dtype, devices: list[torch.device]) -> torch.dtype:
    """Compute dtype: float32 on CPU, float16 on CUDA (the reference's numerics) unless given."""
    if dtype is None:
        return torch.float32 if all(d.type == "cpu" for d in devices) else torch.float16
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    key = str(dtype).replace("torch.", "")
    if key not in _DTYPES:
        raise MaisiError(f"unsupported dtype '{dtype}'", "use float32, float16 or bfloat16")
    return _DTYPES[key]


class _TooSmall(Exception):
    def __init__(self, need: int) -> None:
        self.need = need


def _search(cost: _CostModel, budget: float, options: tuple[bool, ...], host_budget: float) -> _Outcome:
    """Greedy choice of kept tensors (and their place: device or host memory).

    First, while no plan fits, keep the tensor that lowers the smallest possible peak the most (raise
    _TooSmall with that peak when nothing lowers it further). Then keep, one at a time, the tensor that
    saves the most predicted time while the plan still fits.
    """
    keep: dict[int, bool] = {}
    candidates = [n.index for n in cost.graph.nodes if n.index not in (INPUT_INDEX, cost.graph.output)]

    def trials(budget_: float, force_rows: int | None = None):
        for c in candidates:
            if c not in keep:
                for off in options:
                    trial = cost.simulate({**keep, c: off}, budget_, force_rows)
                    if trial is not None and trial.host_peak <= host_budget:
                        yield c, off, trial

    best = cost.simulate(keep, budget)
    while best is None:
        floor = cost.simulate(keep, float("inf"), force_rows=1)
        assert floor is not None
        step = min(trials(float("inf"), 1), key=lambda t: t[2].peak, default=None)
        if step is None or step[2].peak >= floor.peak:
            raise _TooSmall(floor.peak)
        keep[step[0]] = step[1]
        best = cost.simulate(keep, budget)
    while True:
        step = min(trials(budget), key=lambda t: t[2].seconds, default=None)
        if step is None or step[2].seconds >= best.seconds * 0.999:
            return _keep_partial(cost, keep, budget, best, host_budget)
        keep[step[0]] = step[1]
        best = step[2]


def _keep_partial(cost: _CostModel, keep: dict[int, bool], budget: float, best: _Outcome, host_budget: float) -> _Outcome:
    """Fill the memory a plan leaves: keep as many first rows as fit of the tensors computed twice.

    A tensor too large to keep is computed once for its statistics and again where it is used; its
    first rows, kept from the first time, are released as the second pass moves past them. Tensors
    are taken in order of the time they save; for each, the most rows that still fit, or somewhat fewer
    when the thicker segments that leaves are predicted faster.
    """
    partial: dict[int, int] = {}
    candidates = [p.target for p in best.passes if not p.store and p.target != cost.graph.output]
    while True:
        choice = None
        for v in candidates:
            if v in partial:
                continue
            lo, hi, found = 0, cost.lengths[v], None
            while lo < hi:  # the largest row count that fits (memory grows with it)
                mid = (lo + hi + 1) // 2
                trial = cost.simulate(keep, budget, partial={**partial, v: mid})
                if trial is not None and trial.host_peak <= host_budget:
                    lo, found = mid, trial
                else:
                    hi = mid - 1
            if found is None:
                continue
            best_rows = lo
            for share in (0.85, 0.7, 0.55, 0.4):  # fewer rows leave thicker segments: sometimes faster
                trial = cost.simulate(keep, budget, partial={**partial, v: max(1, int(lo * share))})
                if trial is not None and trial.host_peak <= host_budget and trial.seconds < found.seconds:
                    best_rows, found = max(1, int(lo * share)), trial
            if found.seconds < best.seconds * 0.995 and (choice is None or found.seconds < choice[2].seconds):
                choice = (v, best_rows, found)
        if choice is None:
            return best
        partial[choice[0]] = choice[1]
        best = choice[2]


def make_plan(
    kind: str,
    graph: Graph,
    input_shape: tuple[int, int, int, int],
    devices,
    max_memory_bytes: int | None = None,
    dtype=None,
    output_on_device: bool = True,
    output_itemsize: int = 4,
    axis: int | None = None,
    allow_offload: bool = True,
) -> Plan:
    """Plan one volume; MaisiError if no plan fits the budget (naming the smallest budget that does).

    On CUDA a reserve (`_CUDA_RESERVE`) of the budget stays free for cuDNN workspaces; kept tensors may
    go to pinned host memory unless `allow_offload` is False.
    """
    devs = resolve_devices(devices)
    if axis is not None and axis not in (0, 1, 2):
        raise MaisiError(f"split axis {axis} does not exist", "use 0 (x), 1 (y) or 2 (z), or leave it to the planner")
    compute = resolve_dtype(dtype, devs)
    itemsize = torch.empty((), dtype=compute).element_size()
    spatial = tuple(int(s) for s in input_shape[1:])
    if axis is None:
        axis = max(range(3), key=lambda a: (spatial[a], -a))
    perm = (axis,) + tuple(a for a in range(3) if a != axis)
    permuted = tuple(spatial[p] for p in perm)
    sizes = graph.sizes(spatial)  # type: ignore[arg-type]
    out_spatial = sizes[graph.output]
    output_shape = (graph.nodes[graph.output].channels, *out_spatial)
    budget = int(max_memory_bytes) if max_memory_bytes is not None else min(available_memory(d) for d in devs)
    input_bytes = math.prod(input_shape) * itemsize
    output_bytes = math.prod(output_shape) * output_itemsize if output_on_device else 0
    cuda = any(d.type == "cuda" for d in devs)
    reserve = _CUDA_RESERVE if cuda else 0
    options = (False, True) if cuda and allow_offload else (False,)
    best: _Outcome | None = None
    fused: tuple[int, ...] = ()
    need = math.inf
    shared: dict = {}
    variants: list[tuple[int, ...]] = [()]
    while variants:
        variant = variants.pop(0)
        cost = _CostModel(fuse_shortcuts(graph, variant, weights=False), permuted, itemsize, len(devs),  # type: ignore[arg-type]
                          device_model(devs[0], compute), input_bytes, output_bytes, shared)
        try:
            outcome = _search(cost, budget - reserve, options, _host_available() * 0.8)
        except _TooSmall as small:
            need = min(need, small.need)
            outcome = None
        if not variant:
            variants = _fusion_variants(graph, outcome)
        if outcome is not None and (best is None or outcome.seconds < best.seconds * 0.99):
            best, fused = outcome, variant
    if best is None:
        need = need + reserve
        size = "x".join(map(str, input_shape[1:]))
        what = (f"decoding a {size} latent ({'x'.join(map(str, out_spatial))} image)" if kind == "decode"
                else f"encoding a {size} image")
        raise MaisiError(
            f"a memory budget of {_fmt_bytes(budget)} is too small for {what} "
            f"(the smallest that works is {_fmt_bytes(need, up=True)})",
            f"allow at least {_fmt_bytes(need, up=True)} (--max-gpu-memory / max_memory_bytes), or use a smaller volume",
        )
    return Plan(
        kind=kind,
        input_shape=tuple(int(s) for s in input_shape),  # type: ignore[arg-type]
        output_shape=tuple(int(s) for s in output_shape),  # type: ignore[arg-type]
        axis=axis,
        devices=tuple(str(d) for d in devs),
        dtype=str(compute).replace("torch.", ""),
        passes=tuple(best.passes),
        budget_bytes=budget,
        predicted_peak_bytes=int(best.peak),
        predicted_host_bytes=int(best.host_peak),
        predicted_seconds=float(best.seconds),
        node_names=tuple(n.name for n in fuse_shortcuts(graph, fused, weights=False).nodes),
        fused=fused,
    )


def _fusion_variants(graph: Graph, unfused: _Outcome | None) -> list[tuple[int, ...]]:
    """Which shortcut fusions to try after the plan without any: those of shortcuts whose source that
    plan does not keep (a kept source makes the plain 1x1 convolution the cheaper one), one at a time
    and all together."""
    kept = set() if unfused is None else {p.target for p in unfused.passes if p.store}
    nodes = [i for i in fusable_shortcuts(graph) if graph.nodes[i].inputs[0] not in kept]
    return [(i,) for i in nodes] + ([tuple(nodes)] if len(nodes) > 1 else [])


def _fmt_bytes(n: float, up: bool = False) -> str:
    """GiB with two decimals, or MiB with one below 1 GiB; `up` rounds up (for a minimum)."""
    unit, name, places = (GiB, "GiB", 2) if n >= GiB else (1 << 20, "MiB", 1)
    value = n / unit
    if up:
        value = math.ceil(value * 10**places) / 10**places
    return f"{value:.{places}f} {name}"


def format_plan(plan: Plan) -> str:
    """A few lines for `maisi info --plan`: sizes, devices, passes, predicted peak and time."""
    what = "latent" if plan.kind == "decode" else "image"
    other = "image" if plan.kind == "decode" else "latent"
    shape = lambda s: f"{s[0]} x " + "x".join(str(v) for v in s[1:])
    kept = [p for p in plan.passes if p.store]
    lines = [
        f"TSP {plan.kind}: {what} {shape(plan.input_shape)} -> {other} {shape(plan.output_shape)}",
        f"  devices: {', '.join(plan.devices)} ({plan.dtype}); segments split axis {AXIS_NAMES[plan.axis]}",
        f"  passes: {len(plan.passes)} ({len(kept)} keep their tensor"
        + (f", {sum(p.offload for p in kept)} in host memory" if plan.offloaded else "")
        + f"); segments per pass: {min(p.segments for p in plan.passes)}-{plan.max_segments}",
        f"  memory budget: {_fmt_bytes(plan.budget_bytes)}; predicted peak: {_fmt_bytes(plan.predicted_peak_bytes)} per device"
        + (f" + {_fmt_bytes(plan.predicted_host_bytes)} host" if plan.offloaded else ""),
        f"  predicted time: {plan.predicted_seconds:.1f} s (rough model)",
    ]
    if plan.fused:
        lines.append(f"  fused shortcuts: {', '.join(plan.node_names[i] for i in plan.fused)}")
    for p in plan.passes:
        role = "output" if p is plan.passes[-1] else ("keep" + (" (host)" if p.offload else "") if p.store else "statistics")
        if p.keep_rows:
            role += f" + first {p.keep_rows} rows"
        name = plan.node_names[p.target] if plan.node_names else str(p.target)
        lines.append(f"    {name:<34} {role:<12} {p.segments:>4} segment(s)")
    return "\n".join(lines)
