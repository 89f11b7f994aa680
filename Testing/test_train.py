"""Training of the three MAISI stages: learning, identical resume, DDP gradients, loading, bad input.

Everything runs on CPU with tiny volumes (32^3) and the tiny or demo architecture, a few steps each.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from MAISIEngine.errors import MaisiError
from MAISIEngine.io.nifti import write_volume
from MAISIEngine.train.config import TrainConfig
from MAISIEngine.train.data import ListSource
from train_fixtures import block_source, block_volume

TESTING = Path(__file__).resolve().parent
REPO = TESTING.parent

@pytest.fixture(scope="module")
def tiny_preset_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import TINY_PRESET

    path = tmp_path_factory.mktemp("preset") / "tiny.json"
    path.write_text(json.dumps(copy.deepcopy(TINY_PRESET)))
    return path


def config(stage: str, out: Path, steps: int = 4, **changes: object) -> TrainConfig:
    base = dict(stage=stage, out_dir=out, steps=steps, batch_size=2, lr=1e-3, seed=3, device="cpu", progress=False,
                warmup_steps=1, checkpoint_every=0, size=(32, 32, 32), adv_start=0.0, disc_channels=4)
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


def train(stage: str, out: Path, preset: str | None, steps: int = 4, source: ListSource | None = None,
          **changes: object):
    from MAISIEngine.train.runner import train_stage

    torch.manual_seed(0)
    return train_stage(config(stage, out, steps, **changes), source or block_source(), preset=preset)


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory, tiny_preset_file: Path) -> Path:
    """A tiny model directory with all three stages trained for a few steps."""
    out = tmp_path_factory.mktemp("trained") / "model"
    train("vae", out, str(tiny_preset_file), steps=2)
    train("diffusion", out, None, steps=2)
    train("controlnet", out, None, steps=1)
    return out


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------ learning


@pytest.mark.parametrize("stage,task,lr,steps,ratio", [
    ("vae", "generate", 3e-3, 6, 0.8),
    ("diffusion", "generate", 3e-3, 6, 0.8),
    # The ControlNet only adds residuals into a frozen U-Net's skips: it moves the loss more slowly.
    ("controlnet", "generate", 1e-2, 8, 0.995),
    ("controlnet", "inpaint", 1e-2, 8, 0.995),
])
def test_each_stage_overfits_one_batch(stage: str, task: str, lr: float, steps: int, ratio: float, tmp_path: Path,
                                       trained_tiny: Path, tiny_preset_file: Path) -> None:
    """Training steps on one fixed batch (same crops, noise and timesteps) bring its loss down."""
    from MAISIEngine.train.engine import set_learning_rate

    out = tmp_path / "model"
    if stage != "vae":
        shutil.copytree(trained_tiny, out)
    cfg = config(stage, out, 1, lr=lr, task=task, adv_weight=0.0, augment_flips=False,
                 size=(16, 16, 16) if stage == "vae" else (32, 32, 32))
    torch.manual_seed(0)
    from MAISIEngine.train.runner import build_stage

    built = build_stage(cfg, block_source(), preset=str(tiny_preset_file) if stage == "vae" else None).stage
    for optimizer in built.optimizers().values():
        for group in optimizer.param_groups:
            group["base_lr"] = group["lr"]
    set_learning_rate(built.optimizers(), 1.0)
    before = built.evaluate(0, range(2))
    frozen = {k: v.clone() for k, v in built.unet.state_dict().items()} if stage == "controlnet" else {}
    losses = [float(built.train_step(0, range(2), progress=0.0)["loss"]) for _ in range(steps)]
    after = built.evaluate(0, range(2))
    assert all(np.isfinite(losses))
    assert after < ratio * before, (before, after, losses)
    for key, value in frozen.items():  # the diffusion U-Net stays frozen while its ControlNet trains
        assert torch.equal(built.unet.state_dict()[key], value), key


def test_controlnet_residuals_start_at_zero(trained_tiny: Path) -> None:
    """MONAI's zero-initialised residual paths: a fresh ControlNet leaves the U-Net's output unchanged."""
    from MAISIEngine.models import load_model
    from MAISIEngine.networks import build_network, init_controlnet_from_unet
    from MAISIEngine.train.controlnet import ControlledUNet

    model = load_model(trained_tiny, "cpu")
    fresh = build_network("controlnet", model.preset)
    copied = init_controlnet_from_unet(fresh, model.unet)
    assert copied > 10
    x = torch.randn(1, 4, 8, 8, 8)
    t = torch.tensor([500.0])
    cond = torch.randint(0, 2, (1, 8, 32, 32, 32)).float()
    extra = {"class_labels": torch.ones(1, dtype=torch.long), "spacing_tensor": torch.full((1, 3), 400.0)}
    with torch.no_grad():
        plain = model.unet(x=x, timesteps=t, **extra)
        controlled = ControlledUNet(fresh, model.unet)(x, t, cond, **extra)
    assert torch.equal(plain, controlled)


def test_rflow_target_matches_the_sampler_step() -> None:
    """velocity = x0 - noise (MONAI's convention): one sampler step with it from t to 0 lands on x0."""
    from monai.networks.schedulers import RFlowScheduler

    from MAISIEngine.train.losses import diffusion_target

    scheduler = RFlowScheduler(num_train_timesteps=1000, use_discrete_timesteps=False, use_timestep_transform=True)
    scheduler.set_timesteps(num_inference_steps=10, input_img_size_numel=8 * 8 * 8)
    x0 = torch.randn(1, 4, 8, 8, 8)
    noise = torch.randn_like(x0)
    t = scheduler.timesteps[3]
    noisy = scheduler.add_noise(x0, noise, t.reshape(1))
    velocity = diffusion_target(scheduler, x0, noise, t.reshape(1))
    landed, predicted_x0 = scheduler.step(velocity, t, noisy, torch.tensor(0.0))
    assert torch.allclose(predicted_x0, x0, atol=1e-5)
    assert torch.allclose(landed, x0, atol=2e-3)  # next_t is truncated to an int inside MONAI's step


# ------------------------------------------------------------------------------------------ resume


class Interrupt:
    """Raise KeyboardInterrupt (what Ctrl-C or SIGTERM becomes) after a given step."""

    def __init__(self, after: int) -> None:
        self.after = after

    def __call__(self, step: int, values: dict[str, float]) -> None:
        if step == self.after:
            raise KeyboardInterrupt


@pytest.mark.parametrize("stage,ema_decay", [("vae", 0.0), ("controlnet", 0.0), ("controlnet", 0.5)])
def test_interrupted_run_resumes_identically(stage: str, ema_decay: float, tmp_path: Path, trained_tiny: Path,
                                            tiny_preset_file: Path) -> None:
    from MAISIEngine.train.checkpoints import state_path
    from MAISIEngine.train.runner import train_stage

    role = {"vae": "autoencoder", "controlnet": "controlnet"}[stage]
    results = {}
    for name in ("straight", "interrupted"):
        out = tmp_path / name
        shutil.copytree(trained_tiny, out)
        (out / f"{role}.pt").unlink()
        cfg = config(stage, out, 4, adv_start=0.5, ema_decay=ema_decay)  # the VAE's adversarial loss starts mid-run
        if name == "straight":
            result = train_stage(cfg, block_source())
        else:
            first = train_stage(cfg, block_source(), on_step=Interrupt(2))
            assert first.interrupted and first.end_step == 2
            assert not (out / f"{role}.pt").exists()  # an interrupted run exports nothing
            assert state_path(out, stage).is_file()
            cfg.resume = True
            result = train_stage(cfg, block_source())
            assert result.start_step == 2
        assert result.end_step == 4
        results[name] = torch.load(out / f"{role}.pt", weights_only=True)
        results[name + "_log"] = (out / "logs" / f"{stage}_losses.csv").read_text().splitlines()
    straight, resumed = results["straight"], results["interrupted"]
    if stage == "controlnet":
        straight, resumed = straight["controlnet_state_dict"], resumed["controlnet_state_dict"]
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # The loss log of the resumed run reads as one run: header + 4 rows, identical losses.
    assert len(results["interrupted_log"]) == 5
    column = results["straight_log"][0].split(",").index("loss")
    assert [r.split(",")[column] for r in results["straight_log"][1:]] == \
           [r.split(",")[column] for r in results["interrupted_log"][1:]]


def test_ema_decay_exports_the_moving_average_of_the_weights(tmp_path: Path, trained_tiny: Path) -> None:
    """--ema-decay D: the exported ControlNet is e_1 = w_1, e_k = D e_(k-1) + (1 - D) w_k over the weights w_k
    after each step, not w_last; the training state keeps w_last to train on."""
    from MAISIEngine.train.checkpoints import load_training_state, state_path
    from MAISIEngine.train.engine import run_stage
    from MAISIEngine.train.runner import build_stage

    out = tmp_path / "ema"
    shutil.copytree(trained_tiny, out)
    cfg = config("controlnet", out, 3, ema_decay=0.5)
    built = build_stage(cfg, block_source())
    after_each: list[dict[str, torch.Tensor]] = []
    result = run_stage(built.stage, cfg, built.ctx,
                       on_step=lambda step, values: after_each.append(state_of(built.stage.controlnet)))
    assert result.end_step == 3 and len(after_each) == 3
    expected = after_each[0]
    for weights in after_each[1:]:
        expected = {k: 0.5 * expected[k] + 0.5 * weights[k] for k in expected}
    exported = torch.load(out / "controlnet.pt", weights_only=True)["controlnet_state_dict"]
    moved = [k for k in expected if not torch.equal(after_each[0][k], after_each[-1][k])]
    assert moved  # the weights did change over the steps, so the average differs from the last step
    for key in expected:
        torch.testing.assert_close(exported[key], expected[key], rtol=0, atol=1e-7, msg=key)
    assert any((exported[k] - after_each[-1][k]).abs().max() > 1e-6 for k in moved)
    state = load_training_state(state_path(out, "controlnet"))
    assert torch.equal(state["models"]["controlnet"][moved[0]], after_each[-1][moved[0]])
    assert int(state["averages"]["controlnet"]["n_averaged"]) == 3


@pytest.mark.parametrize("value", ["1", "-0.1", "nan"])
def test_ema_decay_outside_zero_to_one_is_refused(value: str, tmp_path: Path) -> None:
    code, output = cli("vae", "--ema-decay", value, "--phantoms", "1", "--out", str(tmp_path / "o"))
    assert code == 2 and len(output.splitlines()) == 1
    assert output.startswith(f"error: --ema-decay must be at least 0 and below 1, got {float(value)}")
    assert not (tmp_path / "o").exists()
    assert train_config("vae", "--ema-decay", "0.999", "--phantoms", "1", "--out", str(tmp_path / "x")).ema_decay == 0.999


def test_resume_with_other_settings_is_refused(tmp_path: Path, tiny_preset_file: Path) -> None:
    from MAISIEngine.train.runner import train_stage

    out = tmp_path / "model"
    train_stage(config("vae", out, 2, adv_weight=0.0), block_source(), preset=str(tiny_preset_file),
                on_step=Interrupt(1))
    with pytest.raises(MaisiError, match="seed: 3 -> 4"):
        train_stage(config("vae", out, 2, seed=4, resume=True, adv_weight=0.0), block_source())
    with pytest.raises(MaisiError, match="no interrupted diffusion run to resume"):
        train_stage(config("diffusion", out, 4, resume=True), block_source())


# ------------------------------------------------------------------------------------------ DDP


def test_torchrun_two_processes_average_gradients_like_one_process(tmp_path: Path, trained_tiny: Path) -> None:
    """gloo DDP over 2 processes x 1 sample == 1 process x 2 samples, for every stage, within 1e-6."""
    from train_ddp_gradients import stage_gradients

    from MAISIEngine.train.distributed import DistContext

    script = TESTING / "train_ddp_gradients.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(29500 + os.getpid() % 400), str(script), str(trained_tiny), str(tmp_path / "grads.pt")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    two = torch.load(tmp_path / "grads.pt", weights_only=True)
    one = stage_gradients(trained_tiny, tmp_path / "work1", DistContext(0, 1, 0, torch.device("cpu")))
    assert set(two) == {"vae", "diffusion", "controlnet"} and set(two) == set(one)
    for stage in one:
        assert one[stage]["world_size"] == 1 and two[stage]["world_size"] == 2
        grads_one, grads_two = one[stage]["grads"], two[stage]["grads"]
        assert grads_one.keys() == grads_two.keys() and len(grads_one) > 10
        worst = max(float((grads_one[k] - grads_two[k]).abs().max()) for k in grads_one)
        largest = max(float(grads_one[k].abs().max()) for k in grads_one)
        assert largest > 1e-4, stage  # real gradients, not zeros
        assert worst < 1e-6, (stage, worst)


# ------------------------------------------------------------------------------------------ outputs


def test_trained_directory_loads_through_the_normal_paths(trained_tiny: Path, tmp_path: Path) -> None:
    from MAISIEngine.cli import main
    from MAISIEngine.networks import load_network
    from MAISIEngine.presets import load_preset

    preset = load_preset(trained_tiny)
    assert preset.weights == {"autoencoder": "autoencoder.pt", "diffusion_unet": "diffusion_unet.pt",
                              "controlnet": "controlnet.pt"}
    unet, checkpoint = load_network("diffusion_unet", preset, trained_tiny / "diffusion_unet.pt")
    assert checkpoint.scale_factor is not None and 0.05 < checkpoint.scale_factor < 50
    raw = torch.load(trained_tiny / "diffusion_unet.pt", weights_only=True)
    assert set(raw) == {"unet_state_dict", "scale_factor"} and raw["scale_factor"].ndim == 0
    assert set(torch.load(trained_tiny / "controlnet.pt", weights_only=True)) == {"controlnet_state_dict"}
    vae_raw = torch.load(trained_tiny / "autoencoder.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in vae_raw.values())  # raw state dict, as the official file

    labels, _ = block_volume(5)
    mask = write_volume(tmp_path / "mask.nii.gz", labels, np.diag([4.0, 4.0, 4.0, 1.0]))
    code = main(["generate", "--model", str(trained_tiny), "--mask", str(mask), "--steps", "2", "--device", "cpu",
                 "-o", str(tmp_path / "generated")])
    assert code == 0
    import nibabel as nib

    image = nib.load(str(tmp_path / "generated" / "image.nii.gz"))
    assert image.shape == (32, 32, 32)
    assert np.allclose(image.affine, np.diag([4.0, 4.0, 4.0, 1.0]))


def test_fp16_safetensors_export(trained_tiny: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    from MAISIEngine.models import load_model
    from MAISIEngine.train.checkpoints import export_safetensors

    written = export_safetensors(trained_tiny, tmp_path / "shipped")
    assert set(written) == {"autoencoder", "diffusion_unet", "controlnet"}
    with safe_open(str(written["diffusion_unet"]), framework="pt") as handle:
        scale = float(handle.metadata()["scale_factor"])
        assert all(handle.get_tensor(k).dtype == torch.float16 for k in handle.keys())
    original = torch.load(trained_tiny / "diffusion_unet.pt", weights_only=True)
    assert scale == pytest.approx(float(original["scale_factor"]))
    shipped = load_model(tmp_path / "shipped", "cpu")
    reference = load_model(trained_tiny, "cpu")
    assert shipped.scale_factor == pytest.approx(reference.scale_factor)
    for key, value in reference.unet.state_dict().items():
        assert torch.allclose(shipped.unet.state_dict()[key], value, atol=1e-3, rtol=1e-3), key


def test_inpaint_controlnet_is_described_in_the_preset(trained_tiny: Path, tmp_path: Path) -> None:
    from MAISIEngine.networks import extract_checkpoint, load_state_dict_strict, read_checkpoint_file
    from MAISIEngine.presets import load_preset
    from MAISIEngine.train.checkpoints import INPAINT_KEY, export_safetensors
    from MAISIEngine.inpaint_controlnet import build_inpaint_controlnet
    from MAISIEngine.train.controlnet import inpaint_condition

    out = tmp_path / "model"
    shutil.copytree(trained_tiny, out)
    train("controlnet", out, None, steps=2, task="inpaint")
    preset = load_preset(out)
    section = preset.to_dict()[INPAINT_KEY]
    assert section["network"]["conditioning_embedding_in_channels"] == 10
    assert section["condition"]["tumor_ids"] == [26]
    assert len(section["condition"]["channels"]) == 10
    network = build_inpaint_controlnet(preset)
    checkpoint = extract_checkpoint(read_checkpoint_file(out / section["weights"]), "controlnet")
    load_state_dict_strict(network, checkpoint.state_dict, "controlnet")
    written = export_safetensors(out, tmp_path / "shipped")
    assert written["controlnet_inpaint"].name == "controlnet_inpaint.safetensors"
    assert load_preset(tmp_path / "shipped").to_dict()[INPAINT_KEY]["weights"] == "controlnet_inpaint.safetensors"
    # The condition: image blanked inside the region, the region, the tumor id's bits (26 = 0b11010).
    image = torch.full((1, 1, 4, 4, 4), 0.5)
    region = torch.zeros(1, 1, 4, 4, 4)
    region[..., 1:3, 1:3, 1:3] = 1
    tumor = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    tumor[..., 2, 2, 2] = 26
    cond = inpaint_condition(image, tumor, region)
    assert cond.shape == (1, 10, 4, 4, 4)
    assert cond[0, 0, 2, 2, 2] == 0 and cond[0, 0, 0, 0, 0] == 0.5 and cond[0, 1].sum() == 8
    assert cond[0, 2:, 2, 2, 2].tolist() == [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------ data


def write_case(folder: Path, name: str, labels: np.ndarray | None, hu: np.ndarray, affine: np.ndarray,
               label_affine: np.ndarray | None = None) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    write_volume(folder / "images" / f"{name}.nii.gz", hu, affine, dtype=np.int16)
    if labels is not None:
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        write_volume(folder / "labels" / f"{name}.nii.gz", labels,
                     affine if label_affine is None else label_affine, dtype=np.uint8)


def test_folder_is_read_in_ras_with_hu_scaled_and_resampled(tmp_path: Path) -> None:
    from MAISIEngine.train.runner import build_source

    labels, hu = block_volume(0)
    lps = np.diag([-2.0, -2.0, 4.0, 1.0])  # i runs to the left, j to the back: flipped on reading
    write_case(tmp_path / "data", "case0", labels, hu, lps)
    source = build_source("controlnet", data=tmp_path / "data", spacing=(4.0, 4.0, 4.0))
    volume = source.get(0)
    assert volume.shape == (16, 16, 32) and volume.spacing == pytest.approx((4.0, 4.0, 4.0))
    assert volume.image.min() >= 0.0 and volume.image.max() <= 1.0
    # The vertebra (label 33, near the high-j end in the file) ends up near the low-j end after RAS.
    j_of_bone = np.argwhere(volume.labels == 33)[:, 1].mean()
    assert j_of_bone < 4
    bone_unit = np.median(volume.image[volume.labels == 33])
    assert (bone_unit * 2000.0 - 1000.0) == pytest.approx(500.0, abs=40.0)
    liver_unit = np.median(volume.image[volume.labels == 1])
    assert liver_unit * 2000 - 1000 == pytest.approx(60.0, abs=20.0)


def test_datalist_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    from MAISIEngine.train.runner import build_source

    labels, hu = block_volume(1)
    write_case(tmp_path / "d", "a", labels, hu, np.diag([4.0, 4.0, 4.0, 1.0]))
    datalist = tmp_path / "d" / "list.json"
    datalist.write_text(json.dumps({"training": [{"image": "images/a.nii.gz", "label": "labels/a.nii.gz"}]}))
    source = build_source("controlnet", datalist=datalist)
    assert len(source) == 1 and source.get(0).labels is not None


def test_phantoms_on_the_fly_are_deterministic() -> None:
    from MAISIEngine.labels import BODY
    from MAISIEngine.train.data import image_batch
    from MAISIEngine.train.runner import build_source

    first = build_source("controlnet", phantoms=2, phantom_sizes=[(64, 64, 64)], seed=5, workers=1)
    second = build_source("controlnet", phantoms=2, phantom_sizes=[(64, 64, 64)], seed=5, workers=1)
    volume = first.get(0)
    assert volume.shape == (64, 64, 64) and BODY in np.unique(volume.labels)
    assert np.array_equal(volume.labels, second.get(0).labels)
    assert 2.0 <= min(volume.spacing) and max(volume.spacing) <= 4.0
    batch = image_batch(first, 5, 7, range(2), (32, 32, 32), flips=True)
    again = image_batch(second, 5, 7, range(2), (32, 32, 32), flips=True)
    assert batch.shape == (2, 1, 32, 32, 32) and torch.equal(batch, again)


# ------------------------------------------------------------------------------------------ bad input


def cli(*args: str) -> tuple[int, str]:
    completed = subprocess.run([sys.executable, "-m", "MAISIEngine.cli", "train", *args], capture_output=True,
                               text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return completed.returncode, completed.stderr.strip()


def test_cli_bad_inputs_give_one_line(tmp_path: Path, tiny_preset_file: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, err = cli("vae", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o1"), "--device", "cpu")
    assert code == 2 and err.startswith("error: dataset folder") and "holds no NIfTI images" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_trains_on_phantoms_into_a_model_directory(tmp_path: Path, tiny_preset_file: Path) -> None:
    from MAISIEngine.cli import main
    from MAISIEngine.presets import load_preset

    out = tmp_path / "model"
    code = main(["train", "vae", "--preset", str(tiny_preset_file), "--phantoms", "1", "--size", "32", "32", "32",
                 "--spacing", "8", "8", "8", "--steps", "2", "--device", "cpu", "--no-progress", "--adv-weight", "0",
                 "--out", str(out)])
    assert code == 0
    assert load_preset(out).weights == {"autoencoder": "autoencoder.pt"}
    rows = (out / "logs" / "vae_losses.csv").read_text().splitlines()
    assert rows[0].startswith("step,lr,elapsed_s,loss,l1,kl") and len(rows) == 3
    assert (out / "checkpoints" / "vae_state.pt").is_file()


def test_controlnet_needs_labels_for_every_image(tmp_path: Path) -> None:
    from MAISIEngine.train.runner import build_source

    labels, hu = block_volume(0)
    write_case(tmp_path / "d", "with", labels, hu, np.diag([4.0, 4.0, 4.0, 1.0]))
    write_case(tmp_path / "d", "without", None, hu, np.diag([4.0, 4.0, 4.0, 1.0]))
    with pytest.raises(MaisiError, match="1 of 2 image\\(s\\) have no label map \\(e.g. 'without'\\)"):
        build_source("controlnet", data=tmp_path / "d")
    assert len(build_source("vae", data=tmp_path / "d")) == 2  # the VAE needs images only


def test_mismatched_geometry_and_unknown_ids_are_refused(tmp_path: Path) -> None:
    from MAISIEngine.train.runner import build_source

    labels, hu = block_volume(0)
    write_case(tmp_path / "shifted", "c", labels, hu, np.diag([4.0, 4.0, 4.0, 1.0]),
               label_affine=np.array([[4.0, 0, 0, 10.0], [0, 4.0, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 1]]))
    with pytest.raises(MaisiError, match="image and labels of case 'c' are on different grids"):
        build_source("controlnet", data=tmp_path / "shifted")
    bad = labels.copy()
    bad[0, 0, 0] = 250
    write_case(tmp_path / "unknown", "c", bad, hu, np.diag([4.0, 4.0, 4.0, 1.0]))
    with pytest.raises(MaisiError, match="label ids MAISI does not know: 250"):
        build_source("controlnet", data=tmp_path / "unknown")


def test_init_from_another_architecture_names_the_keys(tmp_path: Path, trained_tiny: Path) -> None:
    """The tiny VAE checkpoint cannot start the demo VAE: refused with the mismatch, also on the CLI."""
    from MAISIEngine.train.runner import train_stage

    with pytest.raises(MaisiError) as caught:
        train_stage(config("vae", tmp_path / "a", 2), block_source(), preset="demo",
                    init=str(trained_tiny / "autoencoder.pt"))
    assert caught.value.message.startswith("--init autoencoder.pt: the autoencoder weights do not fit")
    assert "missing keys: decoder.blocks" in caught.value.message
    with pytest.raises(MaisiError, match="missing keys: .*unexpected keys"):
        train_stage(config("vae", tmp_path / "b", 2), block_source(), preset="demo",
                    init=str(trained_tiny / "diffusion_unet.pt"))
    code, err = cli("vae", "--phantoms", "1", "--size", "32", "32", "32", "--steps", "1", "--device", "cpu",
                    "--init", str(trained_tiny / "diffusion_unet.pt"), "--out", str(tmp_path / "c"))
    last = err.splitlines()[-1]
    assert code == 2 and last.startswith("error: --init diffusion_unet.pt: the autoencoder weights do not fit")
    assert "Traceback" not in err and sum(line.startswith("error:") for line in err.splitlines()) == 1


def test_finetuning_from_a_model_writes_a_whole_model_directory(tmp_path: Path, trained_tiny: Path) -> None:
    """--init MODEL: the ControlNet starts from the model's, the frozen VAE and U-Net come with it."""
    from MAISIEngine.models import load_model
    from MAISIEngine.train.runner import train_stage

    out = tmp_path / "finetuned"
    result = train_stage(config("controlnet", out, 1), block_source(), init=str(trained_tiny))
    assert set(result.outputs) == {"controlnet"}
    finetuned, original = load_model(out, "cpu"), load_model(trained_tiny, "cpu")
    assert finetuned.preset.weights == {"controlnet": "controlnet.pt", "autoencoder": "autoencoder.pt",
                                        "diffusion_unet": "diffusion_unet.pt"}
    assert finetuned.scale_factor == pytest.approx(original.scale_factor)
    for key, value in original.unet.state_dict().items():
        assert torch.equal(finetuned.unet.state_dict()[key], value), key
    changed = [k for k, v in original.controlnet.state_dict().items()
               if not torch.equal(finetuned.controlnet.state_dict()[k], v)]
    assert changed  # one training step moved the ControlNet away from the --init weights


def test_finetuning_one_controlnet_carries_the_other_from_the_init_model(tmp_path: Path, trained_tiny: Path) -> None:
    """--init MODEL keeps the model's VAE and U-Net, so its other ControlNet still fits them: fine-tuning the
    inpainting ControlNet carries the CT ControlNet, and fine-tuning the CT ControlNet carries the inpainting
    one, unchanged; each output is a whole model that generates and inpaints."""
    from MAISIEngine.models import load_model
    from MAISIEngine.presets import load_preset
    from MAISIEngine.train.checkpoints import INPAINT_KEY
    from MAISIEngine.train.runner import train_stage

    inpaint_tuned = tmp_path / "inpaint_tuned"
    train_stage(config("controlnet", inpaint_tuned, 1, task="inpaint"), block_source(), init=str(trained_tiny))
    assert load_preset(inpaint_tuned).weights == {"controlnet": "controlnet.pt", "autoencoder": "autoencoder.pt",
                                                  "diffusion_unet": "diffusion_unet.pt"}
    original = load_model(trained_tiny, "cpu").controlnet.state_dict()
    carried = load_model(inpaint_tuned, "cpu").controlnet.state_dict()
    assert carried.keys() == original.keys() and all(torch.equal(carried[k], original[k]) for k in original)
    inpaint_weights = load_preset(inpaint_tuned).to_dict()[INPAINT_KEY]["weights"]

    ct_tuned = tmp_path / "ct_tuned"
    train_stage(config("controlnet", ct_tuned, 1), block_source(), init=str(inpaint_tuned))
    section = load_preset(ct_tuned).to_dict()[INPAINT_KEY]
    before = torch.load(inpaint_tuned / inpaint_weights, weights_only=True)["controlnet_state_dict"]
    after = torch.load(ct_tuned / section["weights"], weights_only=True)["controlnet_state_dict"]
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert any(not torch.equal(load_model(ct_tuned, "cpu").controlnet.state_dict()[k], v)
               for k, v in original.items())  # the CT ControlNet itself was trained
    # A new U-Net invalidates both ControlNets: neither is carried, nor is the inpainting one described.
    unet_tuned = tmp_path / "unet_tuned"
    train_stage(config("diffusion", unet_tuned, 1), block_source(), init=str(ct_tuned))
    assert load_preset(unet_tuned).weights == {"diffusion_unet": "diffusion_unet.pt", "autoencoder": "autoencoder.pt"}
    assert INPAINT_KEY not in load_preset(unet_tuned).to_dict()


def test_freeze_encoder_trains_the_decoder_only(tmp_path: Path, trained_tiny: Path) -> None:
    """--freeze-encoder: the latent space (encoder + quant convs) is bit-identical afterwards, the decoder moved."""
    from MAISIEngine.models import load_model
    from MAISIEngine.train.runner import train_stage

    out = tmp_path / "sharpened"
    result = train_stage(config("vae", out, 2, freeze_encoder=True, window_weight=1.0), block_source(),
                         init=str(trained_tiny))
    assert set(result.outputs) == {"autoencoder"}
    before, after = load_model(trained_tiny, "cpu").autoencoder.state_dict(), load_model(out, "cpu").autoencoder.state_dict()
    encoder_side = [k for k in before if k.split(".")[0] in ("encoder", "quant_conv_mu", "quant_conv_log_sigma")]
    decoder_side = [k for k in before if k.split(".")[0] in ("decoder", "post_quant_conv")]
    assert encoder_side and decoder_side and len(encoder_side) + len(decoder_side) == len(before)
    for key in encoder_side:
        assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in decoder_side)


def test_decode_posterior_mean_trains_the_decoder_on_the_latents_generation_gives_it(
        tmp_path: Path, tiny_preset_file: Path) -> None:
    """--decode-posterior-mean: the training loss is that of decoding the posterior mean (what the diffusion
    model is trained on), not a noisy sample of the posterior; it needs --freeze-encoder."""
    from MAISIEngine.train.runner import build_stage

    l1 = {}
    for mean in (False, True):
        torch.manual_seed(0)
        cfg = config("vae", tmp_path / f"m{mean}", 1, adv_weight=0.0, freeze_encoder=True, decode_posterior_mean=mean)
        stage = build_stage(cfg, block_source(), preset=str(tiny_preset_file)).stage
        of_mean = stage.evaluate(0, range(2))  # L1 of decode(posterior mean) on step 0's batch, no update
        l1[mean] = float(stage.train_step(0, range(2), progress=0.0)["l1"])
        if mean:
            assert l1[mean] == pytest.approx(of_mean, rel=1e-6)
        else:
            assert abs(l1[mean] - of_mean) > 1e-4  # the sampled latent decodes to something else
    parsed = train_config("vae", "--phantoms", "2", "--out", str(tmp_path / "x"), "--freeze-encoder",
                          "--decode-posterior-mean")
    assert parsed.decode_posterior_mean is True and parsed.freeze_encoder is True
    code, output = cli("vae", "--decode-posterior-mean", "--phantoms", "1", "--out", str(tmp_path / "y"))
    assert code == 2 and len(output.splitlines()) == 1
    assert output.startswith("error: --decode-posterior-mean needs --freeze-encoder")
    assert not (tmp_path / "y").exists()


def test_vae_draws_one_of_several_crop_sizes_per_step(tmp_path: Path, tiny_preset_file: Path) -> None:
    """Several --size values: each step one size (the same in every process), all of them used."""
    from MAISIEngine.train.runner import build_stage

    cfg = config("vae", tmp_path / "m", 3, crop_sizes=((16, 16, 16), (32, 32, 24)), adv_weight=0.0)
    stage = build_stage(cfg, block_source(), preset=str(tiny_preset_file)).stage
    drawn = [stage.size_for(step) for step in range(40)]
    assert set(drawn) == {(16, 16, 16), (32, 32, 24)}
    assert drawn == [stage.size_for(step) for step in range(40)]
    values = stage.train_step(next(s for s in range(40) if drawn[s] == (32, 32, 24)), range(2), progress=0.0)
    assert np.isfinite(float(values["loss"]))


def test_mse_weight_adds_the_squared_error_that_psnr_measures(tmp_path: Path, tiny_preset_file: Path) -> None:
    """--mse-weight: loss = L1 + KL term + w * MSE, and the logged MSE bounds the logged PSNR."""
    from MAISIEngine.train.runner import build_stage

    cfg = config("vae", tmp_path / "m", 3, adv_weight=0.0, mse_weight=7.0, augment_flips=False)
    stage = build_stage(cfg, block_source(), preset=str(tiny_preset_file)).stage
    values = {k: float(v) for k, v in stage.train_step(0, range(2), progress=0.0).items()}
    assert values["mse"] > 0
    expected = values["l1"] + cfg.kl_weight * values["kl"] + 7.0 * values["mse"]
    assert values["loss"] == pytest.approx(expected, rel=1e-5)
    # The logged PSNR clamps the reconstruction to [0, 1] first, which can only lower the error.
    assert values["psnr"] >= -10.0 * np.log10(values["mse"]) - 1e-3


def train_config(*argv: str) -> TrainConfig:
    """The TrainConfig that `maisi train ARGV` would run with, through the real command-line parser."""
    from MAISIEngine.cli import build_parser
    from MAISIEngine.train.cli import config_from_args

    return config_from_args(build_parser()[0].parse_args(["train", *argv]))


def test_clip_aware_loss_lets_outputs_pass_a_target_on_the_bounds(tmp_path: Path, tiny_preset_file: Path) -> None:
    """--clip-aware-loss: up to 0.02 below 0 on air (above 1 on 1000 HU) costs nothing, further out only the excess;
    targets inside the range keep the raw output."""
    from MAISIEngine.train.losses import clip_where_target_at_bounds
    from MAISIEngine.train.runner import build_stage

    prediction = torch.tensor([-0.01, -0.1, 0.05, -0.2, 0.5, 1.015, 1.2, 1.3, 0.9])
    target = torch.tensor([0.0, 0.0, 0.0, 0.3, 0.5, 1.0, 1.0, 0.9, 1.0])
    seen = clip_where_target_at_bounds(prediction, target)
    assert seen.tolist() == pytest.approx([0.0, -0.08, 0.05, -0.2, 0.5, 1.0, 1.18, 1.3, 0.9])
    raw = prediction.clone().requires_grad_(True)
    clip_where_target_at_bounds(raw, target).sub(target).abs().sum().backward()
    assert raw.grad.tolist() == [0.0, -1.0, 1.0, -1.0, 0.0, 0.0, 1.0, 1.0, -1.0]  # no pull inside the band

    l1 = {}
    for clip in (False, True):
        torch.manual_seed(0)
        cfg = config("vae", tmp_path / f"m{clip}", 1, adv_weight=0.0, augment_flips=False, clip_aware_loss=clip)
        stage = build_stage(cfg, block_source(), preset=str(tiny_preset_file)).stage
        l1[clip] = float(stage.train_step(0, range(2), progress=0.0)["l1"])
    assert 0 < l1[True] < l1[False]  # the untrained decoder's negative outputs on air no longer count

    parsed = train_config("vae", "--phantoms", "2", "--out", str(tmp_path / "x"), "--clip-aware-loss")
    assert parsed.clip_aware_loss is True


def test_label_loss_weights_weigh_the_latent_voxels_that_hold_bone_or_tumor() -> None:
    from MAISIEngine.labels import BONE_IDS
    from MAISIEngine.train.controlnet import TUMOR_IDS, label_loss_weights

    labels = torch.zeros((1, 1, 8, 8, 4), dtype=torch.long)
    labels[0, 0, 1, 1, 1] = 33  # a vertebra voxel in latent voxel (0, 0, 0)
    labels[0, 0, 6, 5, 2] = 26  # a hepatic tumor voxel in latent voxel (1, 1, 0)
    labels[0, 0, 2, 6, 3] = 1  # liver: no extra weight, latent voxel (0, 1, 0)
    weights = label_loss_weights(labels, {TUMOR_IDS: 3.0, BONE_IDS: 5.0}, 4)
    assert weights.shape == (1, 1, 2, 2, 1)
    assert weights[0, 0, :, :, 0].tolist() == [[5.0, 1.0], [1.0, 3.0]]
    assert label_loss_weights(labels, {TUMOR_IDS: 1.0, BONE_IDS: 1.0}, 4) is None


def test_inpaint_loss_weights_add_the_region_and_tumor_terms(tmp_path: Path, trained_tiny: Path) -> None:
    """--task inpaint: region x5 and tumor x3 add (1 + 4 + 2); bone is weighed by the CT ControlNet only."""
    from MAISIEngine.labels import BONE_IDS
    from MAISIEngine.train.runner import build_stage

    out = tmp_path / "model"
    shutil.copytree(trained_tiny, out)
    labels = torch.zeros((1, 1, 8, 8, 4), dtype=torch.long)
    labels[0, 0, 1, 1, 1] = min(BONE_IDS)  # bone in latent voxel (0, 0, 0)
    labels[0, 0, 6, 5, 2] = 26  # hepatic tumor in latent voxel (1, 1, 0)
    region = torch.zeros((1, 1, 8, 8, 4))
    region[0, 0, 5:8, 4:8, :] = 1.0  # the tumor's latent voxel
    region[0, 0, 0, 7, 0] = 1.0  # and latent voxel (0, 1, 0)
    weights = {}
    for task in ("inpaint", "generate"):
        cfg = config("controlnet", out, 1, task=task, tumor_loss_weight=3.0, bone_loss_weight=5.0,
                     inpaint_region_weight=5.0, size=(32, 32, 32))
        stage = build_stage(cfg, block_source()).stage
        weights[task] = stage.loss_weights(labels, region if task == "inpaint" else None)
    assert weights["inpaint"][0, 0, :, :, 0].tolist() == [[1.0, 5.0], [1.0, 7.0]]
    assert weights["generate"][0, 0, :, :, 0].tolist() == [[5.0, 1.0], [1.0, 3.0]]


def test_organ_loss_weight_weighs_the_latent_voxels_of_that_organ(tmp_path: Path, trained_tiny: Path) -> None:
    """--organ-loss-weight kidney=3: left (14) and right (5) kidney voxels weigh 3, bone x5 adds where both lie."""
    from MAISIEngine.labels import BONE_IDS
    from MAISIEngine.train.runner import build_stage

    out = tmp_path / "model"
    shutil.copytree(trained_tiny, out)
    labels = torch.zeros((1, 1, 8, 8, 4), dtype=torch.long)
    labels[0, 0, 1, 1, 1] = 5  # right kidney in latent voxel (0, 0, 0)
    labels[0, 0, 2, 6, 1] = 14  # left kidney in latent voxel (0, 1, 0)
    labels[0, 0, 3, 7, 2] = min(BONE_IDS)  # and bone there too
    labels[0, 0, 6, 5, 2] = 1  # liver: weight 1, latent voxel (1, 1, 0)
    cfg = train_config("controlnet", "--phantoms", "2", "--out", str(out), "--organ-loss-weight", "kidney=3",
                       "--bone-loss-weight", "5")
    assert cfg.organ_loss_weights == (("kidney", 3.0),)
    stage = build_stage(config("controlnet", out, 1, organ_loss_weights=cfg.organ_loss_weights, bone_loss_weight=5.0,
                               size=(32, 32, 32)), block_source()).stage
    assert stage.loss_weights(labels, None)[0, 0, :, :, 0].tolist() == [[3.0, 7.0], [1.0, 1.0]]
    for bad in (["--organ-loss-weight", "kidneys=3"], ["--organ-loss-weight", "kidney=0"],
                ["--organ-loss-weight", "kidney"], ["--organ-loss-weight", "kidney=3", "--task", "inpaint"],
                ["--organ-loss-weight", "kidney=3", "--organ-loss-weight", "kidney=2"],
                ["--organ-loss-weight", "bone=3", "--bone-loss-weight", "5"]):
        with pytest.raises(MaisiError, match="--organ-loss-weight"):
            train_config("controlnet", "--phantoms", "2", "--out", str(out), *bad)
    assert train_config("controlnet", "--phantoms", "2", "--out", str(out), "--organ-loss-weight",
                        "bone=3").organ_loss_weights == (("bone", 3.0),)


def test_calibration_refits_only_the_output_convolution(tmp_path: Path, trained_tiny: Path) -> None:
    """--calibrate-output: the weighted L1 on the data drops, only decoder.blocks[-1] changes, whole model written."""
    from MAISIEngine.models import load_model
    from MAISIEngine.train.runner import calibrate_stage

    out = tmp_path / "calibrated"
    report = calibrate_stage(config("vae", out, 1), block_source(), init=str(trained_tiny), samples_per_volume=4000)
    assert report["volumes"] == 3 and report["samples"] == 12000
    before_l1, after_l1 = report["weighted_l1"]
    assert after_l1 < before_l1
    before, after = load_model(trained_tiny, "cpu"), load_model(out, "cpu")
    last = f"decoder.blocks.{len(before.autoencoder.decoder.blocks) - 1}."
    changed = {k for k, v in before.autoencoder.state_dict().items() if not torch.equal(v, after.autoencoder.state_dict()[k])}
    assert changed and all(k.startswith(last) for k in changed), changed
    for key, value in before.unet.state_dict().items():
        assert torch.equal(after.unet.state_dict()[key], value), key
    assert after.scale_factor == pytest.approx(before.scale_factor)


def test_calibration_needs_a_trained_decoder(tmp_path: Path) -> None:
    code, output = cli("vae", "--calibrate-output", "--phantoms", "1", "--phantom-size", "32", "32", "32",
                       "--out", str(tmp_path / "x"))
    assert code == 2 and "no --init was given" in output and len(output.splitlines()) == 1


def test_window_loss_weighs_soft_tissue_errors_inside_the_window() -> None:
    from MAISIEngine.train.losses import window_l1

    def unit(hu: float) -> torch.Tensor:
        return torch.full((1, 1, 2, 2, 2), (hu + 1000.0) / 2000.0)

    # 60 HU apart inside the 400 HU window: 60 / 400 of the window.
    assert float(window_l1(unit(122.0), unit(62.0))) == pytest.approx(60.0 / 400.0, rel=1e-4)
    # Air against air a little off, and bone against brighter bone: both outside the window, no loss.
    assert float(window_l1(unit(-990.0), unit(-1000.0))) == 0.0
    assert float(window_l1(unit(900.0), unit(700.0))) == 0.0
    # Half in: a voxel at 300 HU (clipped to 240) against 200 HU.
    assert float(window_l1(unit(300.0), unit(200.0))) == pytest.approx(40.0 / 400.0, rel=1e-4)


@pytest.mark.parametrize("option,message", [
    (["--phantom-tumor-types", "liver,kidney"], "unknown tumor type(s) kidney (use some of lung, pancreas, liver"),
    (["--phantom-tumors", "1.5"], "--phantom-tumors 1.5 is not a fraction"),
    (["--phantom-regions", "head"], "unknown phantom region(s) head"),
])
def test_bad_phantom_choices_are_refused(tmp_path: Path, option: list[str], message: str) -> None:
    code, output = cli("controlnet", "--phantoms", "2", *option, "--out", str(tmp_path / "x"))
    assert code == 2 and message in output and len(output.splitlines()) == 1
    assert not (tmp_path / "x" / "preset.json").exists()


def test_phantom_pool_follows_the_tumor_and_region_choices() -> None:
    from MAISIEngine.train.data import phantom_specs

    specs = phantom_specs(12, 5, [(64, 64, 64)], (3.0, 3.0), regions=("abdomen",), tumor_fraction=1.0,
                          tumor_types=("liver",))
    assert {s.region for s in specs} == {"abdomen"} and {s.tumors for s in specs} == {("liver",)}


def test_freeze_encoder_is_for_the_vae_only(tmp_path: Path) -> None:
    code, output = cli("diffusion", "--freeze-encoder", "--phantoms", "1", "--out", str(tmp_path / "x"))
    assert code == 2 and "--freeze-encoder applies to vae training only" in output


def test_crop_sizes_the_unet_cannot_take_are_refused(tmp_path: Path, trained_tiny: Path) -> None:
    from MAISIEngine.train.runner import train_stage

    out = tmp_path / "model"
    shutil.copytree(trained_tiny, out)
    with pytest.raises(MaisiError, match=r"crop size \(40, 40, 40\) .* multiple of 16"):
        train_stage(config("diffusion", out, 1, size=(40, 40, 40)), block_source())


def test_later_stages_need_the_earlier_ones(tmp_path: Path, tiny_preset_file: Path) -> None:
    from MAISIEngine.train.runner import train_stage

    with pytest.raises(MaisiError, match="diffusion training needs a trained autoencoder") as caught:
        train_stage(config("diffusion", tmp_path / "m", 2), block_source(), preset=str(tiny_preset_file))
    assert caught.value.hint.startswith(f"train it first (`maisi train vae --out {tmp_path / 'm'}`)")


def test_perceptual_loss_never_downloads(tmp_path: Path) -> None:
    from MAISIEngine.train.losses import make_perceptual_loss

    assert make_perceptual_loss(None, torch.device("cpu")) is None
    with pytest.raises(MaisiError, match="do not exist"):
        make_perceptual_loss(str(tmp_path / "resnet50.pth"), torch.device("cpu"))
