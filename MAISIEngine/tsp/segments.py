"""Row arithmetic along the split axis: which input rows each output row needs, and pass structure.

The executor always splits along the first spatial axis (the caller's chosen axis is permuted there),
so a segment is a range of rows [lo, hi). A *pass* computes one target tensor segment by segment,
recomputing the tensors it needs that are not stored ("virtual") with exactly the halo each
convolution, interpolation and residual addition requires.
"""

from __future__ import annotations

from dataclasses import dataclass

from MAISIEngine.tsp.graph import CONV, UPSAMPLE, Graph, Node

Rows = tuple[int, int]


def input_rows(node: Node, lo: int, hi: int, n_in: int) -> Rows:
    """Input rows [a, b) read by output rows [lo, hi); a conv's range may reach into its zero padding."""
    if node.op == CONV:
        return lo * node.stride - node.pad[0], (hi - 1) * node.stride - node.pad[0] + node.kernel
    if node.op == UPSAMPLE:
        # trilinear x2 (align_corners=False): output row o samples input (o + 0.5) / 2 - 0.5, clamped at 0
        return max((lo - 1) // 2, 0), min(max((hi - 2) // 2, 0) + 2, n_in)
    return lo, hi


def clip(rows: Rows, n: int) -> Rows:
    return max(rows[0], 0), min(rows[1], n)


def split_rows(n: int, segments: int) -> list[Rows]:
    """`segments` near-equal consecutive ranges covering [0, n)."""
    segments = max(1, min(segments, n))
    bounds = [(i * n) // segments for i in range(segments + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(segments)]


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
