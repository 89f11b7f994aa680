"""The batch manifest (JSON lines, one record per sample) and the pass/fail report per organ check."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from MAISIEngine.batch.runner import MANIFEST, REPORT, finished
from MAISIEngine.batch.spec import BatchSpec
from MAISIEngine.io.atomic import write_text_atomic


def write_manifest_and_report(out_dir: Path, spec: BatchSpec) -> dict[str, Any]:
    """Collect every finished sample's record (hash-verified) into the manifest and count the checks."""
    records = [r for r in (finished(out_dir, i) for i in range(spec.samples)) if r is not None]
    records.sort(key=lambda r: r["index"])
    write_text_atomic(out_dir / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    organ_pass: Counter[str] = Counter()
    organ_fail: Counter[str] = Counter()
    for record in records:
        for organ, passed in record.get("organ_checks", {}).items():
            (organ_pass if passed else organ_fail)[organ] += 1
    report = {
        "samples_requested": spec.samples,
        "samples_written": len(records),
        "complete": len(records) == spec.samples,
        "missing": sorted(set(range(spec.samples)) - {r["index"] for r in records}),
        "quality_passed": sum(1 for r in records if r.get("quality_passed") is True),
        "quality_failed": sum(1 for r in records if r.get("quality_passed") is False),
        "retried": sum(1 for r in records if len(r.get("attempts", [])) > 1),
        "organ_checks": {organ: {"passed": organ_pass[organ], "failed": organ_fail[organ]}
                         for organ in sorted(set(organ_pass) | set(organ_fail))},
        "tumors": dict(Counter(r["tumor"] for r in records if r.get("tumor"))),
    }
    write_text_atomic(out_dir / REPORT, json.dumps(report, indent=2))
    return report
