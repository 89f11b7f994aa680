"""Bad files for the bad-input table: broken NIfTI, DICOM, weights and model folders, made once per run."""

from __future__ import annotations

import copy
import gzip
import json
import os
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np

from conftest import TINY_PRESET, block_mask


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray, dtype=None) -> Path:
    img = nib.Nifti1Image(array if dtype is None else array.astype(dtype), affine)
    nib.save(img, str(path))
    return path


def _header_only_gz(path: Path, shape: tuple[int, ...], dtype=np.uint8, zero_mib: int = 0) -> Path:
    """A .nii.gz whose header claims `shape`, followed by `zero_mib` MiB of zeros (a gzip bomb) or nothing.

    The zeros are gzip members of 16 MiB compressed once and repeated (a multi-member gzip file, which
    every gzip reader decodes whole), so a 1 GiB bomb costs a second to make, not ten.
    """
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_zooms((1.0,) * len(shape))
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    with open(path, "wb") as handle:
        handle.write(gzip.compress(header.binaryblock + b"\0" * 4))
        if zero_mib:
            member = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
            for _ in range(zero_mib // 16):
                handle.write(member)
    return path


def make_bad_files(folder: Path) -> dict[str, Path]:
    """Every bad input file the table uses, by name; `ok` is a valid 32^3 mask."""
    folder.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}
    labels = block_mask((32, 32, 32))
    f["ok"] = _nifti(folder / "ok.nii.gz", labels, np.diag([4.0, 4.0, 4.0, 1.0]), np.uint8)
    f["huge_header"] = _header_only_gz(folder / "huge_header.nii.gz", (2048, 2048, 1024))
    f["gzip_bomb"] = _header_only_gz(folder / "gzip_bomb.nii.gz", (64, 64, 64), zero_mib=1024)  # 1 GiB of zeros
    f["bomb_claims_1gib"] = _header_only_gz(folder / "bomb_claims_1gib.nii.gz", (1024, 1024, 1024))
    raw = bytearray(f["ok"].read_bytes())
    flipped = bytearray(raw)
    for i in range(64):
        flipped[len(flipped) // 2 + i] ^= 0xFF
    (folder / "flipped.nii.gz").write_bytes(bytes(flipped))
    f["flipped"] = folder / "flipped.nii.gz"
    crc = bytearray(raw)
    crc[-8] ^= 0xFF  # only the trailer's CRC32: the deflate stream itself decodes
    (folder / "bad_crc.nii.gz").write_bytes(bytes(crc))
    f["bad_crc"] = folder / "bad_crc.nii.gz"
    length = bytearray(raw)
    length[-1] ^= 0x01  # the trailer's ISIZE
    (folder / "bad_length.nii.gz").write_bytes(bytes(length))
    f["bad_length"] = folder / "bad_length.nii.gz"
    (folder / "truncated.nii.gz").write_bytes(bytes(raw[: len(raw) // 2]))
    f["truncated"] = folder / "truncated.nii.gz"
    plain = _nifti(folder / "plain.nii", labels, np.diag([4.0, 4.0, 4.0, 1.0]), np.uint8)
    (folder / "truncated_plain.nii").write_bytes(plain.read_bytes()[:2000])
    f["truncated_plain"] = folder / "truncated_plain.nii"
    f["complex"] = _nifti(folder / "complex.nii.gz", labels, np.eye(4), np.complex64)
    f["float_labels"] = _nifti(folder / "float_labels.nii.gz", labels + 0.5, np.eye(4), np.float32)
    nan_labels = labels.astype(np.float32)
    nan_labels[0, 0, 0] = np.nan
    f["nan_labels"] = _nifti(folder / "nan_labels.nii.gz", nan_labels, np.eye(4))
    f["tiny_spacing"] = _nifti(folder / "tiny_spacing.nii.gz", labels, np.diag([0.006, 0.006, 0.006, 1.0]), np.uint8)
    f["huge_spacing"] = _nifti(folder / "huge_spacing.nii.gz", labels, np.diag([6e30, 6e30, 6e30, 1.0]), np.uint8)
    singular = np.diag([4.0, 4.0, 4.0, 1.0])
    singular[:3, 2] = singular[:3, 0]
    f["singular"] = _nifti(folder / "singular.nii.gz", labels, singular, np.uint8)
    nan_affine = nib.Nifti1Image(labels, np.diag([4.0, 4.0, 4.0, 1.0]))
    nan_affine.set_qform(None, code=0)
    nan_affine.header["srow_x"] = [np.nan, 0.0, 0.0, 0.0]
    nan_affine.header["sform_code"] = 1
    nan_affine.update_header = lambda: None  # keep the damaged srow nibabel would otherwise recompute
    nib.save(nan_affine, str(folder / "nan_affine.nii.gz"))
    f["nan_affine"] = folder / "nan_affine.nii.gz"
    f["four_d"] = _nifti(folder / "four_d.nii.gz", np.zeros((8, 8, 8, 2), np.uint8), np.eye(4))
    f["two_d"] = _nifti(folder / "two_d.nii.gz", np.zeros((8, 8), np.uint8), np.eye(4))
    f["unknown_ids"] = _nifti(folder / "unknown_ids.nii.gz", np.full((32, 32, 32), 250, np.uint8),
                              np.diag([4.0, 4.0, 4.0, 1.0]))
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    f["rgb"] = _nifti(folder / "rgb.nii.gz", rgb, np.eye(4))
    (folder / "text.nii.gz").write_text("this is not a NIfTI file\n")
    f["text"] = folder / "text.nii.gz"
    (folder / "empty.nii.gz").write_bytes(b"")
    f["empty"] = folder / "empty.nii.gz"
    dcm = bytearray(b"\0" * 128 + b"DICM") + bytearray(np.random.default_rng(0).bytes(4000))
    (folder / "random.dcm").write_bytes(bytes(dcm))
    f["random_dcm"] = folder / "random.dcm"
    (folder / "no_seg").mkdir(exist_ok=True)
    f["no_seg"] = folder / "no_seg"
    (folder / "a_file.txt").write_text("a file where a folder should be\n")
    f["a_file"] = folder / "a_file.txt"
    (folder / "occupied").mkdir(exist_ok=True)
    (folder / "occupied" / "notes.txt").write_text("someone's notes\n")
    f["occupied"] = folder / "occupied"
    token = folder / "short.token"
    token.write_text("short")
    f["short_token"] = token
    return f


def make_bad_models(folder: Path, tiny_model_dir: Path) -> dict[str, Path]:
    """Model folders that must be refused: weights outside the folder, a safetensors header of 2^60."""
    models: dict[str, Path] = {}
    for name, weights in (("escaping", "../autoencoder.pt"), ("absolute", "/etc/passwd")):
        target = folder / f"model_{name}"
        shutil.copytree(tiny_model_dir, target, dirs_exist_ok=True)
        preset = json.loads((target / "preset.json").read_text())
        preset["weights"]["autoencoder"] = weights
        (target / "preset.json").write_text(json.dumps(preset))
        models[name] = target
    huge = folder / "model_huge_header"
    huge.mkdir(parents=True, exist_ok=True)
    preset = copy.deepcopy(TINY_PRESET)
    preset["weights"] = {role: f"{role}.safetensors" for role in preset["weights"]}
    (huge / "preset.json").write_text(json.dumps(preset))
    for role in preset["weights"]:
        (huge / f"{role}.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}" + b"\0" * 64)
    models["huge_header"] = huge
    (folder / "model_not_json").mkdir(exist_ok=True)
    (folder / "model_not_json" / "preset.json").write_bytes(os.urandom(256))
    models["not_json"] = folder / "model_not_json"
    return models
