"""The paper's HU-median quality check (`MAISIEngine.quality`) over a whole set of CTs with their label
maps, and the pass rate of each organ group."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from MAISIEngine.errors import MaisiError
from MAISIEngine.evaluate.sources import Case

Log = Callable[[str], None]


def evaluate_quality(cases: list[Case], log: Log = print) -> dict[str, Any]:
    """Each case checked; per organ group: images where it was checked, passed, pass rate, median HU range."""
    from MAISIEngine.quality import check_files

    unlabelled = [c.image for c in cases if c.label is None]
    if unlabelled:
        raise MaisiError(f"{unlabelled[0].name} has no label map ({len(unlabelled)} of {len(cases)} images)",
                         "give a datalist with \"label\" entries, a `maisi batch` folder, or case_label.nii.gz beside case.nii.gz")
    rows, groups = [], {}
    for number, case in enumerate(cases, start=1):
        report = check_files(str(case.image), str(case.label))
        rows.append({"image": str(case.image), "label": str(case.label), **report.to_dict()})
        for organ in report.organs:
            entry = groups.setdefault(organ.organ, {"checked": 0, "passed": 0, "medians": [], "allowed": [organ.low, organ.high]})
            entry["checked"] += 1
            entry["passed"] += int(organ.passed)
            entry["medians"].append(organ.median)
        log(f"{number}/{len(cases)} {case.image.name}: {'pass' if report.passed else 'FAIL ' + ', '.join(report.failed)}")
    per_group = {}
    for organ, entry in groups.items():
        medians = [m for m in entry["medians"] if np.isfinite(m)]
        per_group[organ] = {"checked": entry["checked"], "passed": entry["passed"],
                            "pass_rate": entry["passed"] / entry["checked"], "allowed_hu": entry["allowed"],
                            "median_hu_min": min(medians) if medians else None,
                            "median_hu_max": max(medians) if medians else None}
    passed = sum(r["passed"] for r in rows)
    return {"measure": "HU-median quality check (MAISI section 4.1)", "images": len(rows), "passed": passed,
            "pass_rate": passed / len(rows), "organ_groups": per_group, "cases": rows}


def quality_table(report: dict[str, Any]) -> str:
    lines = [f"quality check: {report['passed']}/{report['images']} images pass ({100 * report['pass_rate']:.0f} %)",
             f"{'organ group':<12}{'passed':>10}{'rate':>8}{'median HU range':>22}{'allowed':>20}"]
    for organ, g in report["organ_groups"].items():
        seen = f"[{g['median_hu_min']:.0f}, {g['median_hu_max']:.0f}]" if g["median_hu_min"] is not None else "-"
        allowed = f"[{g['allowed_hu'][0]:.0f}, {g['allowed_hu'][1]:.0f}]"
        lines.append(f"{organ:<12}{g['passed']:>5}/{g['checked']:<4}{100 * g['pass_rate']:>7.0f}%{seen:>22}{allowed:>20}")
    failing = [r["image"].rsplit("/", 1)[-1] + ": " + ", ".join(r["failed"]) for r in report["cases"] if not r["passed"]]
    lines += [f"  FAIL {line}" for line in failing[:10]]
    if len(failing) > 10:
        lines.append(f"  ... {len(failing) - 10} more failures in the JSON report")
    return "\n".join(lines)
