"""Row arithmetic along the split axis: which input rows each output row needs, and pass schedules.

The executor always splits along the first spatial axis (the caller's chosen axis is permuted there).
A *pass* computes one target tensor; the tensors it needs that are not kept are recomputed inside it.
`Schedule` streams a pass like a line-buffer pipeline: at every step each node computes the next few
rows its inputs allow, and keeps only the rows (the halo) its consumers still need. Every row is
computed once, and a node holds a few rows, not the whole tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from MAISIEngine.tsp.graph import CONV, UPSAMPLE, Graph, Node

Rows = tuple[int, int]


def input_rows(node: Node, lo: int, hi: int, n_in: int) -> Rows:
    """Input rows [a, b) read by output rows [lo, hi); a conv's range may reach into its zero padding."""
    if node.op != CONV:
        return lo, hi
    a, b = lo * node.stride - node.pad[0], (hi - 1) * node.stride - node.pad[0] + node.kernel
    if node.pre == UPSAMPLE:
        return upsampled_rows(clip((a, b), 2 * n_in), n_in)
    return a, b


def upsampled_rows(rows: Rows, n_in: int) -> Rows:
    """Input rows a trilinear x2 interpolation (align_corners=False) reads for output rows `rows`.

    Output row o samples input (o + 0.5) / 2 - 0.5 (clamped at 0): rows floor of that and the next.
    """
    lo, hi = rows
    return max((lo - 1) // 2, 0), min(max((hi - 2) // 2, 0) + 2, n_in)


def clip(rows: Rows, n: int) -> Rows:
    return max(rows[0], 0), min(rows[1], n)


@dataclass(frozen=True)
class PassShape:
    """Which nodes a pass evaluates (in order, target last) and which stored tensors it reads."""

    target: int
    members: tuple[int, ...]
    reads: tuple[int, ...]


def pass_shape(graph: Graph, target: int, stored: set[int]) -> PassShape:
    members: set[int] = set()
    reads: set[int] = set()
    stack = [target]
    while stack:
        index = stack.pop()
        if index in members:
            continue
        members.add(index)
        for i in graph.nodes[index].inputs:
            if i in stored:
                reads.add(i)
            elif i not in members:
                stack.append(i)
    return PassShape(target, tuple(sorted(members)), tuple(sorted(reads)))


def partial_user_pass(graph: Graph, targets: list[int], shapes: list[PassShape], v: int) -> int | None:
    """The pass that can reuse the first rows of statistics-only tensor v: the next pass recomputing v,
    provided it reads every input of v from kept tensors (then the kept rows need no inputs)."""
    start = targets.index(v) + 1 if v in targets else len(targets)
    for j in range(start, len(targets)):
        if v in shapes[j].members:
            return j if all(i in shapes[j].reads for i in graph.nodes[v].inputs) else None
    return None


def regions(graph: Graph, shape: PassShape, lengths: list[int], rows: Rows) -> dict[int, Rows]:
    """Rows of every member and read tensor needed to produce target rows `rows` (clipped to each size)."""
    need: dict[int, Rows] = {shape.target: rows}
    for index in reversed(shape.members):
        lo, hi = need[index]
        node = graph.nodes[index]
        for i in node.inputs:
            a, b = clip(input_rows(node, lo, hi, lengths[i]), lengths[i])
            if i in need:
                a, b = min(a, need[i][0]), max(b, need[i][1])
            need[i] = (a, b)
    return need


@lru_cache(maxsize=1 << 16)  # the planner replays the same schedules many times
def output_rows_ready(node: Node, start: int, done_in: int, n_in: int, n_out: int) -> int:
    """The largest end e such that output rows [start, e) only read input rows below `done_in`."""
    if done_in >= n_in:
        return n_out
    lo, hi = start, n_out
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if clip(input_rows(node, start, mid, n_in), n_in)[1] <= done_in:
            lo = mid
        else:
            hi = mid - 1
    return lo


class Schedule:
    """Row bookkeeping of one pass over target rows `rows`, advancing about `step_rows` per step.

    `step()` returns the (node, lo, hi) computations of the next step in execution order; `keep_from()`
    gives, for every member and read tensor, the first row any consumer still needs afterwards.
    """

    def __init__(self, graph: Graph, shape: PassShape, lengths: list[int], rows: Rows, step_rows: int) -> None:
        self.graph = graph
        self.shape = shape
        self.lengths = lengths
        first = regions(graph, shape, lengths, (rows[0], rows[0] + 1))
        last = regions(graph, shape, lengths, (rows[1] - 1, rows[1]))
        self.limit = {v: last[v][1] for v in last}
        self.start = {v: first[v][0] for v in first}
        self.done = {v: self.start[v] for v in shape.members}
        for r in shape.reads:
            self.done[r] = lengths[r]
        n_target = lengths[shape.target]
        self.cap = {v: max(1, -(-step_rows * lengths[v] // n_target)) for v in shape.members}
        self.consumers: dict[int, list[int]] = {v: [] for v in first}
        for v in shape.members:
            for i in graph.nodes[v].inputs:
                self.consumers[i].append(v)

    @property
    def finished(self) -> bool:
        return self.done[self.shape.target] >= self.limit[self.shape.target]

    def step(self) -> list[tuple[int, int, int]]:
        work = []
        for v in self.shape.members:
            node = self.graph.nodes[v]
            end = min(self.limit[v], self.done[v] + self.cap[v])
            for i in node.inputs:
                end = min(end, output_rows_ready(node, self.done[v], self.done[i], self.lengths[i], self.lengths[v]))
            if end > self.done[v]:
                work.append((v, self.done[v], end))
                self.done[v] = end
        if not work:
            raise AssertionError("tensor-splitting schedule made no progress")
        return work

    def keep_from(self) -> dict[int, int]:
        """For each member (but the target) and read: the lowest row still needed by a consumer."""
        out = {}
        for v, users in self.consumers.items():
            if v == self.shape.target:
                continue
            first = self.done[v]
            for c in users:
                if self.done[c] < self.limit[c]:
                    lo, _ = clip(input_rows(self.graph.nodes[c], self.done[c], self.done[c] + 1, self.lengths[v]), self.lengths[v])
                    first = min(first, lo)
            out[v] = first
        return out
