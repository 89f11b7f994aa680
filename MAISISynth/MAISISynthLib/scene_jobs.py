"""Worker jobs built from the module's parameters and the scene's nodes (Generate and Inpaint).

`settings` is the module's parameter node, or anything with the same attribute names (model,
inputKind, inputSegmentation, inputLabelmap, templateRegion, size, spacing, region, seed, steps,
device, optionally modality; tumorVolume, tumorSegmentation, tumorType; for a generated label map
maskModel, maskModelFolder, maskSeed, maskTumor, maskTumorSize and maskUse*/maskSize* per organ): the
Slicer logic and the tests build jobs the same way. Input files are written into the job's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from MAISIEngine.errors import MaisiError

from . import mask_request, mrml, panel, params


def generate_job_for(settings: Any, workdir: Path) -> dict[str, Any]:
    """The worker's generate job; a segmentation or label map input is written into `workdir` first."""
    check = panel.check_settings(settings.model, settings.size, settings.spacing, settings.inputKind)
    if not check.ok:
        raise MaisiError(check.errors[0], "change the size or spacing")
    size, spacing = check.fitted_grid or (settings.size, settings.spacing)  # the grid the panel announced
    mask = None
    if settings.inputKind == panel.INPUT_SEGMENTATION:
        if not settings.inputSegmentation:
            raise MaisiError("no segmentation selected", "choose one, or use a phantom template")
        mask = mrml.temporary_labelmap_file(settings.inputSegmentation, None, workdir)
    elif settings.inputKind == panel.INPUT_GENERATED:
        if not settings.inputSegmentation:
            raise MaisiError("no label map has been generated yet", "click 'Generate label map' first")
        mask = mrml.temporary_labelmap_file(settings.inputSegmentation, None, workdir)
    elif settings.inputKind == panel.INPUT_LABELMAP:
        if not settings.inputLabelmap:
            raise MaisiError("no label map volume selected", "choose one, or use a phantom template")
        mask = mrml.labelmap_volume_file(settings.inputLabelmap, workdir)
    return params.generate_job(
        settings.model, Path(workdir) / "result", mask=mask,
        template_region=settings.templateRegion if mask is None else None,
        size=size, spacing=spacing, region=settings.region, seed=settings.seed,
        steps=settings.steps or None, device=settings.device, **_modality(settings),
    )


def mask_job_for(settings: Any, workdir: Path) -> dict[str, Any]:
    """The worker's generate-mask job: the sliders' anatomy sizes, a map on the panel's grid."""
    model = mask_request.model_argument(settings.maskModel, settings.maskModelFolder)
    return mask_request.generate_mask_job(
        Path(workdir) / "map", mask_request.MaskRequest.from_settings(settings), model=model,
        size=settings.size, spacing=settings.spacing, region=settings.region, seed=settings.maskSeed,
        device=settings.device)


def _modality(settings: Any) -> dict[str, Any]:
    """The job's modality class when the settings choose one other than CT (the model's default)."""
    modality = getattr(settings, "modality", None)
    return {} if modality in (None, "", "ct") else {"modality": modality}


def inpaint_job_for(settings: Any, workdir: Path) -> dict[str, Any]:
    """The worker's inpaint job: CT, labels (host organ under the tumor) and tumor mask, on the CT's grid."""
    if not settings.tumorVolume or not settings.tumorSegmentation:
        raise MaisiError("choose the CT and its segmentation", "both are needed to inpaint a tumor")
    files = mrml.write_inpaint_inputs(settings.tumorVolume, settings.tumorSegmentation, settings.tumorType, workdir)
    return params.inpaint_job(settings.model, Path(workdir) / "result", image=files["image"], labels=files["labels"],
                              tumor=files["tumor"], tumor_type=settings.tumorType, seed=settings.seed,
                              steps=settings.steps or None, device=settings.device, **_modality(settings))
