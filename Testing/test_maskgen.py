"""Label maps from nothing: the mask-generation model (official layout and a tiny one), its anatomy-size
condition, the 124->132 remap, the reference post-processing, and the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from MAISIEngine.cli import main
from MAISIEngine.errors import MaisiError
from MAISIEngine.maskgen import anatomy
from MAISIEngine.maskgen.model import (build_mask_autoencoder, build_mask_unet, load_mask_model, load_mask_preset,
                                       mask_preset_from_dict, official_classes)
from MAISIEngine.maskgen.pipeline import generate_mask, place_on_grid
from MAISIEngine.maskgen.postprocess import closing, dilate, erode, keep_largest_components, postprocess_generated
from MAISIEngine.maskgen.sampling import classes_to_maisi
from MAISIEngine.labels import valid_ids
from maskgen_fixtures import SIZE_DB, randomise, tiny_mask_dir, tiny_mask_preset_dict, write_official_layout  # noqa: F401

# ---- the official architecture -------------------------------------------------------------------------

REFERENCE_MASK_VAE = {  # configs/config_network_ddpm.json, mask_generation_autoencoder_def
    "in_channels": 8, "out_channels": 125, "latent_channels": 4, "num_channels": [32, 64, 128],
    "num_res_blocks": [1, 2, 2], "norm_num_groups": 32, "use_convtranspose": True,
}
REFERENCE_MASK_UNET = {  # mask_generation_diffusion_def
    "in_channels": 4, "out_channels": 4, "channels": [64, 128, 256, 512],
    "attention_levels": [False, False, True, True], "num_head_channels": [0, 0, 32, 32], "num_res_blocks": 2,
    "with_conditioning": True, "upcast_attention": True, "cross_attention_dim": 10,
}


def test_mask_ct_preset_is_the_reference_configuration():
    preset = load_mask_preset("mask-ct")
    for key, value in REFERENCE_MASK_VAE.items():
        assert preset.autoencoder[key] == value, key
    for key, value in REFERENCE_MASK_UNET.items():
        assert preset.diffusion_unet[key] == value, key
    assert preset.scheduler == {"type": "ddpm", "num_train_timesteps": 1000, "beta_start": 0.0015,
                                "beta_end": 0.0195, "schedule": "scaled_linear_beta", "clip_sample": False}
    assert preset.latent_shape == (4, 64, 64, 64) and preset.image_shape == (256, 256, 256)
    assert preset.spacing == (1.5, 1.5, 1.5) and preset.num_inference_steps == 1000


@pytest.mark.slow
def test_official_layout_mask_networks_load_strictly_through_the_weights_cache(tmp_path):
    preset = load_mask_preset("mask-ct")
    paths = write_official_layout(tmp_path / "official", preset, seed=5, scale=1.0055984258651733)
    assert main(["weights", "import", str(tmp_path / "official")]) == 0
    model = load_mask_model("mask-ct")
    saved_vae = torch.load(paths["vae"], weights_only=True)
    saved_unet = torch.load(paths["unet"], weights_only=True)
    assert model.scale_factor == pytest.approx(1.0055984258651733)
    for name, tensor in model.autoencoder.state_dict().items():
        assert torch.equal(tensor, saved_vae[name]), name
    for name, tensor in model.unet.state_dict().items():
        assert torch.equal(tensor, saved_unet["unet_state_dict"][name]), name
    assert sum(p.numel() for p in model.unet.parameters()) > 100_000_000  # the real 4-level U-Net
    assert set(model.sha256) == {"mask_autoencoder", "mask_diffusion_unet", "size_database"}

    # one key short is refused with its name, nothing loads half
    broken = dict(saved_unet["unet_state_dict"])
    dropped = sorted(broken)[7]
    del broken[dropped]
    torch.save({"unet_state_dict": broken, "scale_factor": torch.tensor(1.0)}, paths["unet"])
    from MAISIEngine.maskgen.model import load_mask_networks

    with pytest.raises(MaisiError, match="missing keys: " + dropped.replace(".", r"\.")):
        load_mask_networks(preset, paths["vae"], paths["unet"])


def test_missing_official_weights_point_to_the_download_command(capsys, tmp_path):
    code = main(["masks", "generate", "--model", "mask-ct", "--anatomy-size", "liver=0.5",
                 "--size", "256", "256", "128", "--spacing", "1.5", "1.5", "2", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "mask_generation_autoencoder.pt is not downloaded" in err[0]
    assert "maisi weights download mask-generation" in err[0]
    assert not (tmp_path / "o").exists()


# ---- condition, remap, post-processing ----------------------------------------------------------------

def test_remap_matches_the_reference_124_to_132_table():
    classes = official_classes()
    assert len(classes) == 125
    # (class index, MAISI id) pairs of configs/label_dict_124_to_132.json
    cases = {0: 0, 1: 1, 2: 3, 3: 4, 4: 5, 9: 10, 11: 12, 13: 14, 15: 17, 16: 19, 17: 22, 18: 23, 19: 24,
             20: 25, 21: 26, 22: 27, 23: 28, 27: 32, 28: 33, 57: 62, 110: 115, 111: 118, 113: 120, 120: 127,
             121: 128, 122: 129, 123: 132, 124: 200}
    index = np.array(list(cases), dtype=np.int16).reshape(4, 7, 1)
    out = classes_to_maisi(index, classes)
    assert out.ravel().tolist() == list(cases.values())
    assert set(classes) - valid_ids() == {129}  # 'kidney mass', a dummy id of MAISI's dictionary

    with pytest.raises(ValueError):
        classes_to_maisi(np.array([125]), classes)


def test_kidney_mass_joins_the_nearest_kidney():
    from MAISIEngine.maskgen.postprocess import fold_kidney_mass

    v = np.zeros((20, 8, 8), dtype=np.int64)
    v[2:6] = 5
    v[14:18] = 14
    v[6:8] = 129
    v[12:14] = 129
    out = fold_kidney_mass(v)
    assert (out[6:8] == 5).all() and (out[12:14] == 14).all() and (out[2:6] == 5).all()
    alone = np.where(v == 129, 129, 0)
    assert set(np.unique(fold_kidney_mass(alone))) == {0, 200}


def test_condition_lookup_takes_the_nearest_database_entry_then_the_requested_sizes():
    db = [row["organ_size"] for row in SIZE_DB]
    # liver 0.8: |0.8-0.1|, |0.8-0.9|, |0.8-0.5| -> entry 1, liver overwritten
    assert anatomy.condition_vector([("liver", 0.8)], db) == [0.6, 0.8, 0.7, 0.2, 0.1, -1, -1, -1, -1, -1]
    # liver 0.5 + pancreas 0.9: distances 1.0, 1.1, 0.0 -> entry 2 (which carries a hepatic tumor)
    vec = anatomy.condition_vector([("liver", 0.5), ("pancreas", 0.9)], db)
    assert vec == [0.9, 0.5, 0.5, 0.9, 0.9, -1, -1, 0.4, -1, -1]
    assert anatomy.target_tumor_label(vec) == 26
    # a tie goes to the first entry; nothing named: the first entry
    tie = [[0.25] + [0.5] * 4 + [-1] * 5, [0.75] + [0.25] * 4 + [-1] * 5]
    assert anatomy.condition_vector([("gallbladder", 0.5)], tie)[:2] == [0.5, 0.5]
    assert anatomy.condition_vector([], db) == db[0]
    # a requested tumor; the pancreatic tumor is the target
    vec = anatomy.condition_vector([("pancreatic-tumor", 0.3)], db)
    assert vec[6] == 0.3 and anatomy.target_tumor_label(vec) == 24
    assert anatomy.target_tumor_label(db[0]) is None


@pytest.mark.parametrize("items, message", [
    (["kidney=0.5"], "not a structure whose size"),
    (["liver=1.2"], r"outside \[0, 1\]"),
    (["liver=-0.1"], r"outside \[0, 1\]"),
    (["liver"], "is not NAME=SIZE"),
    (["liver=big"], "is not a number"),
    (["liver=0.3", "liver=0.4"], "given twice"),
    (["lung-tumor=0.3", "bone-lesion=0.5"], "one tumor kind"),
])
def test_bad_anatomy_sizes_are_refused(items, message):
    with pytest.raises(MaisiError, match=message):
        anatomy.parse_anatomy_sizes(items)


def test_anatomy_names_accept_command_line_spellings():
    pairs = anatomy.parse_anatomy_sizes(["Liver=0.8", "colon-cancer-primaries=0.2", "stomach=0"])
    assert pairs == [("liver", 0.8), ("colon cancer primaries", 0.2), ("stomach", 0.0)]
    assert anatomy.parse_anatomy_sizes(["hepatic-tumor=-1"]) == [("hepatic tumor", -1.0)]


def test_morphology_matches_monai_erode_and_dilate_with_zero_padding():
    from monai.transforms.utils_morphological_ops import dilate as monai_dilate, erode as monai_erode

    rng = np.random.default_rng(0)
    mask = rng.random((12, 13, 14)) > 0.45
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    assert np.array_equal(dilate(mask), monai_dilate(t, 3, pad_value=0.0)[0, 0].numpy() > 0.5)
    assert np.array_equal(erode(mask), monai_erode(t, 3, pad_value=0.0)[0, 0].numpy() > 0.5)
    twice = t
    for _ in range(2):
        twice = monai_erode(monai_dilate(twice, 3, pad_value=0.0), 3, pad_value=0.0)
    assert np.array_equal(closing(mask), twice[0, 0].numpy() > 0.5)


def test_reference_postprocessing_on_a_written_case():
    v = np.zeros((40, 40, 40), dtype=np.int64)
    v[4:36, 4:36, 4:36] = 200  # body
    v[8:20, 8:20, 8:20] = 1  # liver
    v[30:32, 30:32, 30:32] = 1  # a stray liver island
    v[22:28, 8:14, 8:14] = 4  # pancreas
    v[23:26, 9:12, 9:12] = 24  # requested pancreatic tumor
    v[22:24, 20:22, 20:22] = 24  # a second, smaller tumor piece
    v[12:14, 12:14, 12:14] = 26  # an unrequested hepatic tumor inside the liver
    v[15, 15, 15] = 25  # hepatic vessel
    v[0:2, 0:2, 0:2] = 3  # speck outside the body
    out = postprocess_generated(v, target_tumor=24)
    assert (out[30:32, 30:32, 30:32] == 200).all()  # island -> body
    assert (out[12:14, 12:14, 12:14] == 1).all() and out[15, 15, 15] == 1  # tumor / vessel -> liver
    assert (out[23:26, 9:12, 9:12] == 24).all()  # largest tumor piece kept
    assert (out[22:24, 20:22, 20:22] == 200).all()  # the other becomes body
    assert (out[0:2, 0:2, 0:2] == 0).all()  # outside the body's largest component
    assert (out[9:19, 9:19, 9:19] == 1).all()
    assert set(np.unique(out)) == {0, 1, 4, 24, 200}


def test_place_on_grid_centres_the_field_of_view_and_resamples_nearest():
    labels = np.zeros((16, 16, 16), dtype=np.int16)
    labels[:, :, 11:15] = 28  # lungs high
    labels[:, :, 2:6] = 1  # liver low
    flat = place_on_grid(labels, (4.0, 4.0, 4.0), (32, 32, 8), (2.0, 2.0, 2.0))
    assert flat.shape == (32, 32, 8)
    assert np.allclose(flat.affine, [[2, 0, 0, -31], [0, 2, 0, -31], [0, 0, 2, -7], [0, 0, 0, 1]])
    chest = place_on_grid(labels, (4.0, 4.0, 4.0), (32, 32, 8), (2.0, 2.0, 2.0), region="chest")
    assert set(np.unique(chest.array)) == {28} and set(np.unique(flat.array)) == {0}
    abdomen = place_on_grid(labels, (4.0, 4.0, 4.0), (32, 32, 8), (2.0, 2.0, 2.0), region="abdomen")
    assert set(np.unique(abdomen.array)) == {1}
    wide = place_on_grid(labels, (4.0, 4.0, 4.0), (48, 16, 16), (2.0, 4.0, 4.0))  # 96 mm across: 16 mm each side
    assert (wide.array[:8] == 0).all() and (wide.array[-8:] == 0).all() and (wide.array[8:40, :, 11:15] == 28).all()


def test_transposed_convolution_vae_decodes_exactly_in_slabs():
    from MAISIEngine.tsp.api import decode, plan_decode

    raw = tiny_mask_preset_dict()
    raw["autoencoder"]["norm_float16"] = False  # MONAI's float16 GroupNorm does not run on the CPU
    preset = mask_preset_from_dict(raw)
    vae = randomise(build_mask_autoencoder(preset), 11, std=0.1).eval()
    z = torch.randn(1, 4, 6, 7, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = vae.decode_stage_2_outputs(z)
    assert whole.shape == (1, 125, 24, 28, 20) and whole.std() > 0.05
    plan = plan_decode((4, 6, 7, 5), vae, max_memory_bytes=12_000_000)
    assert max(p.segments for p in plan.passes) > 1
    split = decode(vae, z, plan=plan)
    assert torch.allclose(split, whole, atol=1e-4, rtol=1e-4)


# ---- generation --------------------------------------------------------------------------------------

def test_generation_gives_maisi_ids_on_the_requested_grid(tiny_mask_dir):
    model = load_mask_model(tiny_mask_dir)
    first = generate_mask(model, [("liver", 0.8)], (48, 48, 32), (2.0, 2.0, 3.0), seed=4)
    again = generate_mask(model, [("liver", 0.8)], (48, 48, 32), (2.0, 2.0, 3.0), seed=4)
    other = generate_mask(model, [("liver", 0.8)], (48, 48, 32), (2.0, 2.0, 3.0), seed=5)
    assert first.volume.shape == (48, 48, 32)
    assert np.allclose(np.diag(first.volume.affine)[:3], [2.0, 2.0, 3.0])
    ids = set(np.unique(first.volume.array).tolist())
    assert ids <= valid_ids() and len(ids) > 5
    assert np.array_equal(first.volume.array, again.volume.array)
    assert not np.array_equal(first.volume.array, other.volume.array)
    assert first.condition == [0.6, 0.8, 0.7, 0.2, 0.1, -1, -1, -1, -1, -1]
    assert first.provenance["model_grid"] == {"size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0]}
    assert first.provenance["num_inference_steps"] == 2


def test_masks_generate_cli_writes_labels_and_provenance(tiny_mask_dir, tmp_path, capsys):
    out = tmp_path / "map"
    code = main(["masks", "generate", "--model", str(tiny_mask_dir), "--anatomy-size", "liver=0.8", "pancreas=0.3",
                 "--size", "48", "48", "32", "--spacing", "2", "2", "3", "--seed", "7", "--attempts", "1",
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    image = nib.load(out / "labels.nii.gz")
    assert image.shape == (48, 48, 32) and image.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(image.dataobj)).tolist()) <= valid_ids()
    assert image.header["descrip"].tobytes().startswith(b"SYNTHETIC")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["synthetic"] is True and prov["seed"] == 7
    assert prov["anatomy_sizes"] == {"liver": 0.8, "pancreas": 0.3}
    assert prov["condition"]["liver"] == 0.8 and prov["condition"]["pancreas"] == 0.3
    assert prov["weights"]["mask_diffusion_unet"]["file"] == "mask_generation_diffusion_unet.pt"
    assert len(prov["weights"]["mask_autoencoder"]["sha256"]) == 64


@pytest.mark.parametrize("args, message", [
    (["--anatomy-size", "kidney=0.5"], "'kidney' is not a structure whose size"),
    (["--anatomy-size", "liver=2"], r"outside \[0, 1\]"),
    (["--size", "40", "40", "32", "--spacing", "2", "2", "3"], "not one the mask model accepts"),
    (["--size", "48", "48", "32", "--spacing", "2", "3", "3"], "spacing 2x3x3 mm"),
    (["--steps", "0"], "outside 1..1000"),
])
def test_masks_generate_refuses_bad_input_in_one_line(tiny_mask_dir, tmp_path, capsys, args, message):
    code = main(["masks", "generate", "--model", str(tiny_mask_dir), *args, "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    import re

    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "o").exists()


def test_generate_with_a_generated_mask_records_both_steps(tiny_mask_dir, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "ct"
    code = main(["generate", "--model", str(tiny_model_dir), "--mask", "generated", "--mask-model",
                 str(tiny_mask_dir), "--anatomy-size", "liver=0.9", "--size", "32", "32", "32",
                 "--spacing", "4", "4", "4", "--seed", "2", "--quality-retries", "1", "--device", "cpu",
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["mask_source"] == "generated label map"
    assert prov["mask_generation"]["anatomy_sizes"] == {"liver": 0.9}
    assert prov["mask_generation"]["seed"] == prov["seed"]
    assert [a["seed"] for a in prov["attempts"]] == list(range(2, 2 + len(prov["attempts"])))
    if prov["attempts"][0]["quality_passed"] is False:  # a failed check drew a new map with the next seed
        assert len(prov["attempts"]) == 2
    labels = nib.load(next(out.glob("*label*.nii.gz")))
    assert labels.shape == (32, 32, 32)


def test_anatomy_size_without_a_generated_mask_is_refused(tiny_model_dir, tmp_path, capsys):
    code = main(["generate", "--model", str(tiny_model_dir), "--anatomy-size", "liver=0.5", "-o", str(tmp_path)])
    assert code == 2 and "--anatomy-size needs --mask generated" in capsys.readouterr().err


# ---- training ----------------------------------------------------------------------------------------

def test_train_mask_stages_resume_and_give_a_folder_masks_generate_loads(tmp_path, capsys):
    raw = load_mask_preset("mask-demo").to_dict()
    raw["autoencoder"].update(num_channels=[4, 4, 4, 4], num_res_blocks=[1] * 4, attention_levels=[False] * 4,
                              norm_num_groups=4)
    raw["diffusion_unet"].update(channels=[8, 8, 8], num_head_channels=[0, 0, 8], norm_num_groups=4)
    raw.update(latent_shape=[4, 4, 4, 4], spacing=[12.0] * 3, num_inference_steps=2, default_size=[32, 32, 32],
               default_spacing=[12.0] * 3,
               accepts={"size_xy": [32], "size_z": [32], "spacing_xy": [6.0, 12.0], "spacing_z": [6.0, 12.0],
                        "min_fov_xy_mm": 0.0})
    base = tmp_path / "tiny.json"
    base.write_text(json.dumps(raw))
    out = tmp_path / "model"
    common = ["--preset", str(base), "--phantoms", "3", "--checkpoint-every", "1", "--out", str(out)]
    assert main(["train", "mask-vae", "--steps", "3", "--time-budget", "0", *common]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["steps"] == 1 and (out / "checkpoints" / "mask-vae_state.pt").is_file()
    assert main(["train", "mask-vae", "--steps", "3", "--resume", "--kl-weight", "0.01", *common]) == 2
    assert "kl_weight: 0.0001 -> 0.01" in capsys.readouterr().err  # the mask VAE's default, then the asked one
    assert main(["train", "mask-vae", "--steps", "3", "--resume", *common]) == 0
    captured = capsys.readouterr()
    assert "resuming after step 1" in captured.err and json.loads(captured.out.strip().splitlines()[-1])["steps"] == 3
    assert main(["train", "mask-diffusion", "--steps", "2", *common]) == 0
    unet_file = torch.load(out / "mask_generation_diffusion_unet.pt", weights_only=True)
    assert set(unet_file) == {"unet_state_dict", "scale_factor"} and float(unet_file["scale_factor"]) > 0
    assert isinstance(torch.load(out / "mask_generation_autoencoder.pt", weights_only=True)["encoder.blocks.0.conv.conv.weight"], torch.Tensor)
    sizes = json.loads((out / "mask_anatomy_sizes.json").read_text())
    assert len(sizes) == 3 and sorted(row["organ_size"][1] for row in sizes) == [0.0, 0.5, 1.0]  # liver ranks
    capsys.readouterr()
    assert main(["masks", "generate", "--model", str(out), "--size", "32", "32", "32", "--spacing", "12", "12", "12",
                 "--attempts", "1", "-o", str(tmp_path / "map")]) == 0
    assert nib.load(tmp_path / "map" / "labels.nii.gz").shape == (32, 32, 32)
    from MAISIEngine.maskgen.model import load_mask_networks
    from MAISIEngine.maskgen.train import package_model_folder

    shipped = package_model_folder(out, tmp_path / "package")  # fp16 safetensors, the scale factor in metadata
    _, _, scale = load_mask_networks(load_mask_preset(out), shipped["mask_autoencoder"], shipped["mask_diffusion_unet"])
    assert scale == pytest.approx(float(unet_file["scale_factor"]), rel=1e-6)
    assert json.loads(shipped["size_database"].read_text()) == sizes


def test_worker_generate_mask_job_streams_progress_and_result(tiny_mask_dir, tmp_path):
    import subprocess
    import sys

    def run(job: dict) -> tuple[int, list[dict]]:
        path = tmp_path / "job.json"
        path.write_text(json.dumps(job))
        done = subprocess.run([sys.executable, "-m", "MAISIEngine.worker", str(path)], capture_output=True, text=True,
                              timeout=600, cwd=Path(__file__).resolve().parents[1])
        return done.returncode, [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    code, events = run({"type": "generate-mask", "output_dir": str(tmp_path / "out"), "model": str(tiny_mask_dir),
                        "anatomy_sizes": {"liver": 0.8, "hepatic-tumor": 0.3}, "size": [48, 48, 32],
                        "spacing": [2, 2, 3], "seed": 1, "attempts": 1, "device": "cpu"})
    assert code == 0, events
    sampling = [e for e in events if e.get("stage") == "sampling"]
    assert [e["step"] for e in sampling] == [1, 2] and sampling[-1]["total"] == 2
    result = events[-1]
    assert result["event"] == "result" and Path(result["labels"]).is_file()
    assert result["provenance_data"]["condition"]["hepatic tumor"] == 0.3
    assert result["provenance_data"]["target_tumor"] == 26
    code, events = run({"type": "generate-mask", "output_dir": str(tmp_path / "bad"), "model": str(tiny_mask_dir),
                        "anatomy_sizes": {"kidney": 0.5}})
    assert code == 2 and events[-1]["event"] == "error" and "kidney" in events[-1]["message"]


def test_the_light_grid_check_reads_the_preset_as_the_engine_does(tiny_mask_dir, tmp_path):
    """`maskgen.grid` (standard library only, for the front ends) gives the engine's own refusal."""
    from MAISIEngine.maskgen import grid
    from MAISIEngine.maskgen.pipeline import check_mask_grid

    for model in ("mask-ct", "mask-demo", str(tiny_mask_dir)):
        with pytest.raises(MaisiError) as light:
            grid.check_model_grid(model, (40, 40, 32), (2, 2, 3))
        with pytest.raises(MaisiError) as engine:
            check_mask_grid(load_mask_preset(model), (40, 40, 32), (2, 2, 3))
        assert light.value.one_line() == engine.value.one_line()
    grid.check_model_grid(str(tiny_mask_dir), (48, 48, 32), (2, 2, 3))
    with pytest.raises(MaisiError, match="unknown mask model"):
        grid.check_model_grid(str(tmp_path), (48, 48, 32), (2, 2, 3))


def test_equal_components_are_broken_as_the_reference_breaks_ties():
    """36 one-voxel specks of a label: the reference (NV-Generate-CTMR `supress_non_largest_components`,
    run on this volume) keeps the speck at (21, 17, 2), an effect of numpy's default argsort on the
    component sizes; a stable sort would keep the first, (1, 1, 2)."""
    volume = np.zeros((24, 24, 24), dtype=np.int64)
    for x in range(1, 24, 4):
        for y in range(1, 24, 8):
            for z in range(2, 24, 12):
                volume[x, y, z] = 1
    kept = keep_largest_components(volume, [1], 200)
    assert [tuple(int(v) for v in p) for p in np.argwhere(kept == 1)] == [(21, 17, 2)]
    assert int((kept == 200).sum()) == 35
