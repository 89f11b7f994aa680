"""Mask + conditions -> synthetic CT + labels + provenance: the generation pipeline every front end runs.

mask (any grid) -> validated MAISI label map on the target grid (body envelope added) -> bit-planes ->
ControlNet + U-Net sampling in latent space (seeded) -> exact TSP decode -> HU -> image + labels +
provenance, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from MAISIEngine import __version__, conditioning, geometry, orientation
from MAISIEngine import masks as mask_ops
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import atomic_directory
from MAISIEngine.io.nifti import Volume, write_volume
from MAISIEngine.io.privacy import scrub
from MAISIEngine.models import LoadedModel, load_model, resolve_device, weights_provenance
from MAISIEngine.presets import Preset, load_preset
from MAISIEngine.sampling import DEFAULT_PRECISION, Conditions, make_scheduler, sample

HU_MIN, HU_MAX = -1000.0, 1000.0
OUTPUT_GRIDS = ("model", "input")
GUIDANCE_MEANING = ("classifier-free guidance as NVIDIA's reference: uncond + s * (cond - uncond), s = guidance_scale; "
                    "0 = off; the unconditional branch has class 0 and the mask with tumors replaced by host organs")
IMAGE_NAME, LABELS_NAME, PROVENANCE_NAME = "image.nii.gz", "labels.nii.gz", "provenance.json"


@dataclass
class ProgressEvent:
    """Where a job stands: stage name, step k of n in that stage, and an estimate of the time left."""

    stage: str
    step: int
    total: int
    eta_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"event": "progress", **asdict(self)}


ProgressCallback = Callable[[ProgressEvent], None]
LogCallback = Callable[[str], None]


class StageClock:
    """Turns step counts into progress events with an ETA from the stage's own pace."""

    def __init__(self, callback: ProgressCallback | None, stage: str) -> None:
        self.callback, self.stage, self.start = callback, stage, time.perf_counter()

    def __call__(self, step: int, total: int) -> None:
        if self.callback is None:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / step * (total - step) if step > 0 else None
        self.callback(ProgressEvent(self.stage, step, total, None if eta is None else round(eta, 2)))


@dataclass
class GenerationRequest:
    """What to generate. `mask` may be on any grid; `size`/`spacing` resample it keeping its position."""

    model: str = "demo"
    mask: Volume | None = None
    mask_source: str = ""
    size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    region: list[str] | None = None
    seed: int = 0
    steps: int | None = None
    guidance_scale: float | None = None
    modality: str | None = None
    output_grid: str = "model"
    device: str = "auto"
    precision: str = DEFAULT_PRECISION
    quality_retries: int = 0
    max_gpu_memory: int | None = None
    tsp_devices: list[str] | None = None


@dataclass
class GenerationResult:
    image: Volume
    labels: Volume
    provenance: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def write(self, out_dir: str | Path, output_format: str = "nifti") -> dict[str, str]:
        """Write image, labels and provenance (and DICOM when asked) as one atomic folder update."""
        return write_outputs(out_dir, self.image, self.labels, self.provenance, output_format)


def write_outputs(out_dir: str | Path, image: Volume, labels: Volume, provenance: dict[str, Any],
                  output_format: str = "nifti") -> dict[str, str]:
    """Image (int16 HU), labels (uint8 ids) and provenance JSON, all or nothing."""
    out_dir = Path(out_dir)
    provenance = scrub(provenance)  # no path, user or host name leaves the machine
    if output_format not in ("nifti", "dicom"):
        raise MaisiError(f"unknown output format '{output_format}'", "use nifti or dicom")
    description = f"maisi {provenance.get('model', '')} seed {provenance.get('seed', '')}"
    with atomic_directory(out_dir) as tmp:
        write_volume(tmp / IMAGE_NAME, image.array, image.affine, description, np.int16)
        write_volume(tmp / LABELS_NAME, labels.array, labels.affine, description, np.uint8)
        (tmp / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=2, sort_keys=True))
        if output_format == "dicom":
            from MAISIEngine.io.dicom import export_dicom

            export_dicom(image, labels.array, tmp / "dicom", provenance=provenance)
    paths = {"output_dir": str(out_dir), "image": str(out_dir / IMAGE_NAME), "labels": str(out_dir / LABELS_NAME),
             "provenance": str(out_dir / PROVENANCE_NAME)}
    if output_format == "dicom":
        paths["dicom"] = str(out_dir / "dicom")
    return paths


