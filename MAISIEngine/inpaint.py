"""Tumor inpainting: a realistic tumor where the user painted one, everything else untouched.

Two routes behind one API:
- `controlnet-repaint` (training-free, works with any MAISI CT ControlNet): encode the CT with the exact
  TSP encoder, condition the ControlNet on the label map holding the painted tumor, and at every
  sampling step put the latents outside the (dilated) tumor region back on the noised trajectory of
  the original, so only the tumor and a margin are generated.
- `inpaint-controlnet` (the paper's inpainting ControlNet): a ControlNet conditioned on the masked
  image and the tumor mask, when the model ships one (`preset.inpaint_controlnet`).
Both decode, then paste into the original in image space with a narrow feathered band: voxels farther
than the margin from the tumor equal the input exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from MAISIEngine import __version__, conditioning, orientation
from MAISIEngine import labels as maisi_labels
from MAISIEngine import masks as mask_ops
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.nifti import Volume, read_volume, same_grid
from MAISIEngine.masktools.tumors import check_tumor_in_host, host_mask
from MAISIEngine.models import LoadedModel, load_model, resolve_device, weights_provenance
from MAISIEngine.pipeline import HU_MAX, HU_MIN, StageClock, array_sha256, seeded_noise, write_outputs
from MAISIEngine.presets import load_preset
from MAISIEngine.sampling import Conditions, make_scheduler, sample
from MAISIEngine.train.data import pad_to_multiple

METHODS = ("controlnet-repaint", "inpaint-controlnet")
CONTEXT_MM = 48.0
"""Anatomy kept around the tumor in the crop that is generated, so the model sees its surroundings."""
HOST_SPILL_TOLERANCE = 0.95
"""Share of painted tumor voxels that must lie in the host organ; the rest is trimmed away."""
VAE_VIEW_MAX_VOXELS = 256
"""Largest side (voxels) of the part of the CT the VAE sees when inpainting (see `vae_view`)."""
FEATHER_VOXELS = 2.0
"""Width of the blending band at the outer edge of the margin, in voxels."""


@dataclass
class InpaintRequest:
    image: Volume
    labels: Volume
    tumor: np.ndarray
    tumor_type: str
    model: str = "demo"
    method: str = "controlnet-repaint"
    margin_mm: float = 10.0
    seed: int = 0
    steps: int | None = None
    device: str = "auto"
    precision: str = "fp16"
    image_source: str = ""
    modality: str | None = None


def check_inputs(request: InpaintRequest, supported_types: list[str]) -> int:
    """Validate grids, tumor mask, type and host organ (trimming small spills); returns the tumor id."""
    if request.method not in METHODS:
        raise MaisiError(f"unknown inpainting method '{request.method}'", f"use one of {', '.join(METHODS)}")
    if request.tumor_type not in maisi_labels.TUMOR_TYPES:
        raise MaisiError(f"unknown tumor type '{request.tumor_type}'", f"use one of {', '.join(maisi_labels.TUMOR_TYPES)}")
    if request.tumor_type not in supported_types:
        raise MaisiError(f"model '{request.model}' was not trained for {request.tumor_type} tumors",
                         f"this model inpaints {', '.join(supported_types) or 'no tumors'}")
    if not same_grid(request.image, request.labels):
        raise MaisiError("the image and the labels are on different grids (shape or affine differ)",
                         "resample the labels onto the CT grid first")
    if request.tumor.shape != request.image.shape:
        raise MaisiError(f"the tumor mask has shape {request.tumor.shape}, the image {request.image.shape}",
                         "paint the tumor on the CT's grid")
    tumor = request.tumor.astype(bool)
    if not tumor.any():
        raise MaisiError("the tumor mask is empty", "paint at least a few voxels of tumor")
    edges = np.zeros_like(tumor)
    edges[[0, -1], :, :] = edges[:, [0, -1], :] = edges[:, :, [0, -1]] = True
    if (tumor & edges).any():
        raise MaisiError("the tumor touches the border of the volume", "paint it fully inside the field of view")
    tumor_id = maisi_labels.TUMOR_TYPES[request.tumor_type]
    host = host_mask(request.labels.array, tumor_id)
    if host[tumor].mean() >= HOST_SPILL_TOLERANCE:
        tumor &= host  # a brush stroke that spills a little over the organ's edge is trimmed, not refused
    check_tumor_in_host(request.labels.array, tumor, tumor_id)
    request.tumor = tumor
    return tumor_id


def crop_box(tumor: np.ndarray, spacing: tuple[float, float, float], margin_mm: float, divisor: int,
             shape: tuple[int, int, int], align: int = 1) -> tuple[slice, ...]:
    """A box around the tumor with margin and context, sides multiples of `divisor`, inside the volume,
    starting on multiples of `align` (so it is a box of whole latent voxels)."""
    if any(n < divisor for n in shape):
        raise MaisiError(f"the volume {list(shape)} is smaller than the model's block of {divisor} voxels",
                         "inpaint into a larger CT")
    coords = np.argwhere(tumor)
    low, high = coords.min(axis=0), coords.max(axis=0) + 1
    box: list[slice] = []
    for axis in range(3):
        extra = int(np.ceil((margin_mm + CONTEXT_MM) / spacing[axis]))
        want = (high[axis] - low[axis]) + 2 * extra
        side = min(int(np.ceil(want / divisor) * divisor), shape[axis] // divisor * divisor)
        centre = (low[axis] + high[axis]) // 2
        start = int(np.clip(centre - side // 2, 0, shape[axis] - side)) // align * align
        box.append(slice(start, start + side))
    return tuple(box)


def vae_view(box: tuple[slice, ...], shape: tuple[int, int, int], align: int,
             max_side: int = VAE_VIEW_MAX_VOXELS) -> tuple[slice, ...]:
    """The part of the CT the VAE encodes and decodes: all of it up to `max_side` voxels per axis, else a
    window of that size around the crop (starting on whole latent voxels).

    The VAE's GroupNorms normalise with the statistics of what it sees; a crop that is mostly one organ
    shifts soft tissue by tens of HU against what the same VAE gives for the whole CT, which is what
    generation decodes. The cap keeps a 512^3 CT on a CPU from costing a whole-volume encode and decode.
    """
    view = []
    for b, n in zip(box, shape):
        side = min(n, max(max_side, b.stop - b.start))
        start = int(np.clip((b.start + b.stop - side) // 2, 0, n - side)) // align * align
        start = min(start, b.start // align * align)
        view.append(slice(start, min(n, max(start + side, b.stop))))
    return tuple(view)


def feather_weights(tumor: np.ndarray, spacing: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """1 inside the tumor + margin (less the band), falling to 0 across the band, exactly 0 beyond."""
    distance = ndimage.distance_transform_edt(~tumor, sampling=spacing)
    band_mm = FEATHER_VOXELS * min(spacing)
    return np.clip((margin_mm - distance) / band_mm, 0.0, 1.0).astype(np.float32)


def latent_region(tumor: np.ndarray, spacing: tuple[float, float, float], margin_mm: float, factor: int) -> torch.Tensor:
    """The latent voxels to generate: tumor dilated by the margin, any overlap per latent voxel."""
    distance = ndimage.distance_transform_edt(~tumor, sampling=spacing)
    region = torch.from_numpy((distance <= margin_mm).astype(np.float32))[None, None]
    return torch.nn.functional.max_pool3d(region, kernel_size=factor, stride=factor)


def hu_to_unit(hu: np.ndarray) -> torch.Tensor:
    unit = (np.clip(hu.astype(np.float32), HU_MIN, HU_MAX) - HU_MIN) / (HU_MAX - HU_MIN)
    return torch.from_numpy(unit)[None, None]


def unit_to_hu(decoded: torch.Tensor) -> np.ndarray:
    return decoded.float().clamp(0, 1)[0, 0].cpu().numpy() * (HU_MAX - HU_MIN) + HU_MIN


def repaint_hook(scheduler: Any, known: torch.Tensor, noise: torch.Tensor, keep: torch.Tensor
                 ) -> Callable[[torch.Tensor, int, torch.Tensor | None], torch.Tensor]:
    """After each step, latents outside the region follow the original's noised trajectory."""

    def hook(latents: torch.Tensor, index: int, next_t: torch.Tensor | None) -> torch.Tensor:
        if next_t is None:  # DDPM: the next timestep is the following entry of the schedule
            timesteps = scheduler.timesteps
            following = timesteps[index + 1] if index + 1 < len(timesteps) else None
            target = known if following is None else scheduler.add_noise(known, noise, following.reshape(1))
        elif float(next_t) <= 0:
            target = known
        else:
            target = scheduler.add_noise(known, noise, next_t.reshape(1).to(known.device))
        return latents * (1 - keep) + target * keep

    return hook


