"""`maisi evaluate`: the Fréchet distance, the reference's 2.5D slicing and preprocessing, the RadImageNet
ResNet-50 in its published layout, the CLI's reports and its refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from MAISIEngine.cli import main as maisi
from MAISIEngine.errors import MaisiError
from MAISIEngine.evaluate.frechet import frechet_distance
from MAISIEngine.evaluate.preprocess import Preprocessing, prepare
from MAISIEngine.evaluate.radimagenet import load_radimagenet
from MAISIEngine.evaluate.slicing import network_input, plane_slices
from MAISIEngine.io.nifti import write_volume

SMALL = ["--spacing", "none", "--center-crop", "32x32x32"]


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's dense matrix square root (independent of the engine's)."""
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.real(scipy.linalg.sqrtm(sigma_a @ sigma_b))
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(root))


def published_layout(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the key names and shapes of RadImageNet-ResNet50_notop.pth, built here from the
    layout (Keras conversion: biased convolutions, stride on the first 1x1, projection on each stage's first block)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, cin: int, cout: int, k: int) -> None:
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
        state[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01

    def bn(name: str, c: int) -> None:
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_var"] = 1 + 0.1 * torch.rand(c, generator=g)
        state[f"{name}.num_batches_tracked"] = torch.tensor(0)

    conv("conv1", 3, 64, 7)
    bn("bn1", 64)
    cin = 64
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            conv(f"{prefix}.conv1", cin, width, 1)
            bn(f"{prefix}.bn1", width)
            conv(f"{prefix}.conv2", width, width, 3)
            bn(f"{prefix}.bn2", width)
            conv(f"{prefix}.conv3", width, 4 * width, 1)
            bn(f"{prefix}.bn3", 4 * width)
            if block == 0:
                conv(f"{prefix}.downsample.0", cin, 4 * width, 1)
                bn(f"{prefix}.downsample.1", 4 * width)
            cin = 4 * width
    return state


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("features") / "RadImageNet-ResNet50_notop.pth"
    torch.save(published_layout(), path)
    return path


def body_ct(seed: int, shape=(36, 34, 40), lesion_hu: float = 60.0) -> np.ndarray:
    """A test-made CT: air around an ellipsoid of soft tissue with a bone rod and a lesion, plus noise."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    ct = np.full(shape, -1000.0)
    ct[(x / 0.8) ** 2 + (y / 0.6) ** 2 < 1] = 40.0
    ct[(x ** 2 + (y + 0.3) ** 2) < 0.02] = 700.0
    ct[((x - 0.3) ** 2 + y ** 2 + z ** 2) < 0.05 + 0.02 * rng.random()] = lesion_hu
    return (ct + rng.normal(0, 20, shape)).astype(np.float32)


def write_set(folder: Path, seeds, **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        write_volume(folder / f"ct_{seed}.nii.gz", body_ct(seed, **kwargs), np.diag([1.5, 1.5, 2.0, 1.0]), dtype=np.float32)
    return folder


# ---- Fréchet distance ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n_a,n_b,dim", [(300, 250, 40), (40, 30, 64)])
def test_frechet_distance_matches_scipy_sqrtm(n_a, n_b, dim):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(n_a, dim)) * rng.uniform(0.5, 2.0, size=dim)
    b = rng.normal(size=(n_b, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + 0.2
    expected = scipy_frechet(a, b)
    for method in ("auto", "exact", "monai"):
        assert frechet_distance(torch.tensor(a), torch.tensor(b), method) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_a_set_with_itself_and_a_shifted_copy():
    features = torch.tensor(np.random.default_rng(1).normal(size=(120, 2048)))
    assert abs(frechet_distance(features, features)) < 1e-6
    shift = torch.full((2048,), 0.05, dtype=torch.float64)
    assert frechet_distance(features, features + shift) == pytest.approx(float(shift.square().sum()), rel=1e-9)


# ---- preprocessing and 2.5D slicing -------------------------------------------------------------------

def test_slicing_takes_the_reference_planes():
    """Reference (B, C, H, W, D) = our (X, Y, Z): XY slices run along D, YZ along H, ZX along W; a centre
    ratio r keeps int((1-r)/2 n) .. int((1+r)/2 n) - 1."""
    shape = (20, 30, 40)
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    volume = torch.tensor(10000.0 * x + 100.0 * y + z)[None]
    axial = plane_slices(volume, "axial", 0.4)
    assert axial.shape == (16, 20, 30)  # z 12..27 of 40
    assert torch.equal(axial[0], volume[0, :, :, 12]) and torch.equal(axial[-1], volume[0, :, :, 27])
    sagittal = plane_slices(volume, "sagittal", 0.4)
    assert sagittal.shape == (8, 30, 40)  # x 6..13 of 20, slices (Y, Z)
    assert torch.equal(sagittal[0], volume[0, 6]) and torch.equal(sagittal[-1], volume[0, 13])
    coronal = plane_slices(volume, "coronal", 0.4)
    assert coronal.shape == (12, 20, 40)  # y 9..20 of 30, slices (X, Z)
    assert torch.equal(coronal[0], volume[0, :, 9, :]) and torch.equal(coronal[-1], volume[0, :, 20, :])
    assert plane_slices(volume, "axial", None).shape == (40, 20, 30)


def test_network_input_scales_the_whole_stack_and_removes_channel_means():
    stack = torch.tensor([[[0.0, 10.0]], [[20.0, 40.0]]])  # two 1x2 slices, min 0, max 40 over the stack
    out = network_input(stack)
    assert out.shape == (2, 3, 1, 2)
    assert torch.allclose(out[1, :, 0, 0], 0.5 - torch.tensor([0.406, 0.456, 0.485]))
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.25]) - 0.406)


def test_plane_features_normalise_the_whole_stack_whatever_the_batch(feature_file):
    from MAISIEngine.evaluate.slicing import plane_features

    network = load_radimagenet(feature_file)
    volume = torch.tensor(body_ct(7, shape=(24, 24, 24)))[None].clamp(-1000, 1000)
    whole = plane_features(volume, network, "coronal", None, batch=64)
    pieces = plane_features(volume, network, "coronal", None, batch=5)
    assert whole.shape == (24, 2048)
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # one slice alone, scaled by its own range, gives other features
        alone = network.features(network_input(plane_slices(volume, "coronal")[:1]))
    assert not torch.allclose(alone[0], whole[0], atol=1e-4)


def test_preprocessing_orients_to_ras_pads_with_air_crops_and_clips(tmp_path):
    array = np.arange(6 * 8 * 10, dtype=np.float32).reshape(6, 8, 10) * 10 - 1500  # -1500 .. 3290
    write_volume(tmp_path / "lps.nii.gz", array, np.diag([-2.0, -2.0, 2.0, 1.0]), dtype=np.float32)
    out = prepare(tmp_path / "lps.nii.gz", Preprocessing(spacing=None, crop=(8, 8, 8), pad=True, center_ratio=None))
    assert out.shape == (1, 8, 8, 8)
    ras = np.clip(array[::-1, ::-1, :], -1000, 1000)  # L->R and P->A flipped
    np.testing.assert_array_equal(out[0, 1:7, :, :].numpy(), ras[:, :, 1:9])  # x padded 1+1, z cropped 1+1
    assert float(out[0, 0].max()) == -1000.0 and float(out.max()) == 1000.0
    resampled = prepare(tmp_path / "lps.nii.gz", Preprocessing(spacing=(1.0, 1.0, 1.0), crop=None, center_ratio=None))
    assert resampled.shape[1:] == (11, 15, 19)


# ---- the feature network ------------------------------------------------------------------------------

def test_radimagenet_loads_the_published_layout(feature_file, tmp_path):
    network = load_radimagenet(feature_file)
    state = published_layout()
    loaded = network.state_dict()
    assert set(loaded) == set(state) and len(state) == 371
    for key in ("conv1.bias", "layer2.0.downsample.0.weight", "layer4.2.bn3.running_var"):
        assert torch.equal(loaded[key], state[key])
    from safetensors.torch import save_file

    save_file(state, tmp_path / "radimagenet.safetensors")
    again = load_radimagenet(tmp_path / "radimagenet.safetensors")
    assert torch.equal(again.state_dict()["layer3.5.conv2.weight"], state["layer3.5.conv2.weight"])
    with torch.no_grad():
        features = network.features(torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert features.shape == (4, 2048)
    assert float(features.std(0).mean()) > 1e-3  # random weights give varied, non-zero features


def test_radimagenet_refuses_another_layout(tmp_path):
    state = published_layout()
    state["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(state, tmp_path / "torchvision.pth")
    with pytest.raises(MaisiError, match="unexpected fc.weight"):
        load_radimagenet(tmp_path / "torchvision.pth")


# ---- maisi evaluate fid -------------------------------------------------------------------------------

def test_fid_cli_self_zero_and_different_set_positive(tmp_path, feature_file, capsys):
    real = write_set(tmp_path / "real", (1, 2, 3))
    other = write_set(tmp_path / "other", (4, 5, 6), lesion_hu=600.0)
    report_path = tmp_path / "self.json"
    cache = ["--feature-cache", str(tmp_path / "cache")]
    assert maisi(["evaluate", "fid", "--real", str(real), "--synthetic", str(real), "--features", str(feature_file),
                  *SMALL, *cache, "--json", str(report_path)]) == 0
    table = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert set(report["planes"]) == {"axial", "coronal", "sagittal"}
    assert report["planes"]["axial"]["real_slices"] == 3 * 13  # 32 * 0.4: slices int(9.6)=9 .. int(22.4)-1=21
    for row in report["planes"].values():
        assert abs(row["fid"]) < 1e-6
    assert "average" in table and "sagittal" in table
    assert report["feature_cache"]["images_reused"] == 3  # the synthetic set is the real one
    report_path = tmp_path / "other.json"
    assert maisi(["evaluate", "fid", "--real", str(real), "--synthetic", str(other), "--features", str(feature_file),
                  *SMALL, "--planes", "axial,sagittal", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert set(report["planes"]) == {"axial", "sagittal"}
    assert all(row["fid"] > 1e-3 for row in report["planes"].values())
    assert report["fid_average"] == pytest.approx(np.mean([r["fid"] for r in report["planes"].values()]))
    other_args = ["evaluate", "fid", "--real", str(real), "--synthetic", str(other), "--features", str(feature_file),
                  *SMALL, "--planes", "axial,sagittal", *cache, "--json", str(tmp_path / "cached.json")]
    assert maisi(other_args) == 0 and maisi(other_args) == 0
    cached = json.loads((tmp_path / "cached.json").read_text())
    assert cached["feature_cache"]["images_reused"] == 6  # second run: both sets from the cache
    assert cached["fid_average"] == pytest.approx(report["fid_average"], rel=1e-9)


# ---- bad input ----------------------------------------------------------------------------------------

def _fails_with(capsys, argv, *phrases) -> str:
    assert maisi(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err
    for phrase in phrases:
        assert phrase in err
    return err


def test_fid_bad_input(tmp_path, feature_file, capsys, monkeypatch):
    monkeypatch.setenv("MAISI_HOME", str(tmp_path / "home"))
    real = write_set(tmp_path / "real", (1, 2))
    (tmp_path / "empty").mkdir()
    _fails_with(capsys, ["evaluate", "fid", "--real", str(tmp_path / "empty"), "--synthetic", str(real)], "holds no images")
    empty_list = tmp_path / "empty.json"
    empty_list.write_text(json.dumps({"training": []}))
    _fails_with(capsys, ["evaluate", "fid", "--real", str(real), "--synthetic", str(empty_list)], "holds no images")
    # missing feature weights: one line saying how to provide them
    _fails_with(capsys, ["evaluate", "fid", "--real", str(real), "--synthetic", str(real)],
                "maisi weights download radimagenet-resnet50", "--features FILE")
    _fails_with(capsys, ["evaluate", "fid", "--real", str(real), "--synthetic", str(real), "--features",
                         str(tmp_path / "nowhere.pth")], "do not exist", "maisi weights download radimagenet-resnet50")
    # another modality: declared in a datalist, or guessed from the values (no air in an MR volume)
    mr = tmp_path / "mr"
    mr.mkdir()
    write_volume(mr / "t1.nii.gz", np.random.default_rng(0).uniform(0, 800, (36, 34, 40)).astype(np.float32),
                 np.eye(4), dtype=np.float32)
    _fails_with(capsys, ["evaluate", "fid", "--real", str(real), "--synthetic", str(mr), "--features", str(feature_file),
                         *SMALL], "the real set is CT and the synthetic set MR")
    declared = tmp_path / "declared.json"
    declared.write_text(json.dumps({"modality": "MRI", "training": [{"image": str(p)} for p in sorted(real.iterdir())]}))
    _fails_with(capsys, ["evaluate", "fid", "--real", str(real), "--synthetic", str(declared), "--features",
                         str(feature_file), *SMALL], "synthetic set MR")
    # images smaller than the crop when padding is off
    _fails_with(capsys, ["evaluate", "fid", "--real", str(real), "--synthetic", str(real), "--features", str(feature_file),
                         "--spacing", "none", "--center-crop", "64x64x64", "--no-pad"],
                "smaller than the crop 64x64x64", "lower --center-crop")
    _fails_with(capsys, ["evaluate", "fid", "--real", str(real), "--synthetic", str(real), "--center-crop", "64x0x1"],
                "--center-crop")
    _fails_with(capsys, ["evaluate", "fid", "--real", str(real), "--synthetic", str(real), "--features",
                         str(feature_file), *SMALL, "--planes", "axial,oblique"], "unknown plane oblique")


# ---- maisi evaluate vae / quality ---------------------------------------------------------------------

def test_perceptual_distance_zero_for_identical_volumes(feature_file):
    from MAISIEngine.evaluate.vae import perceptual_distance

    network = load_radimagenet(feature_file)
    a = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    assert perceptual_distance(network, a, a.clone()) == pytest.approx(0.0, abs=1e-9)
    assert perceptual_distance(network, a, torch.flip(a, dims=(2,))) > 1e-4


def card_vae_figures() -> tuple[float, float]:
    """PSNR and SSIM of the demo model card's CPU section (what `bench/demo_quality.py` measured)."""
    import re

    card = (Path(__file__).resolve().parents[1] / "MAISIEngine/assets/demo/MODEL_CARD.md").read_text()
    section = card.split("<!-- cpu-figures:begin -->")[1].split("<!-- cpu-figures:end -->")[0]
    found = re.search(r"PSNR ([0-9.]+) dB, SSIM ([0-9.]+)", section)
    assert found, "the model card's CPU section gives the VAE's PSNR and SSIM"
    return float(found.group(1)), float(found.group(2))


@pytest.mark.slow
def test_vae_cli_reproduces_the_model_card_on_the_held_out_phantoms(tmp_path, capsys):
    """The card's figures come from `bench/demo_quality.py` (unsplit network); ours through the TSP path."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from demo_quality import held_out_phantom

    for index in range(3):
        held = held_out_phantom(index)
        write_volume(tmp_path / "images" / f"held_out_{held.seed}.nii.gz", held.ct, held.affine, dtype=np.int16)
    assert maisi(["evaluate", "vae", "--images", str(tmp_path / "images"), "--model", "demo",
                  "--json", str(tmp_path / "vae.json")]) == 0
    report = json.loads((tmp_path / "vae.json").read_text())
    psnr, ssim = card_vae_figures()
    assert len(report["images"]) == 3
    assert abs(report["overall"]["psnr_db"] - psnr) <= 0.05
    assert abs(report["overall"]["ssim"] - ssim) <= 0.002
    assert "mean of 3" in capsys.readouterr().out


def test_quality_cli_pass_rates_per_organ_group(tmp_path, capsys):
    from MAISIEngine.phantom import make_phantom

    entries = []
    for seed in (3, 4):
        phantom = make_phantom(size=(64, 64, 64), spacing=(6.0, 6.0, 6.0), region="abdomen", seed=seed)
        ct = np.asarray(phantom.ct, np.float32)
        if seed == 4:
            ct[np.asarray(phantom.labels) == 1] = 400.0  # liver far too bright
        write_volume(tmp_path / f"ct_{seed}.nii.gz", ct, phantom.affine, dtype=np.float32)
        write_volume(tmp_path / f"ct_{seed}_label.nii.gz", phantom.labels, phantom.affine, dtype=np.uint8)
        entries.append({"image": f"ct_{seed}.nii.gz", "label": f"ct_{seed}_label.nii.gz"})
    (tmp_path / "list.json").write_text(json.dumps({"training": entries}))
    for source in (tmp_path / "list.json", tmp_path):  # a datalist, and a folder paired by name
        assert maisi(["evaluate", "quality", str(source), "--json", str(tmp_path / "q.json")]) == 0
        report = json.loads((tmp_path / "q.json").read_text())
        assert report["images"] == 2 and report["passed"] == 1
        liver = report["organ_groups"]["liver"]
        assert (liver["checked"], liver["passed"], liver["pass_rate"]) == (2, 1, 0.5)
        assert liver["median_hu_max"] == 400.0
        assert report["organ_groups"]["spleen"]["pass_rate"] == 1.0
        out = capsys.readouterr().out
        assert "1/2 images pass" in out and "FAIL ct_4.nii.gz: liver" in out
    (tmp_path / "alone").mkdir()
    write_volume(tmp_path / "alone" / "ct.nii.gz", np.zeros((8, 8, 8), np.float32), np.eye(4))
    assert maisi(["evaluate", "quality", str(tmp_path / "alone")]) == 2
    assert "has no label map" in capsys.readouterr().err


def test_a_batch_folder_counts_its_own_samples_only(tmp_path):
    """`maisi batch` writes datalist.json mixing the user's real cases (synthetic: false) with its samples."""
    from MAISIEngine.evaluate.sources import read_set

    for name in ("samples/sample_00000/image.nii.gz", "samples/sample_00000/labels.nii.gz", "real/ct.nii.gz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_volume(tmp_path / name, np.zeros((4, 4, 4), np.float32), np.eye(4))
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [
        {"image": str(tmp_path / "real/ct.nii.gz"), "label": str(tmp_path / "real/ct.nii.gz"), "synthetic": False},
        {"image": "samples/sample_00000/image.nii.gz", "label": "samples/sample_00000/labels.nii.gz", "synthetic": True}]}))
    cases = read_set(tmp_path)
    assert [(c.image, c.label) for c in cases] == [(tmp_path / "samples/sample_00000/image.nii.gz",
                                                    tmp_path / "samples/sample_00000/labels.nii.gz")]
    assert len(read_set(tmp_path / "datalist.json")) == 2  # a datalist named as such is read whole


def test_vae_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails_with(capsys, ["evaluate", "vae", "--images", str(tmp_path / "empty")], "holds no images")
    write_volume(tmp_path / "tiny" / "ct.nii.gz", np.zeros((8, 40, 40), np.float32), np.eye(4))
    _fails_with(capsys, ["evaluate", "vae", "--images", str(tmp_path / "tiny"), "--model", "demo"],
                "too small for 3D SSIM")
    _fails_with(capsys, ["evaluate", "vae", "--images", str(tmp_path / "tiny"), "--model", "no-such-model"], "no-such-model")
