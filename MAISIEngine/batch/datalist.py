"""A MONAI datalist (Auto3DSeg / nnU-Net-style converters take it as is) of the batch's samples.

Optionally mixes in the user's real cases at a real:synthetic ratio such as "1:1" (the paper's Table S4
studies 1:0.5, 1:1 and 1:1.5). Synthetic cases are assigned to folds round-robin by sample index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from MAISIEngine.batch.runner import MANIFEST
from MAISIEngine.batch.spec import BatchSpec
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import write_text_atomic

DATALIST = "datalist.json"


def parse_ratio(text: str | float | None) -> float | None:
    """'1:1.5' -> 1.5 synthetic cases per real case."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        real, synthetic = (float(v) for v in str(text).split(":"))
        return synthetic / real
    except (ValueError, ZeroDivisionError):
        raise MaisiError(f"cannot read ratio '{text}'", 'write it as "real:synthetic", e.g. "1:1.5"') from None


def write_datalist(out_dir: Path, spec: BatchSpec) -> Path:
    options = dict(spec.datalist or {})
    folds = int(options.get("folds", 5))
    records = [json.loads(line) for line in (out_dir / MANIFEST).read_text().splitlines() if line.strip()]
    synthetic = [{"image": r["image"], "label": r["label"], "fold": r["index"] % folds, "synthetic": True} for r in records]
    training: list[dict[str, Any]] = []
    if options.get("real"):
        real_path = Path(options["real"]).expanduser()
        try:
            real = json.loads(real_path.read_text()).get("training", [])
        except (OSError, ValueError) as exc:
            raise MaisiError(f"cannot read the real datalist {real_path} ({exc})", "give a MONAI datalist JSON") from None
        base = real_path.parent
        for position, entry in enumerate(real):
            item = dict(entry)
            for key in ("image", "label"):
                if key in item and not Path(item[key]).is_absolute():
                    item[key] = str((base / item[key]).resolve())
            item.setdefault("fold", position % folds)
            item["synthetic"] = False
            training.append(item)
        ratio = parse_ratio(options.get("ratio", "1:1"))
        keep = min(len(synthetic), int(round(len(real) * (ratio or 0))))
        synthetic = synthetic[:keep]
    training += synthetic
    path = out_dir / DATALIST
    write_text_atomic(path, json.dumps({"name": "MAISI synthetic CT", "synthetic_note": "SYNTHETIC, not for clinical use",
                                        "numTraining": len(training), "training": training, "testing": []}, indent=2))
    return path
