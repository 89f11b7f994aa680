"""Data and helpers for the desktop app tests: small MAISI label maps, files, pixel look-ups."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

LIVER, SPLEEN, LUNG_LOBE, VERTEBRA, BODY = 1, 3, 28, 33, 200


def torso_labels(shape: tuple[int, int, int] = (40, 40, 32)) -> np.ndarray:
    """A small torso-like MAISI label map: body cylinder with liver, spleen, a lung lobe and a vertebra.

    Organs are boxes so that tests know exactly which voxels each holds.
    """
    x, y, z = shape
    labels = np.zeros(shape, dtype=np.uint8)
    ii, jj = np.meshgrid(np.arange(x), np.arange(y), indexing="ij")
    body = ((ii - (x - 1) / 2) / (0.45 * x)) ** 2 + ((jj - (y - 1) / 2) / (0.40 * y)) ** 2 <= 1.0
    labels[body, :] = BODY
    labels[int(0.55 * x):int(0.80 * x), int(0.35 * y):int(0.65 * y), int(0.15 * z):int(0.55 * z)] = LIVER
    labels[int(0.20 * x):int(0.35 * x), int(0.40 * y):int(0.60 * y), int(0.30 * z):int(0.50 * z)] = SPLEEN
    labels[int(0.30 * x):int(0.70 * x), int(0.30 * y):int(0.70 * y), int(0.65 * z):int(0.90 * z)] = LUNG_LOBE
    labels[int(0.45 * x):int(0.55 * x), int(0.20 * y):int(0.30 * y), :] = VERTEBRA
    return labels


def torso_ct(labels: np.ndarray) -> np.ndarray:
    """A CT in HU matching `torso_labels`: air, fat-like body, organs at typical values."""
    ct = np.full(labels.shape, -1000.0, dtype=np.float32)
    for label, hu in ((BODY, -80.0), (LIVER, 60.0), (SPLEEN, 45.0), (LUNG_LOBE, -850.0), (VERTEBRA, 700.0)):
        ct[labels == label] = hu
    return ct


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    affine = np.diag([4.0, 4.0, 5.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def interior_voxel(labels: np.ndarray, label: int, axis: int = 2) -> tuple[int, int, int]:
    """A voxel of `label` whose 3x3x3 neighbourhood holds only that label (so its pixel is unblended)."""
    from scipy import ndimage

    core = ndimage.binary_erosion(labels == label, structure=np.ones((3, 3, 3)))
    points = np.argwhere(core)
    if not len(points):
        raise AssertionError(f"label {label} has no interior voxel")
    centre = points.mean(axis=0)
    best = points[np.argmin(np.linalg.norm(points - centre, axis=1))]
    return tuple(int(v) for v in best)  # type: ignore[return-value]


def pixel_at(view, ijk) -> np.ndarray:
    """The RGB a slice view shows at the centre of voxel `ijk` (read back from the render window)."""
    image = view.capture()
    col, row = view.display_of(ijk)
    return image[row, col].astype(int)


def _closing_after_test(win) -> None:
    win.ask_before_discarding = False
    if win.jobs.is_running():
        win.jobs.cancel()


def open_main_window(qtbot, tmp_path: Path):
    """The real main window, shown on the Xvfb screen, with a settings file of the test's own (so the
    user's saved Compute choice cannot reach the tests); cancels a job left running at the end."""
    from PyQt5 import QtCore, QtWidgets

    from MAISIDesktop.main_window import MainWindow
    from MAISISynthLib.jobs import JobRunner

    runner = JobRunner(env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    settings = QtCore.QSettings(str(tmp_path / "maisi-desktop.ini"), QtCore.QSettings.IniFormat)
    win = MainWindow(runs_dir=tmp_path / "runs", runner=runner, settings=settings)
    # pytest-qt closes the window before fixtures end: nothing to ask then (and no job left running).
    qtbot.addWidget(win, before_close_func=_closing_after_test)
    geometry = QtWidgets.QApplication.primaryScreen().availableGeometry()
    win.resize(min(1500, geometry.width()), min(950, geometry.height()))
    win.move(geometry.topLeft())
    win.show()
    qtbot.waitExposed(win)
    yield win
    _closing_after_test(win)


def answer_next_dialog(name: str, button, seen: list | None = None, delay_ms: int = 50) -> list:
    """Press `button` (a QMessageBox.StandardButton) in the next modal dialog named `name`, once it is
    on screen; the dialog's text is appended to the returned list, so a test can check it was asked."""
    from PyQt5 import QtCore, QtWidgets

    seen = [] if seen is None else seen
    tries = [int(20_000 / delay_ms)]  # give up after 20 s: the test then fails on what it checks

    def answer() -> None:
        dialog = QtWidgets.QApplication.activeModalWidget()
        if dialog is None or dialog.objectName() != name or not dialog.isVisible():
            tries[0] -= 1
            if tries[0] > 0:
                QtCore.QTimer.singleShot(delay_ms, answer)
            return
        seen.append(dialog.text() + "\n" + dialog.informativeText())
        dialog.button(button).click()

    QtCore.QTimer.singleShot(delay_ms, answer)
    return seen


@pytest.fixture
def window(qtbot, tmp_path):
    """The main window, closed (and its worker stopped) after the test."""
    yield from open_main_window(qtbot, tmp_path)


@pytest.fixture(scope="session")
def random_model(tmp_path_factory):
    """A real MAISI model directory (demo architecture, random weights, safetensors)."""
    from MAISIEngine.modeldir import random_model_directory

    return random_model_directory(tmp_path_factory.mktemp("model") / "demo-random", "demo", layout="safetensors")
