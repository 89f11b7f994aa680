"""The engine beside NVIDIA's own inference code (NV-Generate-CTMR) on the same masks and the same noise.

For rflow-ct and ddpm-ct the real architectures are built with every parameter random (the layers MONAI
initialises to zero included, or the U-Net returns zero and nothing is compared), saved in NVIDIA's
checkpoint layout, and loaded twice: by the reference's `load_image_models` and by the engine. Each case
then runs

- the reference: its mask loading transforms (as `validate_user_mask`: LoadImage, channel first,
  Orientation to RAS), `build_conditioning_tensors`, and its own sampling function
  `ldm_conditional_sample_one_image_from_mask` (ControlNet + U-Net loop, classifier-free guidance with the
  tumor-free mask, sliding-window VAE decode, HU mapping, air outside the mask);
- the engine: `prepare_mask`, `build_conditions`, `sample`, the exact TSP decode and `to_hounsfield`, the
  functions `maisi generate` runs;

from the same initial latent noise (the reference's `initialize_noise_latents` is handed the engine's
seeded noise; DDPM's per-step noise comes from the same seed on both sides). Printed per quantity: both
values (mean |x|) and the largest difference, absolute and relative to the reference's largest |x|.

The reference is called on the CPU as on a GPU, less its `autocast("cuda")` (inactive on a CPU): its
float16 inputs (noise, spacing, mask bit-planes) are given to the networks as float32 by a thin wrapper
that records them, its VAE is built with `norm_float16` off and at most 4 tensor splits (ddpm-ct's 8 are
too thin for a 64^3 volume) (MONAI's float16 GroupNorm needs CUDA) and its
U-Net and ControlNet without flash attention (MONAI refuses it without CUDA), as the engine does on a CPU.

    python bench/reference_equivalence.py --reference /path/to/NV-Generate-CTMR
    python bench/reference_equivalence.py --reference DIR --size 64 --steps 3 --models rflow-ct
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from MAISIEngine import masks as mask_ops  # noqa: E402
from MAISIEngine.io.nifti import Volume, write_volume  # noqa: E402
from MAISIEngine.modeldir import random_model_directory  # noqa: E402
from MAISIEngine.models import load_model  # noqa: E402
from MAISIEngine.pipeline import (GenerationRequest, build_conditions, decode_latent, prepare_mask,  # noqa: E402
                                  seeded_noise, to_hounsfield)
from MAISIEngine.presets import load_preset  # noqa: E402
from MAISIEngine.sampling import make_scheduler, sample  # noqa: E402

NETWORK_CONFIGS = {"rflow-ct": "config_network_rflow.json", "ddpm-ct": "config_network_ddpm.json"}
MODALITY = {"rflow-ct": 1, "ddpm-ct": 1}


class Recorder(torch.nn.Module):
    """Wraps a reference network: records the tensors of every call and gives half tensors as float32."""

    def __init__(self, inner: torch.nn.Module, calls: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.inner = inner
        self.calls = calls

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, **kwargs: Any) -> Any:
        self.calls.append({k: v.detach().float().clone() for k, v in kwargs.items() if torch.is_tensor(v)})
        cast = {k: (v.float() if torch.is_tensor(v) and v.dtype == torch.float16 else v) for k, v in kwargs.items()}
        return self.inner(**cast)


class DecodeRecorder(torch.nn.Module):
    """Wraps the reference's VAE: records the latent (already divided by the scale factor) it decodes."""

    def __init__(self, inner: torch.nn.Module, seen: list[torch.Tensor]) -> None:
        super().__init__()
        self.inner = inner
        self.seen = seen

    def decode_stage_2_outputs(self, z: torch.Tensor) -> torch.Tensor:
        self.seen.append(z.detach().float().clone())
        return self.inner.decode_stage_2_outputs(z.float())


