"""The pieces of `bench/augmentation.py` (the augmentation experiment): liver box, crop, HU window, Dice,
summary over seeds, case loading and argument checks, on arrays whose answers are known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "augmentation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("augmentation_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_box_center_is_the_middle_of_the_liver_and_tumor_bounding_box(bench):
    labels = np.zeros((20, 16, 12), np.uint8)
    labels[4:11, 2:9, 3:6] = 1  # liver: i 4..10, j 2..8, k 3..5
    labels[11, 9, 6] = 26  # a tumor at the liver's edge widens the box
    labels[0, 0, 0] = 3  # spleen does not count
    assert bench.box_center(labels) == (7, 5, 4)  # (4+11)//2, (2+9)//2, (3+6)//2
    assert bench.box_center(np.zeros((9, 8, 7), np.uint8)) == (4, 4, 3)


def test_crop_centred_takes_the_box_and_fills_outside(bench):
    array = np.arange(10 * 8 * 6, dtype=np.int32).reshape(10, 8, 6)
    inside = bench.crop_centred(array, (5, 4, 3), (4, 4, 2), fill=-1)
    np.testing.assert_array_equal(inside, array[3:7, 2:6, 2:4])
    edge = bench.crop_centred(array, (0, 7, 3), (4, 4, 6), fill=-1)
    assert edge.shape == (4, 4, 6)
    np.testing.assert_array_equal(edge[2:, :3], array[0:2, 5:8])  # rows -2, -1 and column 8 fall outside
    assert (edge[:2] == -1).all() and (edge[:, 3] == -1).all()
    assert edge[2, 0, 0] == array[0, 5, 0] == 30
    outside = bench.crop_centred(array, (40, 4, 3), (4, 4, 2), fill=7)
    assert outside.shape == (4, 4, 2) and (outside == 7).all()


def test_window_maps_the_soft_tissue_range_to_unit_interval(bench):
    hu = np.array([-1024, -100, 50, 62, 28, 200, 3000], np.int16)
    np.testing.assert_allclose(bench.window(hu), [0.0, 0.0, 0.5, 162 / 300, 128 / 300, 1.0, 1.0], rtol=0, atol=1e-7)
    assert bench.window(hu).dtype == np.float32


def test_dice_of_known_overlaps(bench):
    truth = np.zeros((4, 4, 4), bool)
    truth[0, 0, :] = True
    truth[1, 0, :2] = True  # 6 voxels
    predicted = np.zeros_like(truth)
    predicted[0, 0, :3] = True
    predicted[3, 3, 3] = True  # 4 voxels, 3 of them true
    assert bench.dice(predicted, truth) == pytest.approx(0.6, abs=1e-12)
    assert bench.dice(truth, truth) == 1.0
    assert bench.dice(np.zeros_like(truth), truth) == 0.0
    assert bench.dice(np.zeros_like(truth), np.zeros_like(truth)) == 1.0


def test_summary_over_seeds(bench):
    result = bench.summary([0.5, 0.7, 0.6])
    assert result["mean"] == pytest.approx(0.6, abs=1e-12)
    assert result["std"] == pytest.approx(0.1, abs=1e-12)  # sample standard deviation (ddof 1)
    assert (result["min"], result["max"]) == (0.5, 0.7)
    assert bench.summary([0.4])["std"] == 0.0


def test_load_cases_cuts_the_liver_box_windows_the_ct_and_keeps_only_the_tumor(bench, tmp_path):
    from MAISIEngine.io.nifti import write_volume

    labels = np.zeros((24, 20, 16), np.uint8)
    labels[6:15, 4:13, 2:10] = 1  # liver i 6..14, j 4..12, k 2..9: box centre (10, 8, 5)
    labels[9:11, 7:9, 5:7] = 26  # 8 tumor voxels
    labels[20:, :, :] = 3  # spleen, outside the box
    ct = np.full(labels.shape, -900, np.int16)
    ct[labels == 1] = 62
    ct[labels == 26] = 28
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    write_volume(tmp_path / "ct.nii.gz", ct, affine, "test CT", np.int16)
    write_volume(tmp_path / "labels.nii.gz", labels, affine, "test labels", np.uint8)
    (case,) = bench.load_cases([{"image": str(tmp_path / "ct.nii.gz"), "label": str(tmp_path / "labels.nii.gz")}],
                               (16, 16, 16))
    assert case["image"].shape == case["label"].shape == (1, 16, 16, 16)
    assert case["label"].sum() == 8
    tumor = np.argwhere(case["label"][0] > 0)
    np.testing.assert_array_equal(tumor.min(0), [7, 7, 8])  # (9, 7, 5) - (10, 8, 5) + (8, 8, 8)
    assert case["image"][0, 7, 7, 8] == pytest.approx(128 / 300)  # tumor, 28 HU
    assert case["image"][0, 8, 8, 5] == pytest.approx(162 / 300)  # liver voxel (10, 8, 2) at 62 HU
    assert case["image"][0, 8, 8, 0] == 0.0  # k = -3, outside the volume: filled with air
    assert case["image"][0, 0, 0, 8] == 0.0  # voxel (2, 0, 5): air at -900 HU, below the window


@pytest.mark.parametrize("argv, message", [
    (["--box", "60", "48", "48"], "multiples of 8"),
    (["--patch", "64"], "no larger than the box"),
    (["--batch-size", "3"], "must be even"),
])
def test_bad_arguments_exit_2_with_one_line(bench, capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        bench.parse_args(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_fit_the_liver_box(bench):
    args = bench.parse_args([])
    assert (args.real, args.synthetic, args.test, args.tumors) == (6, 6, 10, 3)
    assert tuple(args.box) == (64, 48, 48) and args.patch == 32
