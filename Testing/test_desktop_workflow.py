"""The desktop app's workflow guarantees, in real windows under Xvfb: nothing is lost without asking
(edits, a running job, files on disk), the job status stays on screen, the views follow one linked
cursor, the eraser gives back what painting covered, and a run's result keeps the user's place.

Questions are answered by pressing the dialog's real buttons once it is on screen.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("vtk")

from PyQt5 import QtCore, QtGui, QtWidgets  # noqa: E402

from desktop_fixtures import (  # noqa: E402
    BODY, LIVER, SPLEEN, answer_next_dialog, interior_voxel, pixel_at, torso_ct, torso_labels,
    write_nifti, random_model, window,  # noqa: F401  (fixtures)
)
from MAISIEngine.errors import MaisiError  # noqa: E402
from MAISIDesktop.colours import colour_distance, colour_of, colour_table  # noqa: E402
from MAISIDesktop.overlay import grey_of  # noqa: E402

Button = QtWidgets.QMessageBox
HEPATIC_TUMOR = 26
JOB_TIMEOUT_MS = 180_000


@pytest.fixture
def torso_files(tmp_path):
    labels = torso_labels()
    return {
        "labels": write_nifti(tmp_path / "torso_labels.nii.gz", labels),
        "ct": write_nifti(tmp_path / "torso_ct.nii.gz", torso_ct(labels)),
        "other": write_nifti(tmp_path / "other_labels.nii.gz", torso_labels((24, 24, 20))),
        "array": labels,
    }


def close_enough(actual, expected, tolerance: int = 3) -> bool:
    return int(np.abs(np.asarray(actual, dtype=int) - np.asarray(expected, dtype=int)).max()) <= tolerance


def drag(qtbot, view, start_ijk, end_ijk, steps: int = 6, modifiers=QtCore.Qt.NoModifier) -> None:
    """Press, move and release the left button as Qt events delivered to the view's canvas."""
    start = QtCore.QPoint(*view.display_of(start_ijk))
    end = QtCore.QPoint(*view.display_of(end_ijk))
    qtbot.mousePress(view.canvas, QtCore.Qt.LeftButton, modifiers, pos=start)
    for n in range(1, steps + 1):
        point = start + (end - start) * (n / steps)
        move = QtGui.QMouseEvent(QtCore.QEvent.MouseMove, QtCore.QPointF(point), QtCore.Qt.NoButton,
                                 QtCore.Qt.LeftButton, modifiers)
        QtWidgets.QApplication.sendEvent(view.canvas, move)
    qtbot.mouseRelease(view.canvas, QtCore.Qt.LeftButton, modifiers, pos=end)


def paint_liver_tumor(qtbot, window, labels) -> list[tuple[int, int, int]]:
    """Brush a short line of hepatic tumor inside the liver on the axial view; returns the voxels."""
    panel = window.paint_panel
    panel.set_tool("brush")
    panel.set_label(HEPATIC_TUMOR)
    panel.shape_combo.setCurrentIndex(panel.shape_combo.findData("disk"))
    panel.radius.setValue(1.0)
    i, j, k = interior_voxel(labels, LIVER)
    window.set_crosshair((i, j, k))
    drag(qtbot, window.views["axial"], (i - 1, j, k), (i + 1, j, k))
    painted = [tuple(v) for v in np.argwhere(window.study.labels == HEPATIC_TUMOR)]
    assert painted, "the brush painted nothing"
    return painted


# --------------------------------------------------------------------------------------------------
# 1. Nothing lost: unsaved edits, Save / Save As, a running job
# --------------------------------------------------------------------------------------------------


def test_paint_then_open_another_file_asks_and_cancel_keeps_the_edits(window, qtbot, torso_files):
    labels = torso_files["array"]
    assert window.load_label_file(torso_files["labels"])
    assert not window.document.modified and not window.isWindowModified()
    painted = paint_liver_tumor(qtbot, window, labels)
    assert window.document.modified and window.isWindowModified()
    edited = window.study.labels.copy()
    document = window.document

    asked = answer_next_dialog("unsavedDialog", Button.Cancel)
    assert not window.load_label_file(torso_files["other"])
    assert asked and "not saved" in asked[0] and "torso_labels" in asked[0]
    assert window.document is document and np.array_equal(window.study.labels, edited)
    assert window.undo_action.isEnabled()  # the history is still there
    assert all(window.study.labels[v] == HEPATIC_TUMOR for v in painted)

    asked = answer_next_dialog("unsavedDialog", Button.Discard)
    assert window.load_label_file(torso_files["other"])
    assert asked and window.study.shape == (24, 24, 20) and not window.document.modified
    # The discarded edits never reached the file.
    on_disk = np.asarray(nib.load(str(torso_files["labels"])).dataobj)
    assert not (on_disk == HEPATIC_TUMOR).any()