def inpaint(request: InpaintRequest, progress: Callable | None = None, log: Callable[[str], None] | None = None,
            model: LoadedModel | None = None) -> tuple[Volume, Volume, dict[str, Any]]:
    """Inpaint a tumor; returns (new CT, labels with the tumor, provenance). The input is not modified.

    The networks see the CT, labels and tumor in RAS voxel order (an exact permutation and flips, as for
    generation); the results come back on the input CT's own grid and voxel order, so they overlay it.
    """
    how = orientation.plan(request.image.affine, request.image.shape)
    on_grid = (request.labels.shape == request.image.shape and np.asarray(request.tumor).shape == request.image.shape)
    if not on_grid or how.identity:  # off-grid inputs are refused by check_inputs with their own message
        image, labels, provenance = _inpaint_ras(request, progress, log, model)
        provenance["input_orientation"] = how.describe()
        return image, labels, provenance
    ras_request = replace(request, image=orientation.apply(request.image, how),
                          labels=orientation.apply(request.labels, how),
                          tumor=orientation.apply_array(request.tumor, how))
    image, labels, provenance = _inpaint_ras(ras_request, progress, log, model)
    request.tumor = orientation.restore(Volume(ras_request.tumor, image.affine), how).array
    image, labels = orientation.restore(image, how), orientation.restore(labels, how)
    provenance["input_orientation"] = {**how.describe(), "output": "returned on the input CT's grid and voxel order"}
    provenance["crop_voxel_order"] = "RAS"
    return (Volume(image.array, request.image.affine.copy()), Volume(labels.array, request.labels.affine.copy()),
            provenance)