def engine_recorder(network: torch.nn.Module, calls: list[dict[str, torch.Tensor]]) -> Any:
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        calls.append({k: v.detach().float().clone() for k, v in kwargs.items() if torch.is_tensor(v)})

    return network.register_forward_pre_hook(hook, with_kwargs=True)


def reference_networks(ref_dir: Path, model: str, model_dir: Path, ref: Any) -> tuple:
    config = json.loads((ref_dir / "configs" / NETWORK_CONFIGS[model]).read_text())
    config["autoencoder_def"]["norm_float16"] = False
    # ddpm-ct's config splits the VAE's tensors 8 ways, too thin for a small test volume's 3x3x3 convolutions
    config["autoencoder_def"]["num_splits"] = min(int(config["autoencoder_def"].get("num_splits", 1)), 4)
    for key in ("diffusion_unet_def", "controlnet_def"):  # MONAI refuses flash attention without CUDA
        config[key]["use_flash_attention"] = False
    weights = load_preset(str(model_dir)).weights
    args = Namespace(**config, trained_autoencoder_path=str(model_dir / weights["autoencoder"]),
                     trained_diffusion_path=str(model_dir / weights["diffusion_unet"]),
                     trained_controlnet_path=str(model_dir / weights["controlnet"]))
    return ref.utils_infer.load_image_models(args, torch.device("cpu"))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def make_masks(size: int, spacing: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """RAS, LPS and oblique label maps (body 200, liver, spleen, a vertebra), and one with a liver tumor."""
    n = size
    labels = np.zeros((n, n, n), np.uint8)
    labels[4:n - 4, 6:n - 6, :] = 200
    labels[10:n // 2, 12:n // 2 + 4, 8:n - 8] = 1
    labels[n // 2 + 4:n - 10, 12:n // 2, 10:n // 2 + 6] = 3
    labels[n // 2 - 3:n // 2 + 3, n - 16:n - 10, 4:n - 4] = 33
    ras = np.diag([spacing, spacing, spacing, 1.0])
    ras[:3, 3] = [-n * spacing / 2, -n * spacing / 2, -n * spacing / 2]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = n - 1
    angle = np.deg2rad(15.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]])
    oblique = ras.copy()
    oblique[:3, :3] = rotation @ ras[:3, :3]
    tumor = labels.copy()
    c = (n // 4 + 6, n // 4 + 8, n // 2)
    grid = np.indices(labels.shape)
    tumor[(sum((g - x) ** 2 for g, x in zip(grid, c)) <= 16) & (labels == 1)] = 26
    return {"RAS": (labels, ras), "LPS": (labels[::-1, ::-1].copy(), ras @ flip), "oblique": (labels, oblique),
            "liver tumor": (tumor, ras)}


def compare(name: str, ours: torch.Tensor | np.ndarray, theirs: torch.Tensor | np.ndarray) -> dict[str, Any]:
    a = torch.as_tensor(np.asarray(ours) if isinstance(ours, np.ndarray) else ours).double()
    b = torch.as_tensor(np.asarray(theirs) if isinstance(theirs, np.ndarray) else theirs).double()
    if a.shape != b.shape:
        return {"quantity": name, "error": f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"}
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    return {"quantity": name, "engine": round(float(a.abs().mean()), 6), "reference": round(float(b.abs().mean()), 6),
            "max_abs_diff": float(f"{diff:.3e}"), "max_rel_diff": float(f"{diff / scale:.3e}") if scale else 0.0}


def run_case(ref: Any, model_name: str, model_dir: Path, engine_model: Any, ref_nets: tuple, mask_path: Path,
             guidance: float, steps: int, seed: int) -> list[dict[str, Any]]:
    import monai

    autoencoder, unet, controlnet, scale_factor, scheduler = ref_nets
    # --- reference -----------------------------------------------------------------------------
    loader = monai.transforms.Compose([
        monai.transforms.LoadImaged(keys=["label"], image_only=True),
        monai.transforms.EnsureChannelFirstd(keys=["label"]),
        monai.transforms.Orientationd(keys=["label"], axcodes="RAS"),
        monai.transforms.EnsureTyped(keys=["label"], dtype=torch.long),
    ])
    label = loader({"label": str(mask_path)})["label"]
    spacing = tuple(float(torch.norm(label.affine[:3, i])) for i in range(3))
    shape = tuple(label.shape[1:])
    label = label.unsqueeze(0)
    include_region = unet.include_top_region_index_input
    spacing_t, top_t, bottom_t, modality_t = ref.utils_infer.build_conditioning_tensors(
        label, spacing, MODALITY[model_name], include_region, torch.device("cpu"))
    latent_shape = (4, shape[0] // 4, shape[1] // 4, shape[2] // 4)
    noise = seeded_noise((1, *latent_shape), seed, torch.device("cpu"))
    ref.utils_infer.initialize_noise_latents = lambda shape_, device: noise.clone()
    unet_calls: list[dict[str, torch.Tensor]] = []
    cn_calls: list[dict[str, torch.Tensor]] = []
    decoded_latents: list[torch.Tensor] = []
    torch.manual_seed(seed)  # DDPM's per-step noise: the global generator, seeded as the engine's
    tick = time.perf_counter()
    ref_image, _ = ref.infer_image_from_mask.ldm_conditional_sample_one_image_from_mask(
        autoencoder=DecodeRecorder(autoencoder, decoded_latents), diffusion_unet=Recorder(unet, unet_calls),
        controlnet=Recorder(controlnet, cn_calls), noise_scheduler=scheduler, scale_factor=scale_factor,
        device=torch.device("cpu"), combine_label_or=label, spacing_tensor=spacing_t, latent_shape=latent_shape,
        output_size=shape, noise_factor=1.0, top_region_index_tensor=top_t, bottom_region_index_tensor=bottom_t,
        modality_tensor=modality_t, num_inference_steps=steps, autoencoder_sliding_window_infer_size=(48, 48, 48),
        autoencoder_sliding_window_infer_overlap=0.6666, cfg_guidance_scale=guidance)
    ref_s = time.perf_counter() - tick
    # --- engine ----------------------------------------------------------------------------------
    tick = time.perf_counter()
    stored = nib.load(str(mask_path))
    mask = Volume(np.asarray(stored.dataobj), stored.affine)
    request = GenerationRequest(model=str(model_dir), mask=mask, seed=seed, steps=steps, guidance_scale=guidance,
                                device="cpu")
    prepared = prepare_mask(engine_model.preset, request, lambda message: None)
    cond, _ = build_conditions(engine_model, prepared.labels, None, guidance)
    our_unet_calls: list[dict[str, torch.Tensor]] = []
    our_cn_calls: list[dict[str, torch.Tensor]] = []
    handles = [engine_recorder(engine_model.unet, our_unet_calls), engine_recorder(engine_model.controlnet, our_cn_calls)]
    try:
        latent = sample(engine_model.unet, engine_model.controlnet, make_scheduler(engine_model.preset), noise.clone(),
                        cond, steps, torch.Generator().manual_seed(seed), precision="fp32")
    finally:
        for handle in handles:
            handle.remove()
    decoded = decode_latent(engine_model, latent / engine_model.scale_factor)
    our_hu = to_hounsfield(decoded, prepared.labels.array)
    our_s = time.perf_counter() - tick
    # --- comparison ------------------------------------------------------------------------------
    rows = [compare("mask in RAS voxel order (label ids)", prepared.labels.array, label[0, 0].numpy()),
            compare("spacing tensor (mm x 100)", cond.spacing if cond.spacing is not None else torch.zeros(0),
                    unet_calls[0]["spacing_tensor"][:1])]
    if cond.top_region is not None:
        rows.append(compare("top/bottom region tensors", torch.cat([cond.top_region, cond.bottom_region]),
                            torch.cat([unet_calls[0]["top_region_index_tensor"][:1],
                                       unet_calls[0]["bottom_region_index_tensor"][:1]])))
    ref_cn = cn_calls[0]
    rows.append(compare("ControlNet input (mask bit-planes)", cond.controlnet_cond, ref_cn["controlnet_cond"][:1]))
    if guidance > 0:
        rows.append(compare("ControlNet input, unconditional (tumor-free)", cond.controlnet_uncond,
                            ref_cn["controlnet_cond"][1:2]))
        if "class_labels" in ref_cn:
            ours_classes = torch.tensor([our_cn_calls[0]["class_labels"][0], our_cn_calls[1]["class_labels"][0]])
            rows.append(compare("class labels (cond, uncond)", ours_classes, ref_cn["class_labels"]))
    elif "class_labels" in ref_cn:
        rows.append(compare("class labels", our_cn_calls[0]["class_labels"], ref_cn["class_labels"]))
    per_step = 2 if guidance > 0 else 1
    our_t = torch.stack([c["timesteps"][0] for c in our_unet_calls[::per_step]])
    ref_t = torch.stack([c["timesteps"][0] for c in unet_calls])
    rows.append(compare("timesteps", our_t, ref_t))
    rows.append(compare("first U-Net input latent", our_unet_calls[0]["x"], unet_calls[0]["x"][:1]))
    rows.append(compare("final latent (divided by scale factor)", latent / engine_model.scale_factor,
                        decoded_latents[0]))
    rows.append(compare("HU image (engine int16, reference float)", our_hu.astype(np.float64),
                        ref_image[0, 0].numpy()))
    rows.append(compare("HU image, both rounded to int16", our_hu.astype(np.float64),
                        np.round(ref_image[0, 0].numpy())))
    for row in rows:
        row["seconds"] = {"engine": round(our_s, 1), "reference": round(ref_s, 1)}
    return rows


def decode_departure(ref: Any, engine_model: Any, ref_autoencoder: torch.nn.Module, latent_shape: tuple[int, ...],
                     seed: int) -> dict[str, Any]:
    """The exact TSP decode against the reference's gaussian sliding windows on a latent larger than a window."""
    from monai.inferers.inferer import SlidingWindowInferer

    latent = seeded_noise((1, 4, *latent_shape), seed + 1, torch.device("cpu")) * 0.5
    exact = decode_latent(engine_model, latent).float().clamp(0, 1) * 2000 - 1000
    recon = ref.utils_infer.ReconModel(ref_autoencoder, 1.0)
    inferer = SlidingWindowInferer(roi_size=[16, 16, 16], sw_batch_size=1, progress=False, mode="gaussian",
                                   overlap=0.6666, sw_device=torch.device("cpu"), device=torch.device("cpu"))
    with torch.no_grad():
        windows = ref.utils.dynamic_infer(inferer, recon, latent).float().clamp(0, 1) * 2000 - 1000
        whole = recon(latent).float().clamp(0, 1) * 2000 - 1000
    return {"latent": list(latent_shape), "roi_latent": [16, 16, 16], "overlap": 0.6666,
            "tsp_vs_whole_decode_max_hu": round(float((exact - whole).abs().max()), 4),
            "tsp_vs_sliding_windows_max_hu": round(float((exact - windows).abs().max()), 2),
            "tsp_vs_sliding_windows_mean_hu": round(float((exact - windows).abs().mean()), 3)}


def envelope_departure(size: int, spacing: float) -> dict[str, Any]:
    """Voxels the engine gives body (200) when a mask lacks it; the reference conditions on 0 there."""
    labels = make_masks(size, spacing)["RAS"][0].copy()
    labels[labels == 200] = 0
    added = mask_ops.add_body_envelope(labels, (spacing,) * 3)
    return {"mask_without_200_voxels_changed": int((added != labels).sum()), "of": int(labels.size)}


def import_reference(ref_dir: Path) -> Any:
    sys.path.insert(0, str(ref_dir))
    import scripts.infer_image_from_mask as infer_image_from_mask  # noqa: PLC0415
    import scripts.utils as utils  # noqa: PLC0415
    import scripts.utils_infer as utils_infer  # noqa: PLC0415

    return Namespace(infer_image_from_mask=infer_image_from_mask, utils_infer=utils_infer, utils=utils)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of NV-Generate-CTMR")
    parser.add_argument("--models", nargs="+", default=["rflow-ct", "ddpm-ct"], choices=list(NETWORK_CONFIGS))
    parser.add_argument("--size", type=int, default=64, help="image side in voxels (latent = size / 4)")
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=None, metavar="MASK:GUIDANCE",
                        help="subset of the cases, e.g. RAS:2 'liver tumor:2' (default: all five)")
    parser.add_argument("--no-decode-departure", action="store_true",
                        help="skip the TSP versus sliding-window decode measurement")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref = import_reference(args.reference.resolve())
    cases = [("RAS", 0.0), ("LPS", 0.0), ("oblique", 0.0), ("RAS", 2.0), ("liver tumor", 2.0)]
    if args.cases:
        cases = [(text.rsplit(":", 1)[0], float(text.rsplit(":", 1)[1])) for text in args.cases]
    results: dict[str, Any] = {"command": " ".join(["python bench/reference_equivalence.py", *(argv or sys.argv[1:])]),
                               "cases": []}
    with tempfile.TemporaryDirectory(prefix="maisi-refeq-") as tmp:
        masks = {}
        for name, (array, affine) in make_masks(args.size, args.spacing).items():
            masks[name] = write_volume(Path(tmp) / f"{name.replace(' ', '_')}.nii.gz", array, affine, dtype=np.uint8)
        for model_name in args.models:
            model_dir = random_model_directory(Path(tmp) / model_name, model_name, seed=args.seed, scale_factor=0.9,
                                               all_random=True)
            engine_model = load_model(load_preset(str(model_dir)), torch.device("cpu"))
            ref_nets = reference_networks(args.reference.resolve(), model_name, model_dir, ref)
            identical = {"unet": same_weights(engine_model.unet, ref_nets[1]),
                         "controlnet": same_weights(engine_model.controlnet, ref_nets[2]),
                         "autoencoder": same_weights(engine_model.autoencoder, ref_nets[0])}
            print(f"\n== {model_name}: weights loaded by the reference equal the engine's: {identical}", flush=True)
            for mask_name, guidance in cases:
                rows = run_case(ref, model_name, model_dir, engine_model, ref_nets, masks[mask_name], guidance,
                                args.steps, args.seed)
                print(f"-- {model_name} | mask {mask_name} | guidance {guidance} | steps {args.steps} | "
                      f"seconds engine {rows[0]['seconds']['engine']} reference {rows[0]['seconds']['reference']}")
                for row in rows:
                    if "error" in row:
                        print(f"   {row['quantity']:<46} {row['error']}")
                    else:
                        print(f"   {row['quantity']:<46} engine {row['engine']:>12.6g}  reference {row['reference']:>12.6g}"
                              f"  max|diff| {row['max_abs_diff']:.3e}  relative {row['max_rel_diff']:.3e}")
                results["cases"].append({"model": model_name, "mask": mask_name, "guidance": guidance,
                                         "weights_identical": identical, "rows": rows})
            if model_name == args.models[0] and not args.no_decode_departure:
                departure = decode_departure(ref, engine_model, ref_nets[0], (16, 16, 32), args.seed)
                results["decode_departure"] = departure
                print(f"\n== decode: exact TSP vs the reference's sliding windows: {departure}")
            del engine_model, ref_nets
    results["envelope_departure"] = envelope_departure(args.size, args.spacing)
    print(f"== body envelope when label 200 is missing: {results['envelope_departure']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
