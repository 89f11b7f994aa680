"""Generation follows NVIDIA's reference inference: RAS voxel order, its guidance, modality classes, grids.

The networks here have every parameter random (`all_random`): MONAI zero-initialises the U-Net's output
layer, and through such a network every comparison below would hold trivially.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import TINY_PRESET, block_mask
from MAISIEngine import masks as mask_ops
from MAISIEngine import orientation
from MAISIEngine.cli import main
from MAISIEngine.io.nifti import Volume, write_volume
from MAISIEngine.modeldir import random_model_directory
from MAISIEngine.models import load_model
from MAISIEngine.pipeline import GenerationRequest, build_conditions, generate
from MAISIEngine.presets import load_preset
from MAISIEngine.sampling import autocast_for, guided_denoise

SHAPE = (48, 32, 32)
SPACING = (2.0, 3.0, 4.0)


def ras_affine(spacing=SPACING, origin=(-40.0, -50.0, -60.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def stored_as(array: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same label map written in another voxel order (what DICOM-derived files look like)."""
    transform = nib.orientations.ornt_transform(nib.io_orientation(affine), nib.orientations.axcodes2ornt(tuple(codes)))
    moved = nib.orientations.apply_orientation(array, transform)
    return np.ascontiguousarray(moved), affine @ nib.orientations.inv_ornt_aff(transform, array.shape)


@pytest.fixture(scope="module")
def live_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset with every parameter random, official checkpoint layout."""
    return random_model_directory(tmp_path_factory.mktemp("live"), copy.deepcopy(TINY_PRESET), seed=2,
                                  scale_factor=0.9, all_random=True)


def test_lps_written_by_hand_comes_back_exactly_in_ras_order() -> None:
    labels = block_mask(SHAPE)
    affine = ras_affine()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [SHAPE[0] - 1, SHAPE[1] - 1]
    lps = Volume(labels[::-1, ::-1, :].copy(), affine @ flip)
    assert orientation.axcodes(lps.affine) == ("L", "P", "S")
    ras, how = orientation.to_ras(lps)
    np.testing.assert_array_equal(ras.array, labels)
    np.testing.assert_allclose(ras.affine, affine, atol=1e-12)
    assert how.describe() == {"input_voxel_order": "LPS", "oblique": False,
                              "action": "reordered to RAS voxel order without interpolation (input axes i,j flipped)"}
    back = orientation.restore(ras, how)
    np.testing.assert_array_equal(back.array, lps.array)
    np.testing.assert_allclose(back.affine, lps.affine, atol=1e-12)


def test_oblique_grid_takes_the_nearest_ras_order_and_keeps_its_direction_cosines() -> None:
    angle = np.deg2rad(20.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(SPACING)
    array, stored = stored_as(block_mask(SHAPE), affine, "PLI")
    ras, how = orientation.to_ras(Volume(array, stored))
    assert how.oblique and how.input_axcodes == ("P", "L", "I")
    assert orientation.axcodes(ras.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(ras.array, block_mask(SHAPE))
    np.testing.assert_allclose(ras.affine, affine, atol=1e-9)  # rotation kept, not resampled


def generate_from(mask: Volume, model: str, **extra) -> tuple[np.ndarray, np.ndarray, dict]:
    request = GenerationRequest(model=model, mask=mask, seed=3, steps=2, device="cpu", **extra)
    result = generate(request)
    return result.image.array, result.image.affine, result.provenance


@pytest.mark.parametrize("codes", ["LPS", "LAS", "SRA", "AIL"])
def test_same_label_map_in_any_voxel_order_gives_the_same_ct(live_model_dir: Path, codes: str) -> None:
    labels, affine = block_mask(SHAPE), ras_affine()
    reference_hu, reference_affine, _ = generate_from(Volume(labels, affine), str(live_model_dir))
    array, stored = stored_as(labels, affine, codes)
    hu, out_affine, provenance = generate_from(Volume(array, stored), str(live_model_dir))
    np.testing.assert_allclose(out_affine, reference_affine, atol=1e-9)  # outputs are written RAS
    assert int(np.abs(hu.astype(np.int32) - reference_hu).max()) == 0
    assert np.ptp(hu[labels > 0]) > 0  # a live network: the CT is not flat
    assert provenance["input_orientation"]["input_voxel_order"] == codes


def test_demo_model_gives_the_same_ct_for_ras_and_lps_masks() -> None:
    labels = block_mask((64, 64, 32))
    affine = ras_affine(spacing=(4.0, 4.0, 4.0))
    reference_hu, _, _ = generate_from(Volume(labels, affine), "demo")
    array, stored = stored_as(labels, affine, "LPS")
    hu, out_affine, _ = generate_from(Volume(array, stored), "demo")
    np.testing.assert_allclose(out_affine, affine, atol=1e-9)
    assert int(np.abs(hu.astype(np.int32) - reference_hu).max()) == 0


def test_output_grid_input_returns_ct_and_labels_on_the_mask_grid(live_model_dir: Path, tmp_path: Path) -> None:
    labels = block_mask((30, 32, 32))
    array, stored = stored_as(labels, ras_affine(), "LPS")
    request = GenerationRequest(model=str(live_model_dir), mask=Volume(array, stored), seed=1, steps=2,
                                device="cpu", output_grid="input")
    result = generate(request)
    assert result.image.shape == (30, 32, 32) and result.labels.shape == (30, 32, 32)
    np.testing.assert_array_equal(result.image.affine, stored)
    # fitted to 32 x 32 at 2.4375 mm in-plane (the mean field of view) and back: a nearest round trip
    assert float((result.labels.array == array).mean()) > 0.9
    assert set(np.unique(result.labels.array)) == set(np.unique(array))
    assert result.provenance["generated_grid"]["size"] == [32, 32, 32]
    assert result.provenance["grid_fit"].startswith("the mask's grid [30, 32, 32]")
    assert np.all(result.image.array[result.labels.array == 0] == -1000)
    assert np.ptp(result.image.array[result.labels.array > 0]) > 0


def denoise_by_hand(model, latents, t, mask_planes, class_id, spacing) -> torch.Tensor:
    """ControlNet then U-Net through MONAI's own call signatures, written out independently."""
    timesteps = t.reshape(1)
    classes = torch.tensor([class_id])
    down, mid = model.controlnet(x=latents, timesteps=timesteps, controlnet_cond=mask_planes,
                                 conditioning_scale=1.0, class_labels=classes)
    return model.unet(x=latents, timesteps=timesteps, spacing_tensor=spacing, class_labels=classes,
                      down_block_additional_residuals=down, mid_block_additional_residual=mid)


