"""Readable views of the engine's JSON reports: `maisi evaluate fid | vae | quality --json FILE` and a
`maisi batch` folder's own `report.json`, as titled tables of formatted text.

It only reads JSON (no torch, no Qt), so both front ends can show a report the engine wrote elsewhere,
e.g. on a GPU server. A file that is not valid JSON, or not one of these reports, or one whose figures
are malformed, raises one `MaisiError` saying which file and what to open instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MAISIEngine.errors import MaisiError

BATCH_REPORT = "report.json"
BATCH_FILES = ("batch_spec.json", "manifest.jsonl", "datalist.json")
"""Files `maisi batch` writes into its output folder (beside `samples/` and `report.json`)."""
MAX_REPORT_BYTES = 64 * 1024 * 1024
KIND_TITLES = {"fid": "2.5D FID", "vae": "VAE reconstruction", "quality": "Quality check", "batch": "Batch"}
WHAT_TO_OPEN = ("open the JSON that `maisi evaluate fid|vae|quality ... --json FILE` wrote, or a `maisi batch` "
                "output folder")


@dataclass
class ReportTable:
    """One table of a report: `key` names it (e.g. "planes"), rows hold the text shown in each cell."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class ReportView:
    kind: str  # "fid", "vae", "quality" or "batch"
    path: str
    summary: list[str]
    tables: list[ReportTable]
    headline: str = ""
    """A few words for a history list, e.g. "average FID 1.2345"."""

    @property
    def title(self) -> str:
        return KIND_TITLES[self.kind]

    def table(self, key: str) -> ReportTable:
        return next(t for t in self.tables if t.key == key)


def report_kind(data: Any) -> str | None:
    """Which report a decoded JSON document is, by the fields each writer always writes; None if foreign."""
    if not isinstance(data, dict):
        return None
    if "planes" in data and "fid_average" in data:
        return "fid"
    if isinstance(data.get("overall"), dict) and "psnr_db" in data["overall"] and "images" in data:
        return "vae"
    if "organ_groups" in data and "cases" in data:
        return "quality"
    if "samples_requested" in data and "organ_checks" in data:
        return "batch"
    return None


def _number(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    return f"{float(value):.{digits}f}"


def _distance(value: Any) -> str:
    """FID and perceptual distances: 4 decimals, or 4 significant digits when that would show 0.0000."""
    value = float(value)
    return f"{value:.4f}" if value == 0 or abs(value) >= 0.01 else f"{value:.4g}"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.0f} %"


def _name(path: Any) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def _short_names(paths: list[Any]) -> list[str]:
    """Paths without the folders they all share ("sample_00001/image.nii.gz" in a batch, not "image.nii.gz")."""
    parts = [str(p).replace("\\", "/").split("/") for p in paths]
    if len(parts) < 2:
        return [p[-1] for p in parts]
    shared = 0
    while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
        shared += 1
    return ["/".join(p[shared:]) for p in parts]


def _fid_view(data: dict[str, Any], path: str) -> ReportView:
    pre = data.get("preprocessing") or {}
    real, synthetic = data.get("real") or {}, data.get("synthetic") or {}
    features = str(data.get("features") or "")
    summary = [str(data.get("measure", "2.5D FID")),
               f"{synthetic.get('images', '?')} synthetic vs {real.get('images', '?')} real "
               f"{data.get('modality', 'CT')} images; features {_name(features) or '-'}",
               f"spacing {pre.get('spacing') or 'as stored'}, crop {pre.get('center_crop') or 'none'}, "
               f"central slices {pre.get('center_slices_ratio') or 'all'}, HU window {pre.get('hu_window', '-')}"]
    if data.get("seconds") is not None:
        summary.append(f"computed in {data['seconds']} s")
    table = ReportTable("planes", "FID per plane", ["Plane", "FID", "Reference plane", "Real slices", "Synthetic slices"])
    for plane, row in dict(data["planes"]).items():
        table.rows.append([str(plane), _distance(row["fid"]), str(row.get("reference_plane", "")),
                           str(int(row.get("real_slices", 0))), str(int(row.get("synthetic_slices", 0)))])
    average = _distance(data["fid_average"])
    table.rows.append(["average", average, "", "", ""])
    return ReportView("fid", path, summary, [table], f"average FID {average}")


def _vae_view(data: dict[str, Any], path: str) -> ReportView:
    overall = dict(data["overall"])
    perceptual = "perceptual" in overall
    headers = ["Image", "Shape", "PSNR (dB)", "SSIM"] + (["Perceptual"] if perceptual else []) + ["Seconds"]
    table = ReportTable("images", "Per image and overall", headers)

    def cells(values: dict[str, Any]) -> list[str]:
        return [_number(values["psnr_db"], 2), _number(values["ssim"], 4)] + (
            [_distance(values["perceptual"])] if perceptual else [])

    images = list(data["images"])
    for row, name in zip(images, _short_names([r["image"] for r in images])):
        shape = "x".join(str(int(v)) for v in row.get("shape") or [])
        table.rows.append([name, shape, *cells(row), _number(row.get("seconds"), 2)])
    table.rows.append([f"mean of {len(images)}", "", *cells(overall), ""])
    summary = [str(data.get("measure", "VAE reconstruction")),
               f"model {data.get('model', '?')} on {data.get('device', '?')}; perceptual distance: "
               f"{data.get('perceptual', 'not computed')}"]
    headline = f"PSNR {_number(overall['psnr_db'], 2)} dB, SSIM {_number(overall['ssim'], 4)}"
    return ReportView("vae", path, summary, [table], headline)


