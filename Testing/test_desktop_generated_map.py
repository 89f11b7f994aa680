"""The desktop app's "Generated label map" source, in real windows under Xvfb: the sliders drive the
worker's generate-mask job (a tiny mask model with random weights), the map opens as the editable label
map before any CT exists, painting, undo and the modified flag work on it, Generate makes the CT from
it, and a missing mask model is one error dialog.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("vtk")

from PyQt5 import QtCore  # noqa: E402

from desktop_fixtures import LIVER, random_model, window  # noqa: E402,F401  (fixtures)
from maskgen_fixtures import tiny_mask_dir  # noqa: E402,F401  (fixture)
from test_desktop_workflow import HEPATIC_TUMOR, drag  # noqa: E402
from MAISIDesktop.generate_panel import SOURCE_GENERATED  # noqa: E402
from MAISIDesktop.loading import to_canonical  # noqa: E402
from MAISIEngine.io.nifti import read_volume  # noqa: E402

JOB_TIMEOUT_MS = 180_000


def paint_tumor_in_liver(qtbot, window) -> list[tuple[int, int, int]]:
    """Brush a short line of hepatic tumor across the deepest liver voxel on the axial view."""
    from scipy.ndimage import distance_transform_edt

    labels = window.study.labels
    depth = distance_transform_edt(np.pad(labels == LIVER, 1))[1:-1, 1:-1, 1:-1]
    depth[:3], depth[-3:], depth[:, :3], depth[:, -3:] = 0, 0, 0, 0
    i, j, k = (int(v) for v in np.unravel_index(np.argmax(depth), labels.shape))
    assert labels[i, j, k] == LIVER
    panel = window.paint_panel
    panel.set_tool("brush")
    panel.set_label(HEPATIC_TUMOR)
    panel.shape_combo.setCurrentIndex(panel.shape_combo.findData("disk"))
    panel.radius.setValue(1.0)
    window.set_crosshair((i, j, k))
    drag(qtbot, window.views["axial"], (i - 1, j, k), (i + 1, j, k))
    painted = [tuple(int(c) for c in v) for v in np.argwhere(window.study.labels == HEPATIC_TUMOR)]
    assert (i, j, k) in painted
    return painted


def choose_generated_map(window, size=(48, 48, 32), spacing=(2.0, 2.0, 3.0)):
    panel = window.generate_panel
    panel.source_combo.setCurrentText(SOURCE_GENERATED)
    for box, value in zip(panel.size_boxes, size):
        box.setValue(value)
    for box, value in zip(panel.spacing_boxes, spacing):
        box.setValue(value)
    panel.device_combo.setCurrentText("cpu")
    return panel, panel.mask_box


def run_generate_map(qtbot, window) -> list:
    with qtbot.waitSignal(window.jobFinished, timeout=JOB_TIMEOUT_MS) as finished:
        qtbot.mouseClick(window.generate_panel.mask_box.generate_map_button, QtCore.Qt.LeftButton)
    return finished.args


def test_sliders_generate_an_editable_label_map_then_the_ct_is_made_from_it(window, qtbot, tiny_mask_dir,
                                                                            random_model):
    panel, box = choose_generated_map(window)
    assert box.isVisible() and not panel.use_mask_grid.isEnabled()
    assert box.model_combo.currentText() == "mask-demo" and box.model_choice == "mask-demo"  # the shipped one
    assert not box.generate_map_button.isEnabled() or box.model_choice != "folder"
    box.set_model_folder(tiny_mask_dir)
    assert box.generate_map_button.isEnabled(), box.generate_map_button.toolTip()
    # Tick the liver and move its slider with the keyboard: End (1.00), then two pages down (0.80).
    liver = box.sliders["liver"].slider
    assert not liver.isEnabled()
    qtbot.mouseClick(box.use_boxes["liver"], QtCore.Qt.LeftButton)
    assert liver.isEnabled()
    liver.setFocus()
    for key in (QtCore.Qt.Key_End, QtCore.Qt.Key_PageDown, QtCore.Qt.Key_PageDown):
        qtbot.keyClick(liver, key)
    assert box.sliders["liver"].value() == 0.8 and box.sliders["liver"].value_label.text() == "0.80"
    box.seed.setValue(1)
    # Generate is not offered a map before there is one.
    qtbot.mouseClick(panel.generate_button, QtCore.Qt.LeftButton)
    assert window.last_error == ("no label map has been generated yet", "click 'Generate label map' first")
    window.error_dialog.close()

    assert run_generate_map(qtbot, window) == ["succeeded"], window.last_error
    run_dir = next(window.runs_dir.iterdir())
    job = json.loads((run_dir / "job.json").read_text())
    assert job["type"] == "generate-mask" and job["model"] == str(tiny_mask_dir) and job["seed"] == 1
    assert job["anatomy_sizes"] == {"liver": 0.8, "lung tumor": -1.0, "pancreatic tumor": -1.0, "hepatic tumor": -1.0,
                                    "colon cancer primaries": -1.0, "bone lesion": -1.0}
    assert job["size"] == [48, 48, 32] and job["spacing"] == [2.0, 2.0, 3.0]
    # The document's label map is the worker's labels.nii.gz (in the window's RAS voxel order).
    written = to_canonical(read_volume(run_dir / "output" / "labels.nii.gz"))
    study = window.study
    assert study.ct is None and study.shape == (48, 48, 32)
    np.testing.assert_array_equal(study.labels, written.array)
    assert np.allclose(study.affine, written.affine)
    assert LIVER in np.unique(study.labels) and study.name == "generated-map-seed1"
    assert study.provenance["anatomy_sizes"]["liver"] == 0.8
    assert not window.document.modified and window.document.save_path is None

    # Paint a hepatic tumor into it: modified; undo gives the map back; redo paints it again.
    painted = paint_tumor_in_liver(qtbot, window)
    assert window.document.modified and window.isWindowModified()
    window.undo()
    np.testing.assert_array_equal(window.study.labels, written.array)
    assert not window.document.modified
    window.redo()
    assert window.document.modified and all(window.study.labels[v] == HEPATIC_TUMOR for v in painted)
    expected = written.array.copy()
    for v in painted:
        expected[v] = HEPATIC_TUMOR

    # Generate: the CT is made from the painted map.
    panel.set_model(str(random_model))
    panel.steps.setValue(2)
    assert panel.generate_button.isEnabled(), panel.check_label.text() + panel.weights_label.text()
    with qtbot.waitSignal(window.jobFinished, timeout=JOB_TIMEOUT_MS) as finished:
        qtbot.mouseClick(panel.generate_button, QtCore.Qt.LeftButton)
    assert finished.args == ["succeeded"], window.last_error
    entry = window.history.entries[0]
    sent = to_canonical(read_volume(Path(entry.run_dir) / "input_labels.nii.gz"))
    np.testing.assert_array_equal(sent.array, expected)
    assert window.study.ct is not None and window.study.shape == (48, 48, 32)
    assert (window.study.labels == HEPATIC_TUMOR).sum() == len(painted)


def test_a_missing_mask_model_is_one_error_dialog(window, qtbot):
    panel, box = choose_generated_map(window)
    box.model_combo.setCurrentText("mask-ct")  # 48 x 48 x 32 at 2 mm: refused beside the button, by the engine's rule
    assert not box.generate_map_button.isEnabled()
    assert "is not one the mask model accepts (mask model 'mask-ct' takes X = Y in [256, 384, 512]" in \
        box.generate_map_button.toolTip()
    choose_generated_map(window, size=(256, 256, 128), spacing=(1.5, 1.5, 2.0))
    assert box.generate_map_button.isEnabled()
    assert run_generate_map(qtbot, window) == ["failed"]
    message, hint = window.last_error
    assert message == "the mask-generation file mask_generation_autoencoder.pt is not downloaded"
    assert "maisi weights download mask-generation" in hint
    dialog = window.error_dialog
    assert dialog.isVisible() and dialog.objectName() == "errorDialog"
    shown = dialog.text() + dialog.informativeText() + dialog.detailedText()
    assert "Traceback" not in shown and "mask_generation_autoencoder.pt" in dialog.text()
    assert window.study is None and list(window.runs_dir.rglob("*")) == []  # nothing half-made is kept
    assert box.generate_map_button.isEnabled()
    dialog.close()


def test_a_model_folder_without_a_preset_is_refused_before_anything_runs(window, tmp_path):
    panel, box = choose_generated_map(window)
    box.set_model_folder(tmp_path)
    assert not box.generate_map_button.isEnabled()
    assert "holds no mask_preset.json" in box.generate_map_button.toolTip()