def test_answering_save_writes_the_edits_to_the_opened_file_then_opens(window, qtbot, torso_files):
    labels = torso_files["array"]
    assert window.load_label_file(torso_files["labels"])
    painted = paint_liver_tumor(qtbot, window, labels)
    asked = answer_next_dialog("unsavedDialog", Button.Save)
    assert window.load_label_file(torso_files["other"])
    assert asked
    saved = nib.load(str(torso_files["labels"]))
    data = np.asarray(saved.dataobj)
    assert saved.get_data_dtype() == np.uint8
    assert sorted(map(tuple, np.argwhere(data == HEPATIC_TUMOR))) == sorted(painted)
    assert np.allclose(saved.affine, np.diag([4.0, 4.0, 5.0, 1.0]))


def test_save_as_writes_maisi_ids_and_tracks_the_modified_flag(window, qtbot, tmp_path, torso_files):
    assert not window.save_action.isEnabled() and not window.save_as_action.isEnabled()
    assert window.load_ct_file(torso_files["ct"], torso_files["labels"])
    assert window.document.save_path is None  # labels that came with a CT: Save asks where
    assert window.save_action.isEnabled()
    paint_liver_tumor(qtbot, window, torso_files["array"])
    assert window.document.modified
    saved = window.save_labels_to(tmp_path / "edited")  # the suffix is added
    assert saved == tmp_path / "edited.nii.gz"
    image = nib.load(str(saved))
    assert np.array_equal(np.asarray(image.dataobj), window.study.labels)
    assert image.get_data_dtype() == np.uint8 and np.allclose(image.affine, window.study.affine)
    assert not window.document.modified and window.document.save_path == saved
    window.undo()
    assert window.document.modified  # back before the saved state
    window.redo()
    assert not window.document.modified


def test_closing_the_window_with_unsaved_edits_asks_and_cancel_keeps_it_open(window, qtbot, torso_files):
    assert window.load_label_file(torso_files["labels"])
    paint_liver_tumor(qtbot, window, torso_files["array"])
    asked = answer_next_dialog("unsavedDialog", Button.Cancel)
    window.close()
    assert asked and window.isVisible()


def press_ctrl_q(qtbot, window) -> None:
    """A real Ctrl+Q key press on the focused widget of the active main window.

    Qt matches an application shortcut only while one of its windows is active (Xvfb has no window
    manager to activate a newly shown window), so the window is activated first, as a click would.
    """
    window.activateWindow()
    window.raise_()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    target = QtWidgets.QApplication.focusWidget() or window
    assert target.window() is window
    qtbot.keyClick(target, QtCore.Qt.Key_Q, QtCore.Qt.ControlModifier)


def test_quit_during_a_run_asks_and_cancel_keeps_the_run(window, qtbot, tmp_path, random_model):
    mask = write_nifti(tmp_path / "mask32.nii.gz", torso_labels((32, 32, 32)), np.diag([8.0, 8.0, 8.0, 1.0]))
    assert window.load_label_file(mask)
    panel = window.generate_panel
    panel.set_model(str(random_model))
    panel.steps.setValue(400)
    panel.device_combo.setCurrentText("cpu")
    assert window.start_generate()
    job = window.jobs.job
    qtbot.waitUntil(lambda: "Sampling" in panel.stage_label.text(), timeout=JOB_TIMEOUT_MS)
    quit_action = window.findChild(QtWidgets.QAction, "quit")
    assert quit_action.shortcut().toString(QtGui.QKeySequence.PortableText) == "Ctrl+Q"
    triggered = []
    quit_action.triggered.connect(lambda _checked=False: triggered.append(True))

    asked = answer_next_dialog("runningJobDialog", Button.Cancel)
    press_ctrl_q(qtbot, window)  # the key press itself, through Qt's shortcut map
    assert triggered == [True]
    assert asked and "still running" in asked[0]
    assert window.isVisible() and job.is_running()
    # The run goes on and keeps reporting.
    progress = panel.progress.value()
    qtbot.waitUntil(lambda: panel.progress.value() > progress, timeout=60_000)

    asked = answer_next_dialog("runningJobDialog", Button.Discard)
    press_ctrl_q(qtbot, window)
    assert triggered == [True, True]
    assert asked and not window.isVisible()
    assert job.process.poll() is not None
    assert not window.runs_dir.exists() or list(window.runs_dir.rglob("*")) == []


