"""`maisi generate`: geometry kept, seeds reproducible, and every kind of bad input gets one clear line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import block_mask, oblique_affine
from MAISIEngine.cli import main
from MAISIEngine.io.nifti import write_volume


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def oblique_mask(tmp_path: Path) -> Path:
    return write_volume(tmp_path / "mask.nii.gz", block_mask((32, 32, 32)), oblique_affine(), dtype=np.uint8)


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_output_sits_on_the_mask_grid_and_is_marked_synthetic(tiny_model_dir, oblique_mask, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["generate", "--model", tiny_model_dir, "--mask", oblique_mask, "--seed", 7, "-o", out], capsys)
    assert code == 0
    image, labels, mask = (nib.load(str(p)) for p in (out / "image.nii.gz", out / "labels.nii.gz", oblique_mask))
    np.testing.assert_allclose(image.affine, mask.affine, atol=1e-5)
    np.testing.assert_allclose(labels.affine, mask.affine, atol=1e-5)
    assert image.get_data_dtype() == np.int16 and labels.get_data_dtype() == np.uint8
    hu = np.asarray(image.dataobj)
    ids = np.asarray(labels.dataobj)
    np.testing.assert_array_equal(ids, block_mask((32, 32, 32)))
    assert hu.min() >= -1000 and hu.max() <= 1000
    assert np.all(hu[ids == 0] == -1000)
    assert image.header["descrip"].tobytes().startswith(b"SYNTHETIC")
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["synthetic"] is True and provenance["seed"] == 7 and provenance["steps"] == 3
    assert provenance["size"] == [32, 32, 32]
    assert set(provenance["weights"]) == {"autoencoder", "diffusion_unet", "controlnet"}
    assert all(len(w["sha256"]) == 64 for w in provenance["weights"].values())
    assert json.loads(stdout)["image"] == str(out / "image.nii.gz")


def test_same_seed_gives_identical_files_and_another_seed_differs(tiny_model_dir, oblique_mask, tmp_path, capsys) -> None:
    outs = [tmp_path / name for name in ("a", "b", "c")]
    for out, seed in zip(outs, (5, 5, 6)):
        assert run_cli(["generate", "--model", tiny_model_dir, "--mask", oblique_mask, "--seed", seed, "-o", out], capsys)[0] == 0
    assert sha256(outs[0] / "image.nii.gz") == sha256(outs[1] / "image.nii.gz")
    assert sha256(outs[0] / "labels.nii.gz") == sha256(outs[1] / "labels.nii.gz")
    assert sha256(outs[0] / "image.nii.gz") != sha256(outs[2] / "image.nii.gz")


def test_resampling_keeps_the_world_centre(tiny_model_dir, oblique_mask, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, _, _ = run_cli(["generate", "--model", tiny_model_dir, "--mask", oblique_mask, "--size", 48, 48, 32,
                          "--spacing", 1.5, 2.0, 4.0, "-o", out], capsys)
    assert code == 0
    image, mask = nib.load(str(out / "image.nii.gz")), nib.load(str(oblique_mask))
    assert image.shape == (48, 48, 32)
    centre = lambda img: img.affine @ np.append((np.asarray(img.shape) - 1) / 2.0, 1.0)
    np.testing.assert_allclose(centre(image), centre(mask), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(image.affine[:3, :3], axis=0), [1.5, 2.0, 4.0], atol=1e-5)


def test_template_when_no_mask_is_given(tiny_model_dir, tmp_path, capsys) -> None:
    pytest.importorskip("MAISIEngine.phantom")
    out = tmp_path / "out"
    code, _, err = run_cli(["generate", "--model", tiny_model_dir, "--size", 64, 64, 32, "--spacing", 6, 6, 8, "-o", out], capsys)
    assert code == 0, err
    ids = set(np.unique(np.asarray(nib.load(str(out / "labels.nii.gz")).dataobj)).tolist())
    assert {1, 200} <= ids


def bad(capsys, args: list) -> str:
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr
    return lines[0]


def test_unknown_label_ids_are_listed(tiny_model_dir, tmp_path, capsys) -> None:
    labels = block_mask((32, 32, 32))
    labels[0, 0, 0], labels[1, 0, 0] = 150, 21
    path = write_volume(tmp_path / "m.nii.gz", labels, np.eye(4), dtype=np.uint8)
    line = bad(capsys, ["generate", "--model", tiny_model_dir, "--mask", path, "-o", tmp_path / "o"])
    assert "21, 150" in line and "MAISI" in line
    assert not (tmp_path / "o" / "image.nii.gz").exists()


def test_size_the_architecture_cannot_take_is_refused(tiny_model_dir, oblique_mask, tmp_path, capsys) -> None:
    line = bad(capsys, ["generate", "--model", tiny_model_dir, "--mask", oblique_mask, "--size", 40, 32, 32,
                        "--spacing", 2, 2, 2, "-o", tmp_path / "o"])
    assert "multiple of 16" in line and "--size 48 32 32" in line


def test_mask_grid_the_model_does_not_take_is_fitted_in_one_line(tiny_model_dir, tmp_path, capsys) -> None:
    path = write_volume(tmp_path / "m.nii.gz", block_mask((30, 32, 32)), np.eye(4), dtype=np.uint8)
    code, _, err = run_cli(["generate", "--model", tiny_model_dir, "--mask", path, "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    fitted = [line for line in err.splitlines() if "is not one tiny-test takes" in line]
    assert fitted == ["warning: the mask's grid [30, 32, 32] x [1.0, 1.0, 1.0] mm is not one tiny-test takes (every "
                      "axis must be a multiple of 16); resampled (nearest) to [32, 32, 32] x [1.0, 1.0, 1.0] mm, "
                      "same centre and field of view"]
    provenance = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert provenance["size"] == [32, 32, 32] and provenance["grid_fit"] == fitted[0][len("warning: "):]
    assert nib.load(str(tmp_path / "o" / "image.nii.gz")).shape == (32, 32, 32)


def test_outside_training_range_only_warns(tiny_model_dir, oblique_mask, tmp_path, capsys) -> None:
    code, _, err = run_cli(["generate", "--model", tiny_model_dir, "--mask", oblique_mask, "--size", 48, 32, 32,
                            "--spacing", 0.5, 0.5, 0.5, "-o", tmp_path / "o"], capsys)
    assert code == 0
    assert "warning: tiny-test was trained with x = y in [32, 48, 64]" in err
    assert "warning: tiny-test was trained with x/y spacing in 1.0..8.0 mm" in err
    assert (tmp_path / "o" / "image.nii.gz").exists()


def test_small_field_of_view_warns_before_anything_runs(tmp_path, capsys) -> None:
    path = write_volume(tmp_path / "m.nii.gz", block_mask((64, 64, 64)), np.diag([2, 2, 2, 1]), dtype=np.uint8)
    code, _, err = run_cli(["generate", "--model", "rflow-ct", "--mask", path, "-o", tmp_path / "o"], capsys)
    assert code == 2  # rflow-ct weights are not downloaded here, but the warnings come first
    assert "warning: rflow-ct was trained with x = y in [256, 384, 512]" in err
    assert "warning: field of view 128 x 128 mm is below 256 mm" in err


def test_neither_mask_nor_size(tiny_model_dir, tmp_path, capsys) -> None:
    line = bad(capsys, ["generate", "--model", tiny_model_dir, "-o", tmp_path / "o"])
    assert "neither a mask nor an output size" in line


@pytest.mark.parametrize("content,expected", [(b"not a nifti at all", "cannot read mask"), (None, "3 dimensions")])
def test_unreadable_or_non_3d_mask(tiny_model_dir, tmp_path, capsys, content, expected) -> None:
    path = tmp_path / "m.nii.gz"
    if content is None:
        nib.save(nib.Nifti1Image(np.zeros((8, 8), np.uint8), np.eye(4)), str(path))
        expected = "has 2 dimensions"
    else:
        path.write_bytes(content)
    assert expected in bad(capsys, ["generate", "--model", tiny_model_dir, "--mask", path, "-o", tmp_path / "o"])


def test_missing_official_weights_name_the_download_command(tmp_path, capsys) -> None:
    path = write_volume(tmp_path / "m.nii.gz", block_mask((64, 64, 64)), np.diag([4, 4, 4, 1]), dtype=np.uint8)
    line = bad(capsys, ["generate", "--model", "rflow-ct", "--mask", path, "-o", tmp_path / "o"])
    assert "maisi weights download rflow-ct" in line


def test_cuda_asked_for_but_absent(tiny_model_dir, oblique_mask, tmp_path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = bad(capsys, ["generate", "--model", tiny_model_dir, "--mask", oblique_mask, "--device", "cuda", "-o", tmp_path / "o"])
    assert "CUDA is not available" in line


def test_unwritable_output_directory(tiny_model_dir, oblique_mask, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = bad(capsys, ["generate", "--model", tiny_model_dir, "--mask", oblique_mask, "-o", blocker / "sub"])
    assert "cannot write to output directory" in line


def test_console_script_exit_code_and_single_line(tiny_model_dir, tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "MAISIEngine.cli", "generate", "--model", "nope", "-o", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown model 'nope'") and len(proc.stderr.strip().splitlines()) == 1
