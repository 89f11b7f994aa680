"""Batch folders and `maisi evaluate` reports in the desktop app (real windows under Xvfb): File > Open
batch folder / Open evaluation report, the History entries (kept across restarts) and the report window's
tables, whose cells must show the figures the engine wrote; bad or foreign JSON gives one error dialog.

The reports are made by the engine itself on phantom CTs: a `maisi batch` folder laid out by the batch's
own manifest/report/datalist writers, `maisi evaluate quality` and `maisi evaluate vae` (CLI, demo model),
and `evaluate_fid` with a small random feature network (the RadImageNet weights are not on this machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("vtk")

from PyQt5 import QtWidgets  # noqa: E402

from desktop_fixtures import open_main_window  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LIVER = 1


class SmallFeatures:
    """A random 2D conv feature network with the `features` method the FID code calls (not zero-initialised)."""

    def __new__(cls):
        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                torch.manual_seed(0)
                self.conv = torch.nn.Conv2d(3, 16, 5, stride=2)

            def features(self, x: torch.Tensor) -> torch.Tensor:
                return torch.relu(self.conv(x)).mean(dim=(2, 3))

        return Net().eval()


def _write_phantom(folder: Path, seed: int, bright_liver: bool = False) -> tuple[Path, Path]:
    from MAISIEngine.io.nifti import write_volume
    from MAISIEngine.phantom import make_phantom

    phantom = make_phantom(size=(64, 64, 64), spacing=(6.0, 6.0, 6.0), region="abdomen", seed=seed)
    ct = np.asarray(phantom.ct, np.float32)
    if bright_liver:
        ct[np.asarray(phantom.labels) == LIVER] = 400.0  # the liver far outside its HU range: the check fails
    folder.mkdir(parents=True, exist_ok=True)
    image, labels = folder / "image.nii.gz", folder / "labels.nii.gz"
    write_volume(image, ct, phantom.affine, dtype=np.int16)
    write_volume(labels, phantom.labels, phantom.affine, dtype=np.uint8)
    return image, labels


def _batch_folder(out: Path) -> Path:
    """Two samples (the second fails the liver check) with the batch's own manifest, report and datalist."""
    from MAISIEngine.batch.datalist import write_datalist
    from MAISIEngine.batch.report import write_manifest_and_report
    from MAISIEngine.batch.runner import SPEC_RECORD, file_sha256, sample_dir
    from MAISIEngine.batch.spec import BatchSpec

    spec = BatchSpec(samples=2, base_seed=7)
    (out).mkdir(parents=True)
    (out / SPEC_RECORD).write_text(json.dumps({"fingerprint": spec.fingerprint()}))
    for index in range(2):
        folder = sample_dir(out, index)
        _write_phantom(folder, 20 + index, bright_liver=index == 1)
        (folder / "provenance.json").write_text(json.dumps({"synthetic": True, "batch_index": index}))
        record = {"index": index, "seed": 20 + index, "attempts": [{"attempt": 0, "seed": 20 + index}],
                  "quality_passed": index == 0, "organ_checks": {"liver": index == 0, "spleen": True},
                  "tumor": "liver" if index == 0 else None,
                  "image": f"samples/{folder.name}/image.nii.gz", "label": f"samples/{folder.name}/labels.nii.gz",
                  "sha256": {n: file_sha256(folder / n) for n in ("image.nii.gz", "labels.nii.gz", "provenance.json")}}
        (folder / "sample.json").write_text(json.dumps(record))
    assert write_manifest_and_report(out, spec)["complete"]
    write_datalist(out, spec)
    return out


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    from MAISIEngine.cli import main as maisi
    from MAISIEngine.evaluate.fid import evaluate_fid
    from MAISIEngine.evaluate.preprocess import Preprocessing
    from MAISIEngine.evaluate.sources import read_set

    root = tmp_path_factory.mktemp("reports")
    batch = _batch_folder(root / "batch")
    for seed in (30, 31):
        _write_phantom(root / "real" / f"case{seed}", seed)
    assert maisi(["evaluate", "quality", str(batch), "--json", str(batch / "quality.json")]) == 0
    (batch / "evaluation").mkdir()
    assert maisi(["evaluate", "vae", "--images", str(root / "real"), "--model", "demo",
                  "--json", str(batch / "evaluation" / "vae.json")]) == 0
    fid = evaluate_fid(read_set(root / "real"), read_set(batch), SmallFeatures(),
                       Preprocessing(spacing=None, crop=(48, 48, 48)), features="small-random-test-network", log=lambda _: None)
    (batch / "evaluation" / "fid.json").write_text(json.dumps(fid, indent=2))
    return {"batch": batch, "quality": batch / "quality.json", "vae": batch / "evaluation" / "vae.json",
            "fid": batch / "evaluation" / "fid.json", "root": root}


