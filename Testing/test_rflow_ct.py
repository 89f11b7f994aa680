"""The real rflow-ct architecture end to end on CPU: official-layout files imported into the cache,
`maisi generate` at 128^3 with 2 steps, geometry kept, bit-identical reruns. (The heaviest test.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import oblique_affine
from MAISIEngine.cli import main
from MAISIEngine.io.nifti import write_volume
from MAISIEngine.modeldir import save_official_layout
from MAISIEngine.networks import build_network, init_controlnet_from_unet
from MAISIEngine.presets import load_preset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def official_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Randomly initialised rflow-ct networks saved under the official file names and layouts."""
    folder = tmp_path_factory.mktemp("official")
    preset = load_preset("rflow-ct")
    torch.manual_seed(0)
    unet = build_network("diffusion_unet", preset)
    controlnet = build_network("controlnet", preset)
    init_controlnet_from_unet(controlnet, unet)
    save_official_layout(folder / preset.weights["diffusion_unet"], "diffusion_unet", unet, scale_factor=1.0)
    save_official_layout(folder / preset.weights["controlnet"], "controlnet", controlnet)
    del unet, controlnet
    save_official_layout(folder / preset.weights["autoencoder"], "autoencoder", build_network("autoencoder", preset))
    return folder


def test_rflow_ct_generates_128_cubed_on_cpu(official_files: Path, tmp_path: Path, capsys) -> None:
    assert main(["weights", "import", str(official_files)]) == 0
    capsys.readouterr()
    labels = np.zeros((128, 128, 128), np.uint8)
    labels[8:120, 12:116, :] = 200
    labels[20:70, 30:80, 20:100] = 1
    labels[75:105, 30:60, 30:70] = 3
    labels[60:68, 90:100, :] = 33
    affine = oblique_affine(spacing=(2.5, 2.0, 3.0), origin=(-150.0, -120.0, -180.0), degrees=12.0)
    mask = write_volume(tmp_path / "mask.nii.gz", labels, affine, dtype=np.uint8)
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        code = main(["generate", "--model", "rflow-ct", "--mask", str(mask), "--steps", "2", "--seed", "11",
                     "--device", "cpu", "-o", str(out)])
        assert code == 0, capsys.readouterr().err
        outputs.append(out)
    image = nib.load(str(outputs[0] / "image.nii.gz"))
    assert image.shape == (128, 128, 128)
    np.testing.assert_allclose(image.affine, nib.load(str(mask)).affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(nib.load(str(outputs[0] / "labels.nii.gz")).dataobj), labels)
    for name in ("image.nii.gz", "labels.nii.gz"):
        digests = {hashlib.sha256((out / name).read_bytes()).hexdigest() for out in outputs}
        assert len(digests) == 1, f"{name} differs between two runs with the same seed"
    provenance = json.loads((outputs[0] / "provenance.json").read_text())
    assert provenance["model"] == "rflow-ct" and provenance["steps"] == 2
    expected = {role: hashlib.sha256((official_files / name).read_bytes()).hexdigest()
                for role, name in load_preset("rflow-ct").weights.items()}
    assert {role: w["sha256"] for role, w in provenance["weights"].items()} == expected
    hu = np.asarray(image.dataobj)
    assert hu.min() >= -1000 and hu.max() <= 1000 and np.all(hu[labels == 0] == -1000)