def _inpaint_ras(request: InpaintRequest, progress: Callable | None = None, log: Callable[[str], None] | None = None,
                 model: LoadedModel | None = None) -> tuple[Volume, Volume, dict[str, Any]]:
    from MAISIEngine import tsp

    start = time.perf_counter()
    preset = model.preset if model is not None else load_preset(request.model)
    supported = list(preset.raw.get("tumor_types", list(maisi_labels.TUMOR_TYPES)))
    tumor_id = check_inputs(request, supported)
    if request.method == "inpaint-controlnet" and not preset.raw.get("inpaint_controlnet"):
        raise MaisiError(f"model '{preset.name}' has no inpainting ControlNet",
                         "use --method controlnet-repaint, or a model trained with `maisi train controlnet --task inpaint`")
    device = model.device if model is not None else resolve_device(request.device)
    if model is None:
        StageClock(progress, "load")(0, 1)
        model = load_model(preset, device)
        StageClock(progress, "load")(1, 1)
    spacing = request.image.spacing
    tumor = request.tumor.astype(bool)
    factor = preset.latent_downsample
    box = crop_box(tumor, spacing, request.margin_mm, preset.size_divisor, request.image.shape, align=factor)
    view = vae_view(box, request.image.shape, factor)
    latent_box = (slice(None), slice(None)) + tuple(
        slice((b.start - v.start) // factor, (b.stop - v.start) // factor) for b, v in zip(box, view))
    labels_full = request.labels.array.astype(np.uint8).copy()
    labels_full[tumor] = tumor_id
    labels_crop = mask_ops.add_body_envelope(labels_full[box], spacing)
    image_crop = request.image.array[box].astype(np.float32)
    tumor_crop = tumor[box]

    tick = time.perf_counter()
    StageClock(progress, "encode")(0, 1)
    whole = pad_to_multiple(request.image.array[view].astype(np.float32), factor, fill=HU_MIN)  # air at the far ends
    known_whole = tsp.encode(model.autoencoder, hu_to_unit(whole).to(device)) * model.scale_factor
    known = known_whole[latent_box].contiguous()
    StageClock(progress, "encode")(1, 1)
    encode_s = time.perf_counter() - tick

    cond = Conditions(
        spacing=conditioning.spacing_tensor(spacing, 1, device) if preset.conditioning.get("spacing") else None,
        class_labels=conditioning.modality_tensor(preset, 1, device, request.modality),
        controlnet_cond=mask_ops.label_bitplanes(torch.from_numpy(labels_crop.astype(np.int64))[None, None]).to(device),
    )
    if preset.uses_region:
        cond.top_region, cond.bottom_region = conditioning.region_tensors(
            conditioning.regions_from_labels(np.unique(labels_crop).tolist()), 1, device)
    steps = int(request.steps or preset.num_inference_steps)
    noise = seeded_noise(tuple(known.shape), request.seed, device)
    keep = 1.0 - latent_region(tumor_crop, spacing, request.margin_mm, preset.latent_downsample).to(device)
    scheduler = make_scheduler(preset)
    controlnet = model.controlnet
    hook = repaint_hook(scheduler, known, noise, keep)
    if request.method == "inpaint-controlnet":
        from MAISIEngine.inpaint_controlnet import inpaint_conditions, load_inpaint_controlnet

        controlnet = load_inpaint_controlnet(model)
        region = ndimage.distance_transform_edt(~tumor_crop, sampling=spacing) <= request.margin_mm
        cond.controlnet_cond = inpaint_conditions(hu_to_unit(image_crop), region, tumor_crop, tumor_id, device)
    tick = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(request.seed)
    latent = sample(model.unet, controlnet, scheduler, noise, cond, steps, generator,
                    progress=StageClock(progress, "sampling"), step_hook=hook, precision=request.precision)
    sampling_s = time.perf_counter() - tick

    tick = time.perf_counter()
    StageClock(progress, "decode")(0, 1)
    known_whole[latent_box] = latent.to(known_whole.dtype)
    inner = tuple(slice(b.start - v.start, b.stop - v.start) for b, v in zip(box, view))
    generated = unit_to_hu(tsp.decode(model.autoencoder, known_whole / model.scale_factor))[inner]
    StageClock(progress, "decode")(1, 1)
    decode_s = time.perf_counter() - tick

    weights = feather_weights(tumor, spacing, request.margin_mm)[box]
    original = request.image.array.astype(np.float32)
    blended_crop = weights * generated + (1.0 - weights) * original[box]
    result = original.copy()
    result[box] = blended_crop
    result = np.where(feather_weights(tumor, spacing, request.margin_mm) > 0, np.round(result), original)
    result_hu = np.clip(result, -32768, 32767).astype(np.int16)

    provenance = {
        "synthetic": True, "derived_from_real_image": True, "engine": "MAISIEngine", "engine_version": __version__,
        "task": "inpaint", "method": request.method, "model": preset.name,
        "weights": weights_provenance(model),
        "seed": request.seed, "steps": steps, "tumor_type": request.tumor_type, "tumor_label": tumor_id,
        "tumor_voxels": int(tumor.sum()), "margin_mm": request.margin_mm,
        "crop": [[s.start, s.stop] for s in box], "size": list(request.image.shape),
        "spacing": [round(s, 6) for s in spacing], "device": str(device),
        "image_source_sha256": array_sha256(np.asarray(request.image.array)),
        "timings_s": {"encode_s": round(encode_s, 3), "sampling_s": round(sampling_s, 3), "decode_s": round(decode_s, 3),
                      "total_s": round(time.perf_counter() - start, 3)},
    }
    return Volume(result_hu, request.image.affine.copy()), Volume(labels_full, request.labels.affine.copy()), provenance


def read_tumor(path: str, image: Volume) -> np.ndarray:
    """A tumor mask file on the CT grid (any non-zero voxel is tumor)."""
    tumor = read_volume(path, what="tumor mask", labels=True)
    if not same_grid(tumor, image):
        raise MaisiError("the tumor mask is on a different grid from the image", "paint the tumor on the CT's grid")
    return np.asarray(tumor.array) != 0


def tumor_from_labels(labels: Volume, tumor_type: str) -> np.ndarray:
    """When no tumor file is given, the tumor is the voxels already labelled with the tumor id."""
    return np.asarray(labels.array) == maisi_labels.TUMOR_TYPES.get(tumor_type, -1)


def run_inpaint_job(job: Any, progress: Callable | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Worker entry: read the files of an inpaint job, inpaint, write outputs atomically."""
    image = read_volume(job.image, what="image")
    labels = read_volume(job.labels, what="labels", labels=True)
    mask_ops.validate_label_ids(np.asarray(labels.array), what="labels")
    tumor = read_tumor(job.tumor, image) if job.tumor else tumor_from_labels(labels, job.tumor_type)
    request = InpaintRequest(image=image, labels=labels, tumor=tumor, tumor_type=job.tumor_type, model=job.model,
                             method=job.method, margin_mm=float(job.margin_mm), seed=int(job.seed), steps=job.steps,
                             device=job.device, precision=job.precision, image_source=job.image,
                             modality=getattr(job, "modality", None))
    new_image, new_labels, provenance = inpaint(request, progress=progress, log=log)
    paths = write_outputs(job.output_dir, new_image, new_labels, provenance, job.format)
    return {**paths, "provenance_data": provenance}