@pytest.fixture
def window(qtbot, tmp_path):
    yield from open_main_window(qtbot, tmp_path)


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def expected_quality_rows(report: dict) -> dict[str, list[str]]:
    rows = {}
    for organ, g in report["organ_groups"].items():
        seen = f"{g['median_hu_min']:.0f} to {g['median_hu_max']:.0f}"
        rows[organ] = [organ, str(g["passed"]), str(g["checked"]), f"{100 * g['pass_rate']:.0f} %", seen,
                       f"{g['allowed_hu'][0]:.0f} to {g['allowed_hu'][1]:.0f}"]
    return rows


def check_quality_tables(dialog, report: dict) -> None:
    groups = {row[0]: row for row in dialog.cells("quality", "organ_groups")}
    assert groups == expected_quality_rows(report)
    assert groups["liver"][1:4] == ["1", "2", "50 %"]  # sample 1's liver is 400 HU
    assert groups["liver"][4].endswith("to 400")
    assert groups["spleen"][1:4] == ["2", "2", "100 %"]
    assert dialog.cells("quality", "cases") == [["sample_00000/image.nii.gz", "pass", ""],
                                                ["sample_00001/image.nii.gz", "FAIL", "liver"]]


def distance(value: float) -> str:
    return f"{value:.4f}" if abs(value) >= 0.01 else f"{value:.4g}"


def check_fid_table(dialog, report: dict) -> None:
    rows = dialog.cells("fid", "planes")
    assert [r[0] for r in rows] == ["axial", "coronal", "sagittal", "average"]
    for row in rows[:3]:
        plane = report["planes"][row[0]]
        assert row == [row[0], distance(plane["fid"]), plane["reference_plane"], str(plane["real_slices"]),
                       str(plane["synthetic_slices"])]
        assert plane["fid"] > 1e-6  # two different sets
    assert rows[3][:2] == ["average", distance(report["fid_average"])]
    assert report["planes"]["axial"]["real_slices"] == 2 * 19  # 48 slices, central 0.4: 14 .. 32


def check_vae_table(dialog, report: dict) -> None:
    rows = dialog.cells("vae", "images")
    assert [r[0] for r in rows] == ["case30/image.nii.gz", "case31/image.nii.gz", "mean of 2"]
    for row, image in zip(rows, report["images"]):
        assert row[1:4] == ["64x64x64", f"{image['psnr_db']:.2f}", f"{image['ssim']:.4f}"]
        assert 20 < image["psnr_db"] < 45 and 0.5 < image["ssim"] <= 1
    assert rows[2][2:4] == [f"{report['overall']['psnr_db']:.2f}", f"{report['overall']['ssim']:.4f}"]


def tab_titles(dialog) -> list[str]:
    return [dialog.tabs.tabText(i) for i in range(dialog.tabs.count())]