def template_mask(preset: Preset, size: tuple[int, int, int], spacing: tuple[float, float, float],
                  region: list[str] | None, seed: int) -> Volume:
    """A phantom label map on the requested grid, for users who start from nothing."""
    from MAISIEngine.phantom import make_phantom

    regions = region or ["chest", "abdomen"]
    name = "chest-abdomen" if {"chest", "abdomen"} <= set(regions) else regions[0]
    # Only the labels are used: sampling the CT at voxel centres skips its partial-volume rendering.
    phantom = make_phantom(size=size, spacing=spacing, region=name, seed=seed, supersample=1)
    return Volume(phantom.labels, phantom.affine)


@dataclass
class PreparedMask:
    """The label map that conditions the networks (RAS voxel order, on the output grid) and how it was made."""

    labels: Volume
    orientation: dict[str, Any] | None = None
    grid_fit: str | None = None
    input_grid: tuple[np.ndarray, tuple[int, int, int]] | None = None
    """Affine and shape of the mask as given, for `--output-grid input`."""


def prepare_mask(preset: Preset, request: GenerationRequest, warn: LogCallback,
                 note: LogCallback | None = None) -> PreparedMask:
    """The engine's one entry for masks: RAS voxel order, the mask's spacing range-checked, the grid fitted
    to one the model takes, resampled (nearest) and the body envelope added.

    Every front end (CLI, worker, batch, server) reaches the networks through here, whatever the mask's
    source (NIfTI, DICOM SEG, CT+SEG folder, a front end's label map).
    """
    if request.mask is None:
        if request.size is None or request.spacing is None:
            raise MaisiError(
                "neither a mask nor an output size and spacing were given",
                "pass --mask LABELS.nii.gz, or --size X Y Z and --spacing sx sy sz to start from a phantom template",
            )
        size, spacing = geometry.check_size(preset, request.size), geometry.check_spacing(request.spacing)
        for message in geometry.range_warnings(preset, size, spacing):
            warn(message)
        return PreparedMask(template_mask(preset, size, spacing, request.region, request.seed))
    given = request.mask
    mask_ops.validate_label_ids(given.array)
    geometry.check_mask_spacing(given.spacing)
    mask, how = orientation.to_ras(Volume(np.asarray(given.array).astype(np.uint8), given.affine))
    grid_fit = None
    size, spacing = geometry.fit_grid(preset, mask.shape, mask.spacing, request.size, request.spacing)
    if request.size is None and request.spacing is None:
        try:
            geometry.check_size(preset, size)
        except MaisiError as exc:
            size, spacing = geometry.nearest_accepted_grid(preset, mask.shape, mask.spacing)
            grid_fit = (f"the mask's grid {list(mask.shape)} x {[round(s, 4) for s in mask.spacing]} mm is not one "
                        f"{preset.name} takes ({exc.message.split(': ')[-1]}); resampled (nearest) to "
                        f"{list(size)} x {[round(s, 4) for s in spacing]} mm, same centre and field of view")
            (note or warn)(grid_fit)
    for message in geometry.range_warnings(preset, size, spacing):
        warn(message)
    resampled = mask_ops.resample_labels(mask, size, spacing)
    with_body = mask_ops.add_body_envelope(resampled.array, spacing)
    return PreparedMask(Volume(with_body.astype(np.uint8), resampled.affine), how.describe(), grid_fit,
                        (np.asarray(given.affine, dtype=np.float64), given.shape))


def prepare_labels(preset: Preset, request: GenerationRequest, warn: LogCallback) -> Volume:
    """The validated MAISI label map on the output grid, RAS voxel order, body envelope included."""
    return prepare_mask(preset, request, warn).labels