# --------------------------------------------------------------------------------------------------
# 2. Status area always visible
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1280, 800), (1366, 768)])
def test_progress_and_cancel_are_inside_the_window_and_the_panel_needs_no_horizontal_scroll(window, qtbot, size):
    window.resize(*size)
    qtbot.waitUntil(lambda: window.size() == QtCore.QSize(*size), timeout=5000)
    QtWidgets.QApplication.processEvents()
    rect = window.rect()
    panel = window.generate_panel
    for widget in (panel.progress, panel.stage_label, panel.cancel_button, panel.generate_button,
                   panel.inpaint_button):
        assert widget.isVisible()
        top_left = widget.mapTo(window, QtCore.QPoint(0, 0))
        box = QtCore.QRect(top_left, widget.size())
        assert rect.contains(box), (widget.objectName(), box, rect)
        assert widget.height() >= 15
    scroll = window.generate_scroll
    assert not scroll.horizontalScrollBar().isVisible()
    assert panel.width() <= scroll.viewport().width()
    assert panel.minimumSizeHint().width() <= scroll.viewport().width()


# --------------------------------------------------------------------------------------------------
# 3. Linked cursor, orientation, position in mm, window/level
# --------------------------------------------------------------------------------------------------


def wheel(view, steps: int) -> None:
    point = QtCore.QPointF(view.canvas.width() / 2, view.canvas.height() / 2)
    event = QtGui.QWheelEvent(point, QtCore.QPointF(view.canvas.mapToGlobal(point.toPoint())), QtCore.QPoint(0, 0),
                              QtCore.QPoint(0, 120 * steps), QtCore.Qt.NoButton, QtCore.Qt.NoModifier,
                              QtCore.Qt.NoScrollPhase, False)
    QtWidgets.QApplication.sendEvent(view.canvas, event)


def crosshair_points(view) -> list[np.ndarray]:
    """The end points (display-frame mm) of the view's two crosshair lines."""
    return [np.asarray(view._crosshair_points.GetPoint(n)) for n in range(4)]


def test_scrolling_axial_moves_the_cursor_in_every_view(window, qtbot, torso_files):
    assert window.load_ct_file(torso_files["ct"], torso_files["labels"])
    axial, coronal, sagittal = (window.views[n] for n in ("axial", "coronal", "sagittal"))
    window.set_crosshair((30, 12, 16))
    wheel(axial, -6)
    assert axial.slice_index == 10
    assert tuple(window.crosshair) == (30, 12, 10)
    spacing_z = 5.0
    for view in (coronal, sagittal):
        assert view.crosshair[2] == 10
        # The horizontal crosshair line of the coronal and sagittal views lies at the new z (mm).
        horizontal = [p for p in crosshair_points(view) if round(p[2], 3) == round(10 * spacing_z, 3)]
        assert len(horizontal) == 2
    # The line is drawn there: in the coronal view, the crosshair colour on the row of z = 10.
    window.set_overlay_opacity(0.0)
    window.set_window_level(1.0, 5000.0)  # CT all black, so only the crosshair shows
    image = coronal.capture()
    col, row = coronal.display_of((5, 12, 10))
    band = image[row - 1:row + 2, col]
    assert (band[:, 0] > 120).any() and (band[:, 2] < 80).all(), band
    col_off, row_off = coronal.display_of((5, 12, 16))
    assert image[row_off - 1:row_off + 2, col_off].max() < 40  # not at the old z
    # Keyboard: Down in the coronal view moves j, and the axial view's line follows.
    coronal.canvas.setFocus()
    qtbot.keyClick(coronal.canvas, QtCore.Qt.Key_Down)
    assert tuple(window.crosshair) == (30, 11, 10) and axial.crosshair[1] == 11
    # Right in the axial view moves the cursor towards the screen's right: the patient's left (-i).
    axial.canvas.setFocus()
    qtbot.keyClick(axial.canvas, QtCore.Qt.Key_Right)
    assert tuple(window.crosshair) == (29, 11, 10) and sagittal.slice_index == 29 and coronal.crosshair[0] == 29
    qtbot.keyClick(axial.canvas, QtCore.Qt.Key_Left)
    assert tuple(window.crosshair) == (30, 11, 10)
    # Position in mm and voxel, in the view header and the status bar.
    world = window.study.world_of((30, 11, 10))
    assert axial.position_label.text().startswith(f"S {world[2]:.1f} mm") and "k 10 / 31" in axial.position_label.text()
    assert f"S {world[2]:.1f} mm" in window.hover_label.text() and "voxel (30, 11, 10)" in window.hover_label.text()


