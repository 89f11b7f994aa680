"""Tumor inpainting: voxels beyond the margin stay exactly as they were; bad input is refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from MAISIEngine.cli import main
from MAISIEngine.errors import MaisiError
from MAISIEngine.inpaint import InpaintRequest, inpaint
from MAISIEngine.io.nifti import Volume, write_volume
from MAISIEngine.phantom import make_phantom

SPACING = (4.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(size=(64, 64, 64), spacing=SPACING, region="abdomen", seed=3)


def liver_ball(labels: np.ndarray, radius_vox: float = 2.5) -> np.ndarray:
    """A small ball deep inside the liver (the voxel farthest from the liver's edge)."""
    liver = labels == 1
    depth = ndimage.distance_transform_edt(np.pad(liver, 1))[1:-1, 1:-1, 1:-1]
    centre = np.unravel_index(int(np.argmax(depth)), liver.shape)
    grid = np.indices(liver.shape)
    ball = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius_vox**2
    return ball & liver


def request_for(phantom, tumor, model, **changes) -> InpaintRequest:
    base = dict(image=Volume(phantom.ct.copy(), phantom.affine), labels=Volume(phantom.labels.copy(), phantom.affine),
                tumor=tumor, tumor_type="liver", model=str(model), seed=1, steps=3, device="cpu", margin_mm=8.0)
    base.update(changes)
    return InpaintRequest(**base)


def test_outside_the_margin_the_image_is_untouched(phantom, tiny_model_dir) -> None:
    tumor = liver_ball(phantom.labels)
    image, labels, provenance = inpaint(request_for(phantom, tumor, tiny_model_dir))
    distance = ndimage.distance_transform_edt(~tumor, sampling=SPACING)
    far = distance > 8.0
    np.testing.assert_array_equal(image.array[far], phantom.ct[far])
    assert not np.array_equal(image.array[tumor], phantom.ct[tumor])
    assert np.all(labels.array[tumor] == 26)
    np.testing.assert_array_equal(labels.array[~tumor], phantom.labels[~tumor])
    np.testing.assert_array_equal(image.affine, phantom.affine)
    assert image.array.dtype == np.int16
    assert provenance["tumor_voxels"] == int(tumor.sum()) and provenance["method"] == "controlnet-repaint"


def test_the_input_arrays_are_not_modified(phantom, tiny_model_dir) -> None:
    tumor = liver_ball(phantom.labels)
    request = request_for(phantom, tumor, tiny_model_dir)
    before = request.image.array.copy(), request.labels.array.copy()
    inpaint(request)
    np.testing.assert_array_equal(request.image.array, before[0])
    np.testing.assert_array_equal(request.labels.array, before[1])


def test_brush_spill_over_the_organ_edge_is_trimmed(phantom, tiny_model_dir) -> None:
    tumor = liver_ball(phantom.labels, radius_vox=3.0)
    interior = np.zeros_like(tumor)
    interior[4:-4, 4:-4, 4:-4] = True
    candidates = np.argwhere((phantom.labels == 200) & ndimage.binary_dilation(phantom.labels == 1) & interior)
    centre = np.argwhere(tumor).mean(axis=0)
    spill = candidates[np.argmin(((candidates - centre) ** 2).sum(axis=1))]
    tumor[tuple(spill)] = True
    _, labels, _ = inpaint(request_for(phantom, tumor, tiny_model_dir))
    assert labels.array[tuple(spill)] == 200


@pytest.mark.parametrize("case,expected", [
    ("outside", "lie outside the liver .label 1., in right kidney"),
    ("border", "touches the border"),
    ("empty", "tumor mask is empty"),
    ("grid", "different grids"),
    ("type", "unknown tumor type"),
])
def test_bad_input(phantom, tiny_model_dir, case: str, expected: str) -> None:
    tumor = liver_ball(phantom.labels)
    changes = {}
    if case == "outside":
        tumor = liver_ball(np.where(phantom.labels == 5, 1, 0))  # a ball deep in the right kidney
    elif case == "border":
        tumor = np.zeros_like(tumor)
        tumor[0, 30, 30] = True
    elif case == "empty":
        tumor = np.zeros_like(tumor)
    elif case == "grid":
        shifted = phantom.affine.copy()
        shifted[0, 3] += 5.0
        changes["labels"] = Volume(phantom.labels.copy(), shifted)
    else:
        changes["tumor_type"] = "brain"
    with pytest.raises(MaisiError, match=expected):
        inpaint(request_for(phantom, tumor, tiny_model_dir, **changes))


def test_model_not_trained_for_the_tumor_type(phantom, tiny_model_dir, tmp_path) -> None:
    preset = json.loads((tiny_model_dir / "preset.json").read_text())
    preset["tumor_types"] = ["lung"]
    limited = tmp_path / "limited"
    limited.mkdir()
    for item in tiny_model_dir.iterdir():
        (limited / item.name).symlink_to(item)
    (limited / "preset.json").unlink()
    (limited / "preset.json").write_text(json.dumps(preset))
    with pytest.raises(MaisiError, match="was not trained for liver tumors"):
        inpaint(request_for(phantom, liver_ball(phantom.labels), limited))


def test_cli_writes_outputs_and_refuses_a_missing_inpaint_controlnet(phantom, tiny_model_dir, tmp_path, capsys) -> None:
    image = write_volume(tmp_path / "ct.nii.gz", phantom.ct, phantom.affine, dtype=np.int16)
    labels = write_volume(tmp_path / "labels.nii.gz", phantom.labels, phantom.affine, dtype=np.uint8)
    tumor = write_volume(tmp_path / "tumor.nii.gz", liver_ball(phantom.labels).astype(np.uint8), phantom.affine)
    out = tmp_path / "out"
    args = ["inpaint", "--image", image, "--labels", labels, "--tumor", tumor, "--type", "liver", "--model",
            tiny_model_dir, "--steps", "2", "--device", "cpu", "-o", out]
    assert main([str(a) for a in args]) == 0
    written = nib.load(str(out / "image.nii.gz"))
    assert written.header["descrip"].tobytes().startswith(b"SYNTHETIC")
    assert json.loads((out / "provenance.json").read_text())["derived_from_real_image"] is True
    assert main([str(a) for a in args[:-2]] + ["--method", "inpaint-controlnet", "-o", str(tmp_path / "o2")]) == 2
    assert "has no inpainting ControlNet" in capsys.readouterr().err


@pytest.mark.parametrize("box,shape,expected", [
    ((slice(8, 72),) * 3, (96, 98, 96), ((0, 96), (0, 98), (0, 96))),  # whole CT up to 256 voxels per axis
    ((slice(300, 364), slice(0, 64), slice(444, 508)), (512, 512, 510), ((204, 460), (0, 256), (252, 508))),
])
def test_the_vae_sees_the_whole_ct_or_a_window_around_the_crop(box, shape, expected) -> None:
    from MAISIEngine.inpaint import vae_view

    view = vae_view(box, shape, 4)
    assert [(v.start, v.stop) for v in view] == [tuple(e) for e in expected]
    for v, b in zip(view, box):
        assert v.start % 4 == 0 and v.start <= b.start and b.stop <= v.stop
