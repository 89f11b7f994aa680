"""The HU-median quality check: bounds from the statistics, organ groups, failures, CLI exit codes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from MAISIEngine.cli import main
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.nifti import write_volume
from MAISIEngine.phantom import REGIONS, make_phantom, write_phantom
from MAISIEngine.quality import MIN_VOXELS, check_quality, hu_bounds

GRID = dict(size=(64, 64, 64), spacing=(6.0, 6.0, 6.0))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(region="chest-abdomen", seed=0, **GRID)


def test_bounds_follow_the_statistics_file():
    low, high = hu_bounds("liver")
    assert low == pytest.approx(-21.596463547885904) and high == pytest.approx(162.0)
    low, high = hu_bounds("lung")
    assert low == pytest.approx(-1088.5583843889117) and high == pytest.approx(-366.9500000000007)
    low, high = hu_bounds("bone")
    assert low == pytest.approx(71.39901958080469) and high == 1000.0
    assert hu_bounds("kidney") == pytest.approx((-130.56375604853028, 267.28163511081016))


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phantom_cts_pass(region, seed):
    p = make_phantom(region=region, seed=seed, **GRID)
    report = check_quality(p.ct, p.labels)
    assert report.passed, report.table()
    organs = {o.organ for o in report.organs}
    assert {"liver", "lung", "bone"} <= organs
    assert "brain" not in organs


def test_liver_at_500_hu_fails_naming_the_liver(phantom):
    ct = phantom.ct.copy()
    ct[phantom.labels == 1] = 500
    report = check_quality(ct, phantom.labels)
    assert not report.passed
    assert report.failed == ("liver",)
    liver = next(o for o in report.organs if o.organ == "liver")
    assert liver.median == 500.0 and not liver.passed
    assert "FAIL" in report.table() and "liver" in report.table().splitlines()[-1]


def test_bone_upper_bound_is_1000(phantom):
    bone = np.isin(phantom.labels, [33, 34, 35, 36, 37, 38] + list(range(63, 87)) + [122])
    ct = phantom.ct.copy()
    ct[bone] = 900  # above sigma_6_high and percentile_99_5, below the bone override
    assert "bone" not in check_quality(ct, phantom.labels).failed
    ct[np.isin(phantom.labels, list(range(33, 128)))] = 1100
    assert "bone" in check_quality(ct, phantom.labels).failed


def test_lung_group_includes_right_lower_lobe():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:8, 2:8, 2:8] = 32
    image = np.full(labels.shape, -100.0, np.float32)  # far too dense for lung
    report = check_quality(image, labels)
    assert [o.organ for o in report.organs] == ["lung"]
    assert report.organs[0].voxels == 216 and report.failed == ("lung",)


def test_tiny_groups_are_skipped_and_empty_labels_pass():
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[0, 0, : MIN_VOXELS - 1] = 3
    report = check_quality(np.zeros(labels.shape, np.float32), labels)
    assert report.organs == () and report.skipped == ("spleen",) and report.passed
    assert "no organ" in report.table()


def test_nan_median_fails_and_report_is_json():
    labels = np.full((6, 6, 6), 1, np.uint8)
    image = np.full(labels.shape, np.nan, np.float32)
    report = check_quality(image, labels)
    assert report.failed == ("liver",)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is False and data["organs"][0]["median"] is None


def test_shape_mismatch_and_float_labels():
    with pytest.raises(MaisiError, match="shape"):
        check_quality(np.zeros((4, 4, 4)), np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(MaisiError, match="non-integer"):
        check_quality(np.zeros((4, 4, 4)), np.full((4, 4, 4), 1.5))
    report = check_quality(np.full((4, 4, 4), 60.0), np.full((4, 4, 4), 1.0))
    assert report.passed and report.organs[0].organ == "liver"


# ---- CLI ------------------------------------------------------------------------------------------------------


@pytest.fixture
def written(tmp_path, phantom):
    write_phantom(phantom, tmp_path)
    return tmp_path


def test_cli_passes_on_phantom(written, capsys):
    assert main(["check", str(written / "ct.nii.gz"), str(written / "mask.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "liver" in out and "PASSED" in out


def test_cli_fails_with_exit_1_and_json(written, phantom, capsys):
    ct = phantom.ct.copy()
    ct[phantom.labels == 1] = 500
    write_volume(written / "bad.nii.gz", ct, phantom.affine, dtype=np.int16)
    assert main(["check", str(written / "bad.nii.gz"), str(written / "mask.nii.gz")]) == 1
    assert "FAILED: liver" in capsys.readouterr().out
    assert main(["check", "--json", str(written / "bad.nii.gz"), str(written / "mask.nii.gz")]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failed"] == ["liver"]


def test_cli_geometry_mismatch_and_missing_file_exit_2(written, phantom, capsys):
    shifted = phantom.affine.copy()
    shifted[0, 3] += 5.0
    write_volume(written / "shifted.nii.gz", phantom.ct, shifted, dtype=np.int16)
    assert main(["check", str(written / "shifted.nii.gz"), str(written / "mask.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "grid" in err and len(err.splitlines()) == 1
    assert main(["check", str(written / "none.nii.gz"), str(written / "mask.nii.gz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (written / "junk.nii.gz").write_bytes(b"not a nifti")
    assert main(["check", str(written / "junk.nii.gz"), str(written / "mask.nii.gz")]) == 2
    assert nib.load(str(written / "mask.nii.gz")).shape == phantom.labels.shape