def test_orientation_letters_in_every_view_are_radiological(window, torso_files):
    assert window.load_label_file(torso_files["labels"])
    expected = {
        "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
        "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
        "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
    }
    for name, letters in expected.items():
        view = window.views[name]
        assert view.letters == letters
        assert {edge: actor.GetInput() for edge, actor in view.letter_actors.items()} == letters
        assert all(actor.GetVisibility() for actor in view.letter_actors.values())
        # The letter is rendered: yellow pixels near the middle of the left edge.
        image = view.capture().astype(int)
        height = image.shape[0]
        strip = image[height // 2 - 15:height // 2 + 15, :20]
        yellow = (strip[..., 0] > 180) & (strip[..., 1] > 150) & (strip[..., 2] < 120)
        assert yellow.sum() >= 5, name


def test_window_level_typed_dragged_and_from_slicer_presets(window, qtbot, torso_files):
    labels = torso_files["array"]
    assert window.load_ct_file(torso_files["ct"], torso_files["labels"])
    window.set_crosshair_visible(False)
    window.set_overlay_opacity(0.0)
    axial = window.views["axial"]
    ijk = interior_voxel(labels, LIVER)
    window.set_crosshair(ijk)
    window.window_box.setValue(200.0)
    window.level_box.setValue(100.0)
    assert window.window_level == (200.0, 100.0) and window.preset_combo.currentText() == "Custom"
    grey = grey_of(60.0, 200.0, 100.0)
    assert close_enough(pixel_at(axial, ijk), (grey, grey, grey))
    # Ctrl + left drag: 25 pixels right widens the window by 100 HU, 10 up raises the level by 20 HU.
    start = QtCore.QPoint(20, 20)
    qtbot.mousePress(axial.canvas, QtCore.Qt.LeftButton, QtCore.Qt.ControlModifier, pos=start)
    for point in (QtCore.QPoint(30, 16), QtCore.QPoint(45, 10)):
        move = QtGui.QMouseEvent(QtCore.QEvent.MouseMove, QtCore.QPointF(point), QtCore.Qt.NoButton,
                                 QtCore.Qt.LeftButton, QtCore.Qt.ControlModifier)
        QtWidgets.QApplication.sendEvent(axial.canvas, move)
    qtbot.mouseRelease(axial.canvas, QtCore.Qt.LeftButton, QtCore.Qt.ControlModifier, pos=QtCore.QPoint(45, 10))
    assert window.window_level == (300.0, 120.0)
    assert (window.window_box.value(), window.level_box.value()) == (300.0, 120.0)
    grey = grey_of(60.0, 300.0, 120.0)
    assert close_enough(pixel_at(axial, ijk), (grey, grey, grey))
    assert window.study.labels[ijk] == LIVER  # the drag did not paint or move the cursor
    # Slicer's CT presets.
    window.preset_combo.setCurrentText("CT brain")
    window.set_window_preset("CT brain")
    assert window.window_level == (100.0, 50.0) and window.window_box.value() == 100.0
    assert [window.preset_combo.itemText(n) for n in range(5)] == [
        "CT abdomen", "CT bone", "CT brain", "CT lung", "CT air"]


# --------------------------------------------------------------------------------------------------
# 4. Eraser, per-label opacity, colours
# --------------------------------------------------------------------------------------------------


def test_erasing_a_tumor_restores_the_liver(window, qtbot, torso_files):
    labels = torso_files["array"]
    assert window.load_label_file(torso_files["labels"])
    original = window.study.labels.copy()
    painted = paint_liver_tumor(qtbot, window, labels)
    assert all(original[v] == LIVER for v in painted)
    panel = window.paint_panel
    panel.set_tool("eraser")  # same 1 mm disk: many dabs land on each voxel of the line, each erased once
    i, j, k = interior_voxel(labels, LIVER)
    drag(qtbot, window.views["axial"], (i - 1, j, k), (i + 1, j, k), steps=12)
    assert np.array_equal(window.study.labels, original)  # liver again: no hole, no body
    assert not (window.study.labels == HEPATIC_TUMOR).any()
    window.undo()
    assert all(window.study.labels[v] == HEPATIC_TUMOR for v in painted)
    window.redo()
    assert np.array_equal(window.study.labels, original)
    # Erasing the liver itself leaves body tissue, and erasing that leaves background.
    panel.radius.setValue(1.0)
    centre = QtCore.QPoint(*window.views["axial"].display_of((i, j, k)))
    qtbot.mouseClick(window.views["axial"].canvas, QtCore.Qt.LeftButton, pos=centre)
    assert window.study.labels[i, j, k] == BODY
    qtbot.mouseClick(window.views["axial"].canvas, QtCore.Qt.LeftButton, pos=centre)
    assert window.study.labels[i, j, k] == 0


def test_per_label_opacity_changes_only_that_label(window, torso_files):
    labels = torso_files["array"]
    assert window.load_label_file(torso_files["labels"])
    window.set_crosshair_visible(False)
    window.set_overlay_opacity(1.0)
    axial = window.views["axial"]
    liver = interior_voxel(labels, LIVER)
    window.set_crosshair(liver)
    spleen = interior_voxel(labels, SPLEEN)
    spleen = (spleen[0], spleen[1], liver[2])
    assert labels[spleen] == SPLEEN
    window.legend.select(LIVER)
    window.legend.opacity_slider.setValue(40)
    assert window.legend.opacities == {LIVER: 0.4}
    assert window.legend.item_of(LIVER).text(3) == "40 %"
    assert close_enough(pixel_at(axial, liver), np.asarray(colour_of(LIVER)) * 0.4)
    assert close_enough(pixel_at(axial, spleen), colour_of(SPLEEN))


def test_label_colours_are_distinct_and_slicer_colours_are_kept():
    table = colour_table()
    ids = [i for i in table if i != 0]
    assert len(ids) == 125  # 124 structures and tumors, and body
    closest = min(colour_distance(table[a], table[b]) for a, b in itertools.combinations(ids, 2))
    assert closest >= 15.0, closest
    # Slicer's terminology colours where Slicer has them (liver, spleen, aorta, IVC, brain).
    assert table[1] == (221, 130, 101) and table[3] == (157, 108, 162)
    assert table[6] == (224, 97, 76) and table[7] == (0, 151, 206) and table[22] == (250, 250, 225)


# --------------------------------------------------------------------------------------------------
# 5. Inpaint type, views and history after a run, before/after
# --------------------------------------------------------------------------------------------------


def test_inpaint_type_follows_the_painted_tumor_label(window, qtbot, torso_files):
    assert window.load_ct_file(torso_files["ct"], torso_files["labels"])
    panel = window.generate_panel
    assert panel.tumor_type.currentData() == "lung"
    paint_liver_tumor(qtbot, window, torso_files["array"])
    assert panel.tumor_type.currentData() == "liver" and panel.tumor_label == HEPATIC_TUMOR
    # A file that already holds a bone lesion opens with the bone type chosen.
    labels = torso_files["array"].copy()
    labels[20, 10, 10] = 128
    path = write_nifti(torso_files["labels"].parent / "with_lesion.nii.gz", labels)
    answer_next_dialog("unsavedDialog", Button.Discard)
    assert window.load_label_file(path)
    assert panel.tumor_type.currentData() == "bone"


def test_a_result_keeps_the_place_the_history_and_offers_before_after(window, qtbot, tmp_path, torso_files):
    labels = torso_files["array"]
    assert window.load_ct_file(torso_files["ct"], torso_files["labels"])
    painted = paint_liver_tumor(qtbot, window, labels)
    axial = window.views["axial"]
    window.set_crosshair((25, 18, 12))
    camera = axial.renderer.GetActiveCamera()
    camera.SetParallelScale(camera.GetParallelScale() * 0.5)  # the user zoomed in
    zoom = camera.GetParallelScale()
    before_ct = window.study.ct.copy()
    # The worker's result files of an inpainting run on this grid: the tumor now 100 HU brighter.
    output = tmp_path / "runs" / "20260101-000000-inpaint-1" / "output"
    output.mkdir(parents=True)
    after_ct = before_ct.copy()
    tumor = window.study.labels == HEPATIC_TUMOR
    after_ct[tumor] += 100.0
    result = {"image": str(write_nifti(output / "image.nii.gz", after_ct)),
              "labels": str(write_nifti(output / "labels.nii.gz", window.study.labels.copy())),
              "output_dir": str(output), "provenance_data": {"synthetic": True, "seed": 7}}
    window._job_spec = {"seed": 7}
    window._job_document = window.document
    assert window.open_result("inpaint", result)
    # Named after the input and the run, not the run folder.
    assert window.study.name == "torso_ct_inpainted_seed7"
    assert window.windowTitle().startswith("torso_ct_inpainted_seed7")
    # Same place: cursor, slices and zoom.
    assert tuple(window.crosshair) == (25, 18, 12) and axial.slice_index == 12
    assert camera is axial.renderer.GetActiveCamera() and abs(camera.GetParallelScale() - zoom) < 1e-6
    # The history went with the labels: undo removes the painted tumor from the result's labels.
    assert window.undo_action.isEnabled()
    window.undo()
    assert not (window.study.labels == HEPATIC_TUMOR).any()
    window.redo()
    # Before / after.
    window.set_crosshair_visible(False)
    window.set_overlay_opacity(0.0)
    window.set_window_level(400.0, 40.0)
    voxel = painted[0]
    window.set_crosshair(voxel)
    assert window.before_after_button.isEnabled()
    after = grey_of(60.0 + 100.0, 400.0, 40.0)
    before = grey_of(60.0, 400.0, 40.0)
    assert close_enough(pixel_at(axial, voxel), (after,) * 3, 4)
    window.before_after_button.setChecked(True)
    assert window.before_after_action.isChecked()
    assert close_enough(pixel_at(axial, voxel), (before,) * 3, 4)
    window.before_after_action.trigger()
    assert close_enough(pixel_at(axial, voxel), (after,) * 3, 4)


# --------------------------------------------------------------------------------------------------
# 6. Export, actions, help, readout, messages
# --------------------------------------------------------------------------------------------------


def test_export_writes_provenance_and_never_overwrites_silently(window, qtbot, tmp_path, torso_files):
    assert not window.export_nifti_action.isEnabled() and not window.dicom_action.isEnabled()
    window.ask_export_nifti()  # nothing loaded: says so, without asking for a folder first
    assert window.last_error[0] == "there is nothing to export"
    window.error_dialog.close()
    assert window.load_ct_file(torso_files["ct"], torso_files["labels"])
    assert window.export_nifti_action.isEnabled() and window.dicom_action.isEnabled()
    out = tmp_path / "export"
    paths = window.export_nifti(out)
    assert [p.name for p in paths] == ["torso_ct_image.nii.gz", "torso_ct_labels.nii.gz", "torso_ct_provenance.json"]
    record = json.loads(paths[2].read_text())
    for path in paths[:2]:
        assert record["files"][path.name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["name"] == "torso_ct" and record["sources"]["ct"] == str(torso_files["ct"])
    assert record["grid"]["shape"] == [40, 40, 32] and record["grid"]["spacing_mm"] == [4.0, 4.0, 5.0]
    contents = {p: p.read_bytes() for p in paths}

    window.study.labels[20, 20, 16] = HEPATIC_TUMOR
    with pytest.raises(MaisiError, match="already exist"):
        window.export_nifti(out)
    asked = answer_next_dialog("overwriteDialog", Button.No)
    assert window.export_nifti_into(out) is None
    assert asked and "already exist" in asked[0]
    assert {p: p.read_bytes() for p in paths} == contents  # untouched
    asked = answer_next_dialog("overwriteDialog", Button.Yes)
    assert window.export_nifti_into(out) == paths
    assert np.asarray(nib.load(str(paths[1])).dataobj)[20, 20, 16] == HEPATIC_TUMOR


def test_dicom_export_into_a_folder_with_files_asks_first(window, tmp_path, torso_files):
    pytest.importorskip("highdicom")
    assert window.load_ct_file(torso_files["ct"], torso_files["labels"])
    folder = tmp_path / "dicom"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    asked = answer_next_dialog("overwriteDialog", Button.No)
    assert window.export_dicom_into(folder) is None
    assert asked and "not empty" in asked[0]
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    answer_next_dialog("overwriteDialog", Button.Yes)
    assert window.export_dicom_into(folder) is not None
    names = sorted(p.name for p in folder.iterdir())
    assert "SEG.dcm" in names and len([n for n in names if n.startswith("CT_")]) == window.study.shape[2]
    assert (folder / "notes.txt").read_text() == "mine"


def test_help_menu_lists_the_shortcuts_and_links_the_guide(window):
    menus = {a.text(): a.menu() for a in window.menuBar().actions()}
    help_items = [a.text() for a in menus["&Help"].actions()]
    assert help_items == ["&Keyboard shortcuts", "User &guide", "&About MAISI Desktop"]
    dialog = window.show_shortcuts()
    table = dialog.findChild(QtWidgets.QTableWidget, "shortcutsTable")
    rows = {table.item(r, 1).text(): table.item(r, 0).text() for r in range(table.rowCount())}
    assert rows["Save label map"] == QtGui.QKeySequence("Ctrl+S").toString(QtGui.QKeySequence.NativeText)
    assert rows["Quit"] == QtGui.QKeySequence("Ctrl+Q").toString(QtGui.QKeySequence.NativeText)
    assert rows["Undo"] == QtGui.QKeySequence("Ctrl+Z").toString(QtGui.QKeySequence.NativeText)
    assert "Window (left-right) and level (up-down)" in rows
    labels = [w.text() for w in dialog.findChildren(QtWidgets.QLabel)]
    assert any("docs/desktop.md" in text for text in labels)
    dialog.close()


def test_readout_follows_loading_and_painting(window, qtbot, torso_files):
    labels = torso_files["array"]
    assert window.load_ct_file(torso_files["ct"], torso_files["labels"])
    centre = tuple(int(v) for v in window.crosshair)
    value = int(labels[centre])
    assert f"voxel {centre}" in window.hover_label.text() and f"({value})" in window.hover_label.text()
    ijk = interior_voxel(labels, LIVER)
    window.set_crosshair(ijk)
    assert "liver (1)" in window.hover_label.text() and "60 HU" in window.hover_label.text()
    window.paint_panel.set_label(HEPATIC_TUMOR)
    window.paint_panel.tumor_diameter.setValue(12.0)
    assert window.place_tumor(ijk)
    assert "hepatic tumor (26)" in window.hover_label.text()
    window.undo()
    assert "liver (1)" in window.hover_label.text()


def test_damaged_gzip_and_a_ct_opened_as_labels_get_their_own_messages(window, tmp_path, torso_files):
    whole = torso_files["ct"].read_bytes()
    cut = tmp_path / "cut_short.nii.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    assert not window.load_label_file(cut)
    message, hint = window.last_error
    assert "damaged gzip" in message and "cut_short.nii.gz" in message
    assert "give a .nii" not in hint and "again" in hint
    window.error_dialog.close()
    assert not window.load_label_file(torso_files["ct"])
    message, hint = window.last_error
    assert "looks like a CT" in message and "-1000" in message
    assert "Open CT" in hint
    assert window.study is None and window.start_screen.isVisible()


def test_eraser_peels_one_layer_per_stroke_and_undo_restores_the_layers():
    from MAISIDesktop import painting

    labels = np.asfortranarray(np.full((5, 5, 5), BODY, dtype=np.uint8))
    beneath = painting.initial_beneath(labels)
    stack = painting.UndoStack()
    centre = (2, 2, 2)

    def stroke(label: int, erase: bool = False) -> None:
        one = painting.Stroke(labels, (1.0, 1.0, 1.0), label, 0.5, erase=erase, beneath=beneath,
                              keep_tumor_in_host=False)
        one.dab(centre)
        one.dab(centre)  # a second dab on the same voxel in the same stroke
        stack.push(one.finish())

    stroke(LIVER)
    stroke(HEPATIC_TUMOR)
    assert labels[centre] == HEPATIC_TUMOR and beneath[centre] == LIVER
    peeled = []
    for _ in range(3):
        stroke(0, erase=True)
        peeled.append(int(labels[centre]))
    assert peeled == [LIVER, BODY, 0]
    for expected in (BODY, LIVER, HEPATIC_TUMOR):
        stack.undo(labels, beneath)
        assert labels[centre] == expected
    stroke(0, erase=True)
    assert labels[centre] == LIVER  # the layers came back with undo