def test_batch_folder_shows_its_reports_and_stays_in_the_history(window, qtbot, reports, tmp_path):
    batch = reports["batch"]
    dialog = window.open_batch_folder(batch)
    assert dialog is not None and dialog.isVisible() and window.last_error is None
    assert tab_titles(dialog) == ["Batch", "2.5D FID", "VAE reconstruction", "Quality check"]
    assert dialog.cells("batch", "organ_checks") == [["liver", "1", "1", "50 %"], ["spleen", "2", "0", "100 %"]]
    summary = dialog.findChild(QtWidgets.QLabel, "reportSummary_batch").text()
    assert "2 of 2 samples written" in summary and "1 passed, 1 failed" in summary and "liver 1" in summary
    check_quality_tables(dialog, load(reports["quality"]))
    check_fid_table(dialog, load(reports["fid"]))
    check_vae_table(dialog, load(reports["vae"]))

    entry = window.history.entries[-1]
    assert entry.kind == "batch" and entry.report_path == str(batch.resolve())
    assert "batch  batch" in entry.title and "2/2 samples" in entry.title
    assert window.history.open_button.text() == "Show report"
    dialog.close()

    # The next start of the app lists it again; a double-click shows it again, the views untouched.
    again = next(open_main_window(qtbot, tmp_path))
    (listed,) = [e for e in again.history.entries if e.is_report]
    assert listed.report_path == str(batch.resolve())
    again.history.list.setCurrentRow(again.history.entries.index(listed))
    again.history.list.itemDoubleClicked.emit(again.history.list.currentItem())
    assert again.report_dialog is not None and again.report_dialog.isVisible()
    check_quality_tables(again.report_dialog, load(reports["quality"]))
    assert again.study is None and again.central_pages.currentIndex() == 0
    # Opening the same folder once more selects its entry instead of adding another.
    again.open_batch_folder(batch)
    assert [e.report_path for e in again.history.entries if e.is_report] == [str(batch.resolve())]


@pytest.mark.parametrize("kind", ["quality", "fid", "vae"])
def test_evaluation_report_file_opens_from_the_file_menu(window, reports, kind):
    assert window.findChild(QtWidgets.QAction, "openReport").text() == "Open evaluation &report..."
    dialog = window.open_report(reports[kind])
    assert dialog is not None and window.last_error is None
    assert len(tab_titles(dialog)) == 1
    {"quality": check_quality_tables, "fid": check_fid_table, "vae": check_vae_table}[kind](dialog, load(reports[kind]))
    entry = window.history.entries[-1]
    assert entry.kind == "evaluation" and entry.result["report_kind"] == kind
    assert window.open_history_entry(entry) and window.report_dialog is not dialog


def visible_message_boxes(window) -> list:
    return [w for w in window.findChildren(QtWidgets.QMessageBox) if w.isVisible()]


@pytest.mark.parametrize("case,expected", [
    ("not_json", "is not valid JSON (line 1"),
    ("foreign", "is not a MAISI evaluation report"),
    ("list", "is not a MAISI evaluation report"),
    ("broken_fid", "looks like a 2.5D FID report but its figures cannot be read"),
    ("binary", "is not a text file"),
    ("empty_folder", "holds no batch report and no evaluation report"),
])
def test_bad_reports_give_one_error_dialog(window, tmp_path, reports, case, expected):
    path = tmp_path / f"{case}.json"
    if case == "not_json":
        path.write_text("{'fid': 1}")
    elif case == "foreign":
        path.write_text(json.dumps({"name": "my datalist", "training": []}))
    elif case == "list":
        path.write_text(json.dumps([1, 2, 3]))
    elif case == "broken_fid":
        report = load(reports["fid"])
        report["planes"]["axial"]["fid"] = "twelve"
        path.write_text(json.dumps(report))
    elif case == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    else:
        path = tmp_path / "not_a_batch"
        path.mkdir()
        (path / "notes.json").write_text(json.dumps({"notes": "mine"}))
    opened = window.open_batch_folder(path) if case == "empty_folder" else window.open_report(path)
    assert opened is None and window.report_dialog is None
    message, hint = window.last_error
    assert expected in message and hint
    assert len(visible_message_boxes(window)) == 1 and window.error_dialog.isVisible()
    assert expected[:12].lower() in window.error_dialog.text().lower()
    assert not [e for e in window.history.entries if e.is_report]


def test_reading_reports_needs_neither_torch_nor_monai(reports, tmp_path):
    """What the front end runs to show a report, in a process where torch and MONAI cannot be imported."""
    script = tmp_path / "blocked.py"
    script.write_text(textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "monai", "nibabel"):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Blocker())
        from MAISISynthLib.evaluation_report import read_batch_folder
        import MAISIDesktop.report_actions
        views = read_batch_folder({str(reports['batch'])!r})
        print(json.dumps([v.kind for v in views]))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": f"{REPO}:{REPO / 'MAISISynth'}", "PATH": "/usr/bin:/bin",
                               "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["batch", "fid", "vae", "quality"]