def build_conditions(model: LoadedModel, labels: Volume, region: list[str] | None,
                     guidance_scale: float, modality: str | None = None) -> tuple[Conditions, list[str]]:
    """Conditioning tensors of one volume; with guidance, also the tumor-free mask of the unconditional branch."""
    preset, device = model.preset, model.device
    as_tensor = torch.from_numpy(labels.array.astype(np.int64))[None, None]
    cond = Conditions(
        spacing=conditioning.spacing_tensor(labels.spacing, 1, device) if preset.conditioning.get("spacing") else None,
        class_labels=conditioning.modality_tensor(preset, 1, device, modality),
        controlnet_cond=mask_ops.label_bitplanes(as_tensor).to(device),
        guidance_scale=guidance_scale,
    )
    if guidance_scale != 0:
        tumor_free = mask_ops.remove_tumors(labels.array).astype(np.int64)
        cond.controlnet_uncond = mask_ops.label_bitplanes(torch.from_numpy(tumor_free)[None, None]).to(device)
    regions = region or conditioning.regions_from_labels(np.unique(labels.array).tolist())
    if preset.uses_region:
        cond.top_region, cond.bottom_region = conditioning.region_tensors(regions, 1, device)
    return cond, regions


def seeded_noise(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from the seed, so a seed means the same noise on every device."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def decode_latent(model: LoadedModel, latent: torch.Tensor, max_gpu_memory: int | None = None,
                  devices: list[str] | None = None) -> torch.Tensor:
    """Latent (already divided by the scale factor) -> VAE output, through the exact TSP executor."""
    from MAISIEngine import tsp

    return tsp.decode(model.autoencoder, latent, devices=devices, max_memory_bytes=max_gpu_memory)