def _quality_view(data: dict[str, Any], path: str) -> ReportView:
    groups = ReportTable("organ_groups", "Pass rate per organ group",
                         ["Organ group", "Passed", "Checked", "Pass rate", "Median HU range", "Allowed HU"])
    for organ, group in dict(data["organ_groups"]).items():
        low, high = group.get("median_hu_min"), group.get("median_hu_max")
        seen = "-" if low is None or high is None else f"{float(low):.0f} to {float(high):.0f}"
        allowed = group.get("allowed_hu") or []
        groups.rows.append([str(organ), str(int(group["passed"])), str(int(group["checked"])),
                            _percent(group["pass_rate"]), seen,
                            f"{float(allowed[0]):.0f} to {float(allowed[1]):.0f}" if len(allowed) == 2 else "-"])
    cases = ReportTable("cases", "Per image", ["Image", "Result", "Failed organ groups"])
    listed = list(data["cases"])
    for case, name in zip(listed, _short_names([c["image"] for c in listed])):
        cases.rows.append([name, "pass" if case["passed"] else "FAIL", ", ".join(case.get("failed") or [])])
    passed, images = int(data["passed"]), int(data["images"])
    headline = f"{passed}/{images} pass ({_percent(data['pass_rate'])})"
    summary = [str(data.get("measure", "HU quality check")), f"{headline} of the images"]
    return ReportView("quality", path, summary, [groups, cases], headline)


def _batch_view(data: dict[str, Any], path: str) -> ReportView:
    written, requested = int(data["samples_written"]), int(data["samples_requested"])
    checks = ReportTable("organ_checks", "Generation quality gate per organ", ["Organ", "Passed", "Failed", "Pass rate"])
    for organ, counts in dict(data["organ_checks"]).items():
        good, bad = int(counts["passed"]), int(counts["failed"])
        checks.rows.append([str(organ), str(good), str(bad), _percent(good / (good + bad)) if good + bad else "-"])
    summary = [f"{written} of {requested} samples written" + ("" if data.get("complete") else
                                                              f" (missing: {len(data.get('missing') or [])})"),
               f"quality check at generation: {int(data.get('quality_passed', 0))} passed, "
               f"{int(data.get('quality_failed', 0))} failed, {int(data.get('retried', 0))} retried"]
    tumors = dict(data.get("tumors") or {})
    if tumors:
        summary.append("tumors added: " + ", ".join(f"{name} {count}" for name, count in sorted(tumors.items())))
    return ReportView("batch", path, summary, [checks], f"{written}/{requested} samples")


VIEWS = {"fid": _fid_view, "vae": _vae_view, "quality": _quality_view, "batch": _batch_view}


def report_view(data: Any, path: str = "") -> ReportView:
    """The readable view of a decoded report; MaisiError when it is foreign or its figures are malformed."""
    name = _name(path) or "the file"
    kind = report_kind(data)
    if kind is None:
        raise MaisiError(f"{name} is not a MAISI evaluation report", WHAT_TO_OPEN)
    try:
        return VIEWS[kind](data, str(path))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as exc:
        raise MaisiError(f"{name} looks like a {KIND_TITLES[kind]} report but its figures cannot be read "
                         f"({type(exc).__name__}: {exc})",
                         "write the report again with the current `maisi evaluate` (it may be cut short or edited)") from None


def _load_json(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            raise MaisiError(f"{path.name} is {path.stat().st_size / 2**20:.0f} MB, too large for a report", WHAT_TO_OPEN)
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise MaisiError(f"{path.name} is not a text file", WHAT_TO_OPEN) from None
    except json.JSONDecodeError as exc:
        raise MaisiError(f"{path.name} is not valid JSON (line {exc.lineno}: {exc.msg})", WHAT_TO_OPEN) from None
    except OSError as exc:
        raise MaisiError(f"cannot read {path} ({exc.strerror or exc})", "check that the file exists and is readable") from None


def read_report(path: str | Path) -> ReportView:
    """A report file's view (any of the four kinds)."""
    path = Path(path)
    if path.is_dir():
        raise MaisiError(f"{path.name} is a folder", "open it as a batch folder, or choose a report's JSON file")
    return report_view(_load_json(path), str(path))


def is_batch_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / BATCH_REPORT).is_file() or any((folder / name).is_file() for name in BATCH_FILES)


def evaluation_files(folder: str | Path) -> list[Path]:
    """The evaluation reports in a folder (its top level and an `evaluation/` subfolder), by name."""
    folder = Path(folder)
    found = []
    for path in sorted([*folder.glob("*.json"), *folder.glob("evaluation/*.json")]):
        if path.name in BATCH_FILES or path.parent == folder and path.name == BATCH_REPORT:
            continue
        try:
            if path.stat().st_size <= MAX_REPORT_BYTES and report_kind(json.loads(path.read_text(encoding="utf-8"))) \
                    in ("fid", "vae", "quality"):
                found.append(path)
        except (OSError, ValueError):
            continue  # other JSON files of the user's are not reports: not listed, not an error
    return found


def read_batch_folder(folder: str | Path) -> list[ReportView]:
    """A `maisi batch` folder's own report (if written) then every evaluation report it holds.

    MaisiError when the folder holds neither."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MaisiError(f"{folder} is not a folder", "choose the output folder of `maisi batch`")
    views = []
    if (folder / BATCH_REPORT).is_file():
        views.append(read_report(folder / BATCH_REPORT))
    views += [read_report(path) for path in evaluation_files(folder)]
    if not views:
        raise MaisiError(f"{folder.name} holds no batch report and no evaluation report",
                         f"choose a `maisi batch` output folder, or write one there with `maisi evaluate quality "
                         f"{folder} --json {folder / 'quality.json'}`")
    return views