def test_guidance_is_uncond_plus_s_times_difference_with_class_0_and_a_tumor_free_mask(live_model_dir) -> None:
    model = load_model(load_preset(str(live_model_dir)), torch.device("cpu"))
    labels_array = block_mask((32, 32, 32))
    labels_array[8:12, 8:12, 8:12] = 26  # hepatic tumor inside the liver
    labels = Volume(labels_array, ras_affine())
    cond, _ = build_conditions(model, labels, None, 2.0, "ct_contrast")
    tumor_free = labels_array.copy()
    tumor_free[labels_array == 26] = 1
    expected_uncond_planes = mask_ops.label_bitplanes(torch.from_numpy(tumor_free.astype(np.int64))[None, None])
    torch.testing.assert_close(cond.controlnet_uncond, expected_uncond_planes, rtol=0, atol=0)
    latents = torch.randn((1, 4, 8, 8, 8), generator=torch.Generator().manual_seed(0))
    t = torch.tensor(700.0)
    with torch.no_grad():
        guided = guided_denoise(model.unet, model.controlnet, latents, t, cond)
        conditional = denoise_by_hand(model, latents, t, cond.controlnet_cond, 3, cond.spacing)
        unconditional = denoise_by_hand(model, latents, t, expected_uncond_planes, 0, cond.spacing)
    assert float(conditional.abs().mean()) > 1e-3 and float((conditional - unconditional).abs().mean()) > 1e-4
    torch.testing.assert_close(guided, unconditional + 2.0 * (conditional - unconditional), rtol=1e-5, atol=1e-6)
    cond.guidance_scale = 0.0
    with torch.no_grad():
        torch.testing.assert_close(guided_denoise(model.unet, model.controlnet, latents, t, cond), conditional,
                                   rtol=1e-5, atol=1e-6)


def test_remove_tumors_maps_each_tumor_to_its_host_as_the_reference() -> None:
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[:, :, :6] = 28  # left upper lobe
    labels[:, :, 6:] = 29  # left lower lobe
    labels[5:7, 5:7, 7:9] = 23  # lung tumor inside the lower lobe
    labels[0:2, 0:2, 0:2] = 26
    labels[10:12, 0:2, 0:2] = 24
    labels[0:2, 10:12, 0:2] = 27
    labels[0:2, 0:2, 10:12] = 128
    out = mask_ops.remove_tumors(labels)
    assert out[5, 5, 7] == 29 and out[0, 0, 0] == 1 and out[10, 0, 0] == 4 and out[0, 10, 0] == 62
    assert out[0, 0, 10] == 128  # bone lesions stay, as in the reference
    assert not np.isin(out, [23, 24, 26, 27]).any()


