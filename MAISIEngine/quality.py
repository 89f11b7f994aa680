"""The paper's HU-median quality check of a synthetic CT against its label map (MAISI section 4.1).

For each organ group present in the labels (liver, spleen, pancreas, kidney, lung, brain, bone), the
median HU of the image inside the group must lie within
[min(sigma_6_low, percentile_0_5), max(sigma_6_high, percentile_99_5)] of the per-organ statistics
of real CTs shipped with MAISI; bone's upper bound is 1000 HU. The lung group holds all five lobes
(28-32; the reference implementation lists 31 twice and misses 32).

`maisi check IMAGE LABELS` runs it on two NIfTI files: exit 0 when every organ passes, 1 when one
fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from MAISIEngine.errors import MaisiError
from MAISIEngine.labels import ORGAN_GROUPS, median_hu_statistics

BONE_UPPER_HU = 1000.0
MIN_VOXELS = 10
"""Groups with fewer voxels than this are reported as skipped: their median says little."""


@dataclass(frozen=True)
class OrganCheck:
    organ: str
    voxels: int
    median: float
    low: float
    high: float
    passed: bool


@dataclass(frozen=True)
class QualityReport:
    organs: tuple[OrganCheck, ...]
    skipped: tuple[str, ...] = field(default=())  # present, but with fewer than MIN_VOXELS voxels

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.organs)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(o.organ for o in self.organs if not o.passed)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "failed": list(self.failed),
            "organs": [{**asdict(o), "median": o.median if np.isfinite(o.median) else None} for o in self.organs],
            "skipped": list(self.skipped),
        }

    def table(self) -> str:
        """A fixed-width table for the terminal."""
        lines = [f"{'organ':<10}{'voxels':>10}{'median HU':>12}{'allowed range HU':>22}  result"]
        for o in self.organs:
            allowed = f"[{o.low:.1f}, {o.high:.1f}]"
            lines.append(f"{o.organ:<10}{o.voxels:>10}{o.median:>12.1f}{allowed:>22}  {'pass' if o.passed else 'FAIL'}")
        for name in self.skipped:
            lines.append(f"{name:<10}{'':>10}{'':>12}{'':>22}  skipped (< {MIN_VOXELS} voxels)")
        if not self.organs:
            lines.append("no organ of the check is present in the labels")
        lines.append("PASSED" if self.passed else "FAILED: " + ", ".join(self.failed))
        return "\n".join(lines)


def hu_bounds(organ: str) -> tuple[float, float]:
    """Allowed range of an organ group's median HU."""
    stats = median_hu_statistics()[organ]
    low = min(stats["sigma_6_low"], stats["percentile_0_5"])
    high = max(stats["sigma_6_high"], stats["percentile_99_5"])
    if organ == "bone":
        high = BONE_UPPER_HU
    return float(low), float(high)


def check_quality(image_hu: np.ndarray, labels: np.ndarray, min_voxels: int = MIN_VOXELS) -> QualityReport:
    """Median HU per organ group present in `labels`, compared with the statistics of real CTs."""
    image = np.asarray(image_hu)
    labels = np.asarray(labels)
    if image.shape != labels.shape:
        raise MaisiError(
            f"image shape {image.shape} differs from labels shape {labels.shape}",
            "give the labels on the image's grid",
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise MaisiError("labels hold non-integer values", "give an integer label map")
        labels = labels.astype(np.int64)
    counts = np.bincount(labels.ravel().clip(0, 65535).astype(np.int64), minlength=256)
    organs, skipped = [], []
    for organ, ids in ORGAN_GROUPS.items():
        n = int(sum(counts[i] for i in ids if i < len(counts)))
        if n == 0:
            continue
        if n < min_voxels:
            skipped.append(organ)
            continue
        values = image[np.isin(labels, list(ids))].astype(np.float64)
        finite = values[np.isfinite(values)]
        median = float(np.median(finite)) if finite.size else float("nan")
        low, high = hu_bounds(organ)
        passed = bool(np.isfinite(median) and low <= median <= high)
        organs.append(OrganCheck(organ, n, median, low, high, passed))
    return QualityReport(tuple(organs), tuple(skipped))


def check_files(image_path: str, labels_path: str) -> QualityReport:
    """Read a CT and its label map (NIfTI) and check them; they must share one grid."""
    from MAISIEngine.io.nifti import read_volume, same_grid

    image = read_volume(image_path, "image")
    labels = read_volume(labels_path, "labels")
    if not same_grid(image, labels):
        raise MaisiError(
            f"image {image.shape} and labels {labels.shape} do not share a grid (shape or affine differ)",
            "resample the labels onto the image grid",
        )
    return check_quality(np.asarray(image.array, dtype=np.float32), labels.array)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check",
        help="HU-median quality check of a CT against its labels",
        description="Check that the median HU of liver, spleen, pancreas, kidneys, lungs, brain and bone "
        "lie within the range seen in real CTs (MAISI paper, section 4.1). Exit 0 pass, 1 fail, 2 bad input.",
    )
    parser.add_argument("image", help="CT image in HU (NIfTI)")
    parser.add_argument("labels", help="MAISI label map on the same grid (NIfTI)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        report = check_files(args.image, args.labels)
    except MaisiError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0 if report.passed else 1
