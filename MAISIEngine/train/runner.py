"""Assemble and run one training stage: data, networks (with their starting weights), the stage loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISIEngine.phantom import REGIONS as PHANTOM_REGIONS
from MAISIEngine.presets import Preset
from MAISIEngine.train.config import STAGES, TrainConfig
from MAISIEngine.train.data import (
    ListSource,
    NiftiSource,
    PhantomSource,
    PhantomSpec,
    VolumeSource,
    list_folder,
    phantom_specs,
    read_datalist,
)
from MAISIEngine.train.distributed import DistContext, init_distributed
from MAISIEngine.train.engine import Stage, StepHook, TrainResult, run_stage
from MAISIEngine.train.ema import check_decay
from MAISIEngine.train.latents import build_latent_cache
from MAISIEngine.train.model_sources import ModelSources, frozen_network, resolve_sources, trainable_network

Log = Callable[[str], None]


def build_source(stage: str, *, data: str | Path | None = None, datalist: str | Path | None = None,
                 phantoms: int | None = None, spacing: Sequence[float] | None = None,
                 phantom_sizes: Sequence[Sequence[int]] | None = None,
                 phantom_spacing_range: tuple[float, float] = (2.0, 4.0), seed: int = 0,
                 tumor_fraction: float = 0.4, tumor_types: Sequence[str] | None = None,
                 regions: Sequence[str] | None = None, workers: int | None = None,
                 validate: bool = True) -> VolumeSource:
    """The training volumes of one of --data DIR, --datalist JSON or --phantoms N."""
    chosen = [name for name, value in (("--data", data), ("--datalist", datalist), ("--phantoms", phantoms))
              if value is not None]
    if len(chosen) != 1:
        raise MaisiError("give exactly one of --data DIR, --datalist JSON or --phantoms N"
                         + (f" (got {' and '.join(chosen)})" if chosen else ""),
                         "e.g. --phantoms 16 to train on procedural phantoms")
    needs_labels = stage == "controlnet"
    if phantoms is not None:
        sizes = list(phantom_sizes or [(64, 64, 64)])
        if spacing is not None:
            phantom_spacing_range = (float(min(spacing)), float(max(spacing)))
        if not 0.0 <= tumor_fraction <= 1.0:
            raise MaisiError(f"--phantom-tumors {tumor_fraction} is not a fraction", "give a number from 0 to 1, e.g. 0.4")
        choices: dict[str, Any] = {}
        if tumor_types:
            unknown = [t for t in tumor_types if t not in maisi_labels.TUMOR_TYPES]
            if unknown:
                raise MaisiError(f"unknown tumor type(s) {', '.join(unknown)}",
                                 f"use some of {', '.join(maisi_labels.TUMOR_TYPES)}")
            choices["tumor_types"] = tuple(tumor_types)
        if regions:
            unknown = [r for r in regions if r not in PHANTOM_REGIONS]
            if unknown:
                raise MaisiError(f"unknown phantom region(s) {', '.join(unknown)}", f"use some of {', '.join(PHANTOM_REGIONS)}")
            choices["regions"] = tuple(regions)
        specs = phantom_specs(int(phantoms), seed, sizes, phantom_spacing_range, tumor_fraction=tumor_fraction,
                              **choices)
        if spacing is not None:
            fixed = tuple(float(v) for v in spacing)
            specs = [PhantomSpec(s.size, fixed, s.region, s.seed, s.tumors) for s in specs]  # type: ignore[arg-type]
        return PhantomSource(specs, workers=workers)
    cases = list_folder(data) if data is not None else read_datalist(datalist)  # type: ignore[arg-type]
    source = NiftiSource(cases, spacing=spacing, need_images=True, need_labels=needs_labels)
    if validate:
        source.validate_all()
    return source


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


@dataclass
class BuiltStage:
    """A stage ready to run, its process context, and the frozen networks it trains against."""

    stage: Stage
    ctx: DistContext
    preset: Preset
    frozen: dict[str, tuple[torch.nn.Module, float | None]] = field(default_factory=dict)
    inpaint_source: Preset | None = None
    """A model whose inpainting ControlNet is copied into the output (its latent space is kept)."""


def complete_model_directory(out_dir: Path, preset: Preset,
                             frozen: dict[str, tuple[torch.nn.Module, float | None]]) -> None:
    """Write the frozen networks the directory lacks (e.g. taken from --init), so it is a whole model."""
    from MAISIEngine.train.checkpoints import model_preset, write_role

    present = model_preset(out_dir)
    for role, (network, scale) in frozen.items():
        if present is None or role not in present.weights:
            write_role(out_dir, preset, role, network, scale)
            present = model_preset(out_dir)


def build_stage(config: TrainConfig, source: VolumeSource, *, preset: str | None = None, init: str | None = None,
                ctx: DistContext | None = None, log: Log | None = None) -> BuiltStage:
    """The stage object with its networks loaded (starting weights, frozen earlier stages, latent cache)."""
    if config.stage not in STAGES:
        raise MaisiError(f"unknown training stage '{config.stage}'", f"use one of {', '.join(STAGES)}")
    if config.steps < 1 or config.batch_size < 1:
        raise MaisiError("--steps and --batch-size must be at least 1", "e.g. --steps 1000 --batch-size 2")
    check_decay(config.ema_decay)
    say = log or (lambda message: None)
    if config.resume:
        from MAISIEngine.train.checkpoints import state_path

        key = "controlnet_inpaint" if config.stage == "controlnet" and config.task == "inpaint" else config.stage
        if not state_path(config.out_dir, key).is_file():
            raise MaisiError(f"no interrupted {key} run to resume in {config.out_dir}",
                             "run without --resume to start, or give the --out folder of the interrupted run")
    ctx = ctx or init_distributed(config.device)
    sources = resolve_sources(config.out_dir, preset, init)
    model_preset: Preset = sources.preset
    say(f"{config.stage}: {sources.describe()}, data {source.describe()}, device {ctx.device}, "
        f"{ctx.world_size} process(es) x batch {config.batch_size}")
    _seed_everything(config.seed)
    device = ctx.device
    frozen: dict[str, tuple[torch.nn.Module, float | None]] = {}
    inpaint_source: Preset | None = None
    if config.stage == "vae":
        from MAISIEngine.train.vae import VAEStage

        autoencoder, _, origin = trainable_network("autoencoder", sources, device)
        say(f"autoencoder starts from {origin}")
        stage = VAEStage(config, ctx, model_preset, source, autoencoder)
        if config.freeze_encoder:  # same latent space: the later stages of --init stay valid, carry them
            frozen.update(carried_stages(sources, device))
            inpaint_source = sources.init_model
    else:
        autoencoder, _ = frozen_network("autoencoder", sources, device, config.stage)
        frozen["autoencoder"] = (autoencoder, None)
        cache = build_latent_cache(autoencoder, source, model_preset.size_divisor, config.out_dir, ctx, config.amp, say)
        if config.stage == "diffusion":
            from MAISIEngine.train.diffusion import DiffusionStage

            unet, checkpoint, origin = trainable_network("diffusion_unet", sources, device)
            scale = checkpoint.scale_factor if checkpoint is not None else None
            say(f"diffusion U-Net starts from {origin}; scale factor "
                f"{'from the checkpoint' if scale is not None else 'computed from the latents'}")
            stage = DiffusionStage(config, ctx, model_preset, source, cache, unet, scale)
        else:
            from MAISIEngine.train.controlnet import ControlNetStage, make_controlnet

            unet, unet_checkpoint = frozen_network("diffusion_unet", sources, device, "ControlNet")
            frozen["diffusion_unet"] = (unet, unet_checkpoint.scale_factor)
            if unet_checkpoint.scale_factor is None:
                raise MaisiError("the diffusion checkpoint carries no scale_factor",
                                 "use a U-Net trained by `maisi train diffusion` or an official checkpoint")
            controlnet, origin = make_controlnet(config.task, sources, unet, device)
            say(f"ControlNet ({config.task}) starts from {origin}")
            stage = ControlNetStage(config, ctx, model_preset, source, cache, unet, controlnet,
                                    unet_checkpoint.scale_factor)
            if frozen_stages_from_init(sources):  # --init's other ControlNet fits its VAE and U-Net: carry it
                if config.task == "inpaint":
                    frozen.update(carried_stages(sources, device, roles=("controlnet",)))
                elif not has_inpaint_controlnet(config.out_dir):
                    inpaint_source = sources.init_model
    return BuiltStage(stage, ctx, model_preset, frozen, inpaint_source)


def frozen_stages_from_init(sources: ModelSources) -> bool:
    """True when a ControlNet run takes its frozen VAE and U-Net from the --init model, not from --out."""
    from MAISIEngine.train.checkpoints import model_preset

    existing = model_preset(sources.out_dir)
    return sources.init_model is not None and not (
        existing is not None and ({"autoencoder", "diffusion_unet"} & set(existing.weights)))


def has_inpaint_controlnet(out_dir: Path) -> bool:
    from MAISIEngine.train.checkpoints import INPAINT_KEY, model_preset

    existing = model_preset(out_dir)
    return existing is not None and bool(existing.to_dict().get(INPAINT_KEY))


def carried_stages(sources: ModelSources, device: torch.device,
                   roles: Sequence[str] = ("diffusion_unet", "controlnet")) -> dict[str, tuple[torch.nn.Module, float | None]]:
    """Networks of --init that a run leaves valid: its U-Net and ControlNet when the VAE's latent space is
    kept (`--freeze-encoder`), its other ControlNet when a ControlNet is trained on its VAE and U-Net."""
    carried: dict[str, tuple[torch.nn.Module, float | None]] = {}
    for role in roles:
        if sources.init_model is not None and role in sources.init_model.weights:
            network, checkpoint = frozen_network(role, sources, device, "the VAE")
            carried[role] = (network, checkpoint.scale_factor if role == "diffusion_unet" else None)
    return carried


def calibrate_stage(config: TrainConfig, source: VolumeSource, *, preset: str | None = None, init: str | None = None,
                    samples_per_volume: int = 50_000, device: torch.device | None = None,
                    log: Log | None = None) -> dict[str, Any]:
    """`maisi train vae --calibrate-output`: refit the decoder's output convolution on whole volumes of
    `source` and write a whole model directory (the latent space is unchanged)."""
    from MAISIEngine.train.calibrate import calibrate_output
    from MAISIEngine.train.controlnet import carry_inpaint_controlnet
    from MAISIEngine.train.checkpoints import write_role

    say = log or (lambda message: None)
    device = device or torch.device("cpu")
    sources = resolve_sources(config.out_dir, preset, init)
    autoencoder, _, origin = trainable_network("autoencoder", sources, device)
    if sources.init_model is None and sources.init_file is None:
        raise MaisiError("calibration refits a trained decoder, and no --init was given",
                         "give --init MODEL (e.g. --init demo) or --init autoencoder.pt")
    say(f"calibrating the decoder output of {origin} on {source.describe()}")
    report = calibrate_output(autoencoder.eval(), source, samples_per_volume=samples_per_volume, seed=config.seed,
                              log=say)
    in_place = sources.init_model is not None and sources.init_model.source_path is not None \
        and sources.init_model.source_path.parent.resolve() == Path(config.out_dir).resolve()
    carried = {} if in_place else carried_stages(sources, device)
    path = write_role(Path(config.out_dir), sources.preset, "autoencoder", autoencoder)
    complete_model_directory(Path(config.out_dir), sources.preset, carried)
    if sources.init_model is not None and not in_place:
        carry_inpaint_controlnet(sources.init_model, Path(config.out_dir), sources.preset)
    return {"stage": "vae-calibration", "volumes": report.volumes, "samples": report.samples,
            "weighted_l1": [round(report.weighted_l1_before, 6), round(report.weighted_l1_after, 6)],
            "rmse_hu": [round(report.rmse_before_hu, 1), round(report.rmse_after_hu, 1)],
            "outputs": {"autoencoder": str(path)}}


def train_stage(config: TrainConfig, source: VolumeSource, *, preset: str | None = None, init: str | None = None,
                ctx: DistContext | None = None, on_step: StepHook | None = None,
                log: Log | None = None) -> TrainResult:
    """Train one stage into `config.out_dir` and return its losses and written files."""
    from MAISIEngine.train.controlnet import carry_inpaint_controlnet

    built = build_stage(config, source, preset=preset, init=init, ctx=ctx, log=log)
    result = run_stage(built.stage, config, built.ctx, on_step=on_step)
    if not result.interrupted and built.ctx.is_main:
        complete_model_directory(Path(config.out_dir), built.preset, built.frozen)
        if built.inpaint_source is not None:
            carry_inpaint_controlnet(built.inpaint_source, Path(config.out_dir), built.preset)
    return result


__all__ = ["BuiltStage", "ListSource", "build_source", "build_stage", "calibrate_stage", "train_stage"]