def to_hounsfield(decoded: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """Clip to [0, 1], map to [-1000, 1000] HU, air outside the body; int16."""
    unit = decoded.float().clamp(0.0, 1.0)[0, 0].cpu().numpy()
    hu = unit * (HU_MAX - HU_MIN) + HU_MIN
    hu[labels == 0] = HU_MIN
    return np.round(hu).astype(np.int16)


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _quality(image: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
    try:
        from MAISIEngine.quality import check_quality
    except ImportError:
        return None
    return check_quality(image, labels).to_dict()


def generate(request: GenerationRequest, progress: ProgressCallback | None = None,
             log: LogCallback | None = None, model: LoadedModel | None = None) -> GenerationResult:
    """Run one generation (with quality retries) and return the result in memory."""
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        if log is not None:
            log(f"warning: {message}")

    timings: dict[str, float] = {}
    start = time.perf_counter()
    preset = model.preset if model is not None else load_preset(request.model)
    if request.output_grid not in OUTPUT_GRIDS:
        raise MaisiError(f"unknown output grid '{request.output_grid}'", f"use one of {', '.join(OUTPUT_GRIDS)}")
    if request.output_grid == "input" and request.mask is None:
        raise MaisiError("--output-grid input needs a mask to take the grid from", "pass --mask, or leave --output-grid out")
    modality = conditioning.check_modality(preset, request.modality)
    prepared = prepare_mask(preset, request, warn, note=log)
    labels = prepared.labels
    timings["prepare_s"] = time.perf_counter() - start
    device = model.device if model is not None else resolve_device(request.device)
    if model is None:
        StageClock(progress, "load")(0, 1)
        tick = time.perf_counter()
        model = load_model(preset, device)
        timings["load_s"] = time.perf_counter() - tick
        StageClock(progress, "load")(1, 1)
    steps = int(request.steps or preset.num_inference_steps)
    if steps < 1:
        raise MaisiError(f"--steps {steps} is not a positive number", f"use e.g. {preset.num_inference_steps}")
    guidance = preset.guidance_scale if request.guidance_scale is None else float(request.guidance_scale)
    if guidance < 0:
        raise MaisiError(f"--guidance {guidance} is negative", "use 0 (off) or a scale such as 2")
    cond, regions = build_conditions(model, labels, request.region, guidance, modality)
    latent_shape = (1, int(preset.diffusion_unet["in_channels"])) + tuple(s // preset.latent_downsample for s in labels.shape)

    attempts: list[dict[str, Any]] = []
    image_hu = np.zeros(labels.shape, np.int16)
    quality: dict[str, Any] | None = None
    for attempt in range(int(request.quality_retries) + 1):
        seed = int(request.seed) + attempt
        tick = time.perf_counter()
        noise = seeded_noise(latent_shape, seed, device)
        generator = torch.Generator(device=device).manual_seed(seed)
        latent = sample(model.unet, model.controlnet, make_scheduler(preset), noise, cond, steps, generator,
                        progress=StageClock(progress, "sampling"), precision=request.precision)
        timings["sampling_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        StageClock(progress, "decode")(0, 1)
        decoded = decode_latent(model, latent / model.scale_factor, request.max_gpu_memory, request.tsp_devices)
        StageClock(progress, "decode")(1, 1)
        timings["decode_s"] = time.perf_counter() - tick
        image_hu = to_hounsfield(decoded, labels.array)
        quality = _quality(image_hu, labels.array)
        attempts.append({"seed": seed, "quality_passed": None if quality is None else quality.get("passed")})
        if quality is None or quality.get("passed", True) or attempt == request.quality_retries:
            break
        warn(f"seed {seed} failed the HU quality check; retrying with seed {seed + 1}")
    timings["total_s"] = time.perf_counter() - start

    provenance = {
        "synthetic": True,
        "engine": "MAISIEngine",
        "engine_version": __version__,
        "model": preset.name,
        "preset": preset.to_dict() if preset.weights_source == "directory" else preset.name,
        "weights": weights_provenance(model),
        "seed": attempts[-1]["seed"],
        "requested_seed": int(request.seed),
        "attempts": attempts,
        "steps": steps,
        "guidance_scale": guidance,
        "guidance": GUIDANCE_MEANING,
        "modality": modality,
        "modality_class": None if cond.class_labels is None else int(cond.class_labels[0]),
        "input_orientation": prepared.orientation,
        "grid_fit": prepared.grid_fit,
        "output_grid": request.output_grid,
        "scheduler": preset.scheduler_type,
        "size": list(labels.shape),
        "spacing": [round(s, 6) for s in labels.spacing],
        "affine": np.asarray(labels.affine).round(6).tolist(),
        "region": regions,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "precision": request.precision if device.type == "cuda" else "fp32",
        "decoder_precision": "fp16" if device.type == "cuda" else "fp32",  # the TSP planner's own choice
        "mask_source": request.mask_source or ("phantom template" if request.mask is None else "in memory"),
        "mask_sha256": array_sha256(labels.array),
        "quality": quality,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "warnings": warnings,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    image, out_labels = Volume(image_hu, labels.affine), labels
    if request.output_grid == "input" and prepared.input_grid is not None:
        image, out_labels = to_input_grid(image, labels, *prepared.input_grid)
        provenance["size"], provenance["affine"] = list(image.shape), np.asarray(image.affine).round(6).tolist()
        provenance["spacing"] = [round(s, 6) for s in image.spacing]
        provenance["generated_grid"] = {"size": list(labels.shape), "spacing": [round(s, 6) for s in labels.spacing]}
    return GenerationResult(image, out_labels, provenance, warnings)


def to_input_grid(image: Volume, labels: Volume, affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[Volume, Volume]:
    """CT (linear) and labels (nearest) resampled onto the mask's own grid and voxel order; air where the
    resampled labels are background."""
    hu = mask_ops.resample_to_reference(Volume(image.array.astype(np.float32), image.affine), affine, shape,
                                        order=1, cval=HU_MIN)
    ids = mask_ops.resample_to_reference(labels, affine, shape, order=0, cval=0)
    hu[ids == 0] = HU_MIN  # air outside the body, as on the generated grid
    return Volume(np.round(hu).astype(np.int16), affine.copy()), Volume(ids.astype(np.uint8), affine.copy())