def test_modality_reaches_unet_and_controlnet_class_labels(live_model_dir: Path) -> None:
    model = load_model(load_preset(str(live_model_dir)), torch.device("cpu"))
    seen: dict[str, list[int]] = {"unet": [], "controlnet": []}

    def recorder(name):
        def hook(module, args, kwargs):
            seen[name].append(int(kwargs["class_labels"][0]))
        return hook

    handles = [model.unet.register_forward_pre_hook(recorder("unet"), with_kwargs=True),
               model.controlnet.register_forward_pre_hook(recorder("controlnet"), with_kwargs=True)]
    try:
        request = GenerationRequest(model=str(live_model_dir), mask=Volume(block_mask((32, 32, 32)), ras_affine()),
                                    steps=2, device="cpu", modality="ct_wo_contrast", guidance_scale=1.5)
        result = generate(request, model=model)
    finally:
        for handle in handles:
            handle.remove()
    assert seen["unet"] == [2, 0, 2, 0] and seen["controlnet"] == [2, 0, 2, 0]
    assert result.provenance["modality"] == "ct_wo_contrast" and result.provenance["modality_class"] == 2
    assert result.provenance["guidance"].startswith("classifier-free guidance as NVIDIA's reference")


def run_cli(args: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture
def small_mask(tmp_path: Path) -> Path:
    return write_volume(tmp_path / "m.nii.gz", block_mask((32, 32, 32)), ras_affine(), dtype=np.uint8)


def test_unknown_modality_is_refused_in_one_line(live_model_dir, small_mask, tmp_path, capsys) -> None:
    code, err = run_cli(["generate", "--model", live_model_dir, "--mask", small_mask, "--modality", "mri_t1",
                         "-o", tmp_path / "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown modality 'mri_t1' for model tiny-test" in err and "ct, ct_wo_contrast, ct_contrast" in err
    assert not (tmp_path / "o" / "image.nii.gz").exists()


def test_modality_is_refused_for_a_model_without_classes(tmp_path, small_mask, capsys) -> None:
    raw = copy.deepcopy(TINY_PRESET)
    raw["name"] = "tiny-no-class"
    raw["diffusion_unet"]["num_class_embeds"] = None
    raw["controlnet"]["num_class_embeds"] = None
    raw["conditioning"]["modality"] = None
    model_dir = random_model_directory(tmp_path / "m", raw, seed=0)
    code, err = run_cli(["generate", "--model", model_dir, "--mask", small_mask, "--modality", "ct",
                         "-o", tmp_path / "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "takes no modality class" in err


@pytest.mark.parametrize("spacing", [0.006, 6e30])
def test_mask_spacing_out_of_range_is_refused_in_one_line(live_model_dir, tmp_path, capsys, spacing) -> None:
    mask = write_volume(tmp_path / "m.nii.gz", block_mask((32, 32, 32)), np.diag([spacing, spacing, spacing, 1.0]),
                        dtype=np.uint8)
    code, err = run_cli(["generate", "--model", live_model_dir, "--mask", mask, "-o", tmp_path / "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    # Refused where the header is read, before any voxel (the same range as --spacing).
    assert "voxel spacing" in err and "0.05-50.0 mm" in err


def test_fp16_autocast_is_the_cuda_default() -> None:
    import argparse

    from MAISIEngine.commands.common import add_device_arguments

    parser = argparse.ArgumentParser()
    add_device_arguments(parser)
    assert parser.parse_args([]).precision == "fp16"
    assert GenerationRequest().precision == "fp16"
    context = autocast_for(torch.device("cuda"), "fp16")
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.float16
    assert autocast_for(torch.device("cuda"), "bf16").fast_dtype == torch.bfloat16


def test_help_says_what_the_guidance_number_means(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "uncond + s * (cond - uncond)" in text and "0 = off" in text
    assert "--modality" in text and "--output-grid" in text


def test_provenance_of_a_cli_run_records_orientation_and_guidance(live_model_dir, tmp_path, capsys) -> None:
    array, stored = stored_as(block_mask((32, 32, 32)), ras_affine(), "LPS")
    mask = write_volume(tmp_path / "m.nii.gz", array, stored, dtype=np.uint8)
    code, err = run_cli(["generate", "--model", live_model_dir, "--mask", mask, "--guidance", 2, "--steps", 2,
                         "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    provenance = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert provenance["input_orientation"]["input_voxel_order"] == "LPS"
    assert provenance["guidance_scale"] == 2.0 and provenance["modality"] == "ct"
    written = nib.load(str(tmp_path / "o" / "image.nii.gz"))
    assert nib.aff2axcodes(written.affine) == ("R", "A", "S")


def test_inpainting_an_lps_ct_returns_it_on_its_own_grid(live_model_dir: Path) -> None:
    from scipy import ndimage

    from MAISIEngine.inpaint import InpaintRequest, inpaint
    from MAISIEngine.phantom import make_phantom

    phantom = make_phantom(size=(64, 64, 64), spacing=(4.0, 4.0, 4.0), region="abdomen", seed=3)
    liver = phantom.labels == 1
    depth = ndimage.distance_transform_edt(np.pad(liver, 1))[1:-1, 1:-1, 1:-1]
    centre = np.unravel_index(int(np.argmax(depth)), liver.shape)
    tumor = (sum((g - c) ** 2 for g, c in zip(np.indices(liver.shape), centre)) <= 2.5**2) & liver

    def run(codes: str):
        ct, affine = stored_as(phantom.ct, phantom.affine, codes)
        labels, _ = stored_as(phantom.labels, phantom.affine, codes)
        painted, _ = stored_as(tumor, phantom.affine, codes)
        request = InpaintRequest(image=Volume(ct, affine), labels=Volume(labels, affine), tumor=painted,
                                 tumor_type="liver", model=str(live_model_dir), seed=1, steps=2, device="cpu",
                                 margin_mm=8.0)
        image, new_labels, provenance = inpaint(request)
        return ct, affine, painted, image, new_labels, provenance

    ras_ct, ras_affine_, _, ras_image, _, _ = run("RAS")
    ct, affine, painted, image, labels, provenance = run("LPS")
    assert image.shape == ct.shape and labels.shape == ct.shape
    np.testing.assert_array_equal(image.affine, affine)
    np.testing.assert_array_equal(labels.affine, affine)
    far = ndimage.distance_transform_edt(~painted, sampling=(4.0, 4.0, 4.0)) > 8.0
    np.testing.assert_array_equal(image.array[far], ct[far])
    assert not np.array_equal(image.array[painted], ct[painted])
    assert np.all(labels.array[painted] == 26)
    # the same world voxels as the RAS-stored run: identical CT once brought to the same voxel order
    back, _ = stored_as(image.array, affine, "RAS")
    np.testing.assert_array_equal(back, ras_image.array)
    assert provenance["input_orientation"]["input_voxel_order"] == "LPS"


@pytest.mark.slow
def test_real_rflow_ct_architecture_gives_the_same_ct_for_ras_and_lps(tmp_path_factory) -> None:
    """The released rflow-ct architecture (random, all parameters, official layout) at a small volume."""
    model_dir = random_model_directory(tmp_path_factory.mktemp("rflow"), "rflow-ct", seed=4, all_random=True)
    labels = block_mask((64, 64, 64))
    affine = ras_affine(spacing=(3.0, 3.0, 3.0))
    reference_hu, _, _ = generate_from(Volume(labels, affine), str(model_dir))
    array, stored = stored_as(labels, affine, "LPS")
    hu, out_affine, provenance = generate_from(Volume(array, stored), str(model_dir))
    np.testing.assert_allclose(out_affine, affine, atol=1e-9)
    assert int(np.abs(hu.astype(np.int32) - reference_hu).max()) == 0
    assert np.ptp(hu[labels > 0]) > 0
    assert provenance["model"] == "rflow-ct" and provenance["modality_class"] == 1


def test_front_end_jobs_carry_the_modality_to_the_worker_schema(tmp_path: Path) -> None:
    from MAISIEngine.jobs import GenerateJob, InpaintJob, parse_job
    from MAISISynthLib import params

    job = parse_job(params.generate_job("rflow-ct", tmp_path, mask=tmp_path / "m.nii.gz", modality="ct_contrast"))
    assert isinstance(job, GenerateJob) and job.modality == "ct_contrast" and job.precision == "fp16"
    assert "modality" not in params.generate_job("rflow-ct", tmp_path, mask=tmp_path / "m.nii.gz")
    inpaint = parse_job(params.inpaint_job("rflow-ct", tmp_path, image="ct.nii.gz", labels="l.nii.gz", tumor="t.nii.gz",
                                           tumor_type="liver", modality="ct_wo_contrast"))
    assert isinstance(inpaint, InpaintJob) and inpaint.modality == "ct_wo_contrast"
    grid = parse_job({"type": "generate", "output_dir": str(tmp_path), "output_grid": "input"})
    assert grid.output_grid == "input"
