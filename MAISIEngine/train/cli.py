"""`maisi train vae|diffusion|controlnet`: the paper's three training stages from the command line.

Single process: `maisi train vae --phantoms 16 --out runs/demo`. Several GPUs (or CPU processes):
`torchrun --nproc_per_node N -m MAISIEngine.cli train ...` (NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from MAISIEngine.errors import MaisiError
from MAISIEngine.labels import ORGAN_GROUPS
from MAISIEngine.train.config import CONTROLNET_TASKS, STAGES, TrainConfig
from MAISIEngine.train.ema import check_decay
from MAISIEngine.maskgen.train_runner import MASK_STAGES

STAGE_DEFAULTS = {
    # stage: (lr, crop size in image voxels)
    "vae": (1e-4, (64, 64, 64)),
    "diffusion": (1e-4, (128, 128, 128)),
    "controlnet": (1e-4, (128, 128, 128)),
}


def _triple(kind: type) -> dict[str, object]:
    return {"nargs": 3, "type": kind, "metavar": ("X", "Y", "Z")}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train or fine-tune the VAE, the diffusion U-Net or a ControlNet",
        description="Train one MAISI stage into a model directory (preset.json + official-layout weights). "
                    "Stages run in order into the same --out folder: vae, diffusion, controlnet.")
    parser.add_argument("stage", choices=(*STAGES, *MASK_STAGES),
                        help="which network to train (mask-vae, mask-diffusion: the label-map generator)")
    model = parser.add_argument_group("model")
    model.add_argument("--preset", help="architecture: demo, rflow-ct, ddpm-ct, a preset JSON or a model directory "
                                        "(default: the --init model's, else the --out folder's, else demo)")
    model.add_argument("--init", help="starting weights: a model (preset name, official ones included, or model "
                                      "directory) or a checkpoint file of this stage's network")
    model.add_argument("--task", choices=CONTROLNET_TASKS, default="generate",
                       help="controlnet only: 'generate' (label-map bit-planes) or 'inpaint' (masked image + tumor)")
    data = parser.add_argument_group("data (one of)")
    data.add_argument("--data", type=Path, help="folder with images/ and labels/ (same file names)")
    data.add_argument("--datalist", type=Path, help='JSON {"training": [{"image": ..., "label": ...}]}')
    data.add_argument("--phantoms", type=int, help="train on N procedural phantoms generated on the fly")
    data.add_argument("--size", **_triple(int), action="append",
                      help="crop size in image voxels (latent crop = size / 4); give it again for more sizes, "
                           "one drawn per step")
    data.add_argument("--spacing", **_triple(float), help="resample data (or make phantoms) at this spacing in mm")
    data.add_argument("--phantom-size", **_triple(int), action="append",
                      help="phantom volume size (default: --size); give it again for phantoms of several sizes")
    data.add_argument("--phantom-tumors", type=float, default=0.4, metavar="FRACTION",
                      help="share of phantoms that carry a tumor (default 0.4)")
    data.add_argument("--phantom-tumor-types", help="comma-separated tumor types to draw from, e.g. liver,pancreas "
                                                    "(default: all five)")
    data.add_argument("--phantom-regions", help="comma-separated phantom regions, e.g. abdomen,chest-abdomen "
                                                "(default: chest, abdomen, chest-abdomen)")
    run = parser.add_argument_group("run")
    run.add_argument("--steps", type=int, default=1000)
    run.add_argument("--batch-size", type=int, default=1, help="samples per process and step")
    run.add_argument("--lr", type=float, help="peak learning rate (AdamW; warm-up then cosine decay)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    run.add_argument("--out", type=Path, required=True, help="model directory to write (and read earlier stages from)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                     help="bf16 mixed precision on CUDA (default on)")
    run.add_argument("--checkpoint-every", type=int, default=200)
    run.add_argument("--time-budget", type=float, help="stop after this many seconds")
    run.add_argument("--ema-decay", type=float, default=0.0, metavar="D",
                     help="export the exponential moving average of the weights, decay D per step (e.g. 0.999: "
                          "about the last 1000 steps), instead of the last step's weights (default 0: off)")
    run.add_argument("--no-progress", action="store_true")
    vae = parser.add_argument_group("vae objectives")
    vae.add_argument("--kl-weight", type=float,
                     help="KL term weight (default: 1e-7 for the CT VAE, as MAISI; 1e-4 for the mask VAE)")
    vae.add_argument("--adv-weight", type=float, default=0.1)
    vae.add_argument("--adv-start", type=float, default=0.3, help="fraction of the run before the adversarial loss starts")
    vae.add_argument("--disc-channels", type=int, default=32, help="patch discriminator width (MAISI: 32)")
    vae.add_argument("--window-loss-weight", type=float, default=0.0,
                     help="extra L1 in the soft-tissue window (level 40, width 400 HU): organ intensities "
                          "tens of HU apart (default 0: the paper's objective)")
    vae.add_argument("--mse-weight", type=float, default=0.0,
                     help="extra squared-error loss: keeps thin bright structures such as bone at their mean "
                          "brightness (default 0: the paper's objective)")
    vae.add_argument("--clip-aware-loss", action="store_true",
                     help="where the image is air (-1000 HU), outputs up to 40 HU below it cost nothing, as "
                          "inference clips them to -1000 (likewise above 1000 HU): air decodes to exactly "
                          "-1000 HU (default off: the paper's objective)")
    vae.add_argument("--calibrate-output", action="store_true",
                     help="instead of training: refit the decoder's output convolution on whole volumes of the "
                          "data (minutes on a CPU; fixes intensity offsets, keeps the latent space)")
    vae.add_argument("--calibration-samples", type=int, default=50_000, help="voxels sampled per volume")
    vae.add_argument("--freeze-encoder", action="store_true",
                     help="train the decoder only, keeping the latent space of the diffusion model and ControlNets")
    vae.add_argument("--decode-posterior-mean", action="store_true",
                     help="with --freeze-encoder: decode the posterior mean, not a sample of it, as generation "
                          "does (the diffusion model is trained on posterior means)")
    vae.add_argument("--perceptual-weights", help="local ResNet-50 state dict for the perceptual loss (never downloaded)")
    vae.add_argument("--perceptual-weight", type=float, default=0.3)
    diffusion = parser.add_argument_group("diffusion / controlnet")
    diffusion.add_argument("--class-dropout", type=float, default=0.0,
                           help="probability of training a sample without its modality class")
    diffusion.add_argument("--tumor-loss-weight", type=float, default=1.0,
                           help="controlnet (both tasks): loss weight on tumor voxels (MAISI weights tumors up)")
    diffusion.add_argument("--bone-loss-weight", type=float, default=1.0,
                           help="controlnet: loss weight on bone voxels (thin, bright, easily averaged away)")
    diffusion.add_argument("--organ-loss-weight", action="append", default=[], metavar="GROUP=W",
                           help="controlnet: loss weight on an organ group (" + ", ".join(ORGAN_GROUPS)
                                + "), e.g. kidney=3; repeat for several")


def _names(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def organ_loss_weights(pairs: list[str]) -> tuple[tuple[str, float], ...]:
    """`GROUP=W` strings -> validated (group, weight) pairs."""
    parsed = []
    for pair in pairs:
        group, _, weight = pair.partition("=")
        try:
            value = float(weight)
        except ValueError:
            value = float("nan")
        if group not in ORGAN_GROUPS or not math.isfinite(value) or value <= 0:
            raise MaisiError(f"--organ-loss-weight {pair!r} is not GROUP=W with a known group and a positive weight",
                             f"groups: {', '.join(ORGAN_GROUPS)}; e.g. --organ-loss-weight kidney=3")
        if any(group == seen for seen, _ in parsed):
            raise MaisiError(f"--organ-loss-weight gives the group {group!r} twice", "give each group once")
        parsed.append((group, value))
    return tuple(parsed)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    lr, size = STAGE_DEFAULTS[args.stage]
    sizes = [tuple(s) for s in args.size] if args.size else [size]
    for size in sizes:
        if any(s <= 0 for s in size):
            raise MaisiError(f"--size {size} must be positive", "e.g. --size 64 64 64")
    size = sizes[0]
    several = tuple(sizes) if len(sizes) > 1 else ()
    if args.calibrate_output and args.stage != "vae":
        raise MaisiError("--calibrate-output applies to vae only", "drop --calibrate-output, or use it with vae")
    if args.calibrate_output and args.ema_decay:
        raise MaisiError("--ema-decay averages training steps, and --calibrate-output does not train",
                         "drop one of the two")
    check_decay(args.ema_decay)
    if args.freeze_encoder and args.stage != "vae":
        raise MaisiError("--freeze-encoder applies to vae training only", "drop --freeze-encoder, or train vae")
    if args.decode_posterior_mean and not args.freeze_encoder:
        raise MaisiError("--decode-posterior-mean needs --freeze-encoder: a trained encoder would lose its "
                         "posterior variance, and with it the KL term's meaning",
                         "add --freeze-encoder, or drop --decode-posterior-mean")
    if args.organ_loss_weight and (args.stage != "controlnet" or args.task != "generate"):
        raise MaisiError("--organ-loss-weight applies to CT ControlNet training only",
                         "drop --organ-loss-weight, or train controlnet without --task inpaint")
    organ_weights = organ_loss_weights(args.organ_loss_weight)
    if args.bone_loss_weight != 1.0 and any(group == "bone" for group, _ in organ_weights):
        raise MaisiError("--bone-loss-weight and --organ-loss-weight bone=W both weigh bone",
                         "give the bone weight once")
    if args.task != "generate" and args.stage != "controlnet":
        raise MaisiError("--task applies to controlnet training only", "drop --task, or train controlnet")
    return TrainConfig(
        stage=args.stage, out_dir=Path(args.out).expanduser(), steps=args.steps, batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else lr, seed=args.seed, device=args.device, amp=args.amp,
        resume=args.resume, checkpoint_every=args.checkpoint_every, time_budget_s=args.time_budget,
        ema_decay=args.ema_decay,
        progress=not args.no_progress, size=size,
        kl_weight=args.kl_weight if args.kl_weight is not None else TrainConfig.kl_weight, adv_weight=args.adv_weight,
        adv_start=args.adv_start, disc_channels=args.disc_channels, freeze_encoder=args.freeze_encoder,
        decode_posterior_mean=args.decode_posterior_mean,
        window_weight=args.window_loss_weight, mse_weight=args.mse_weight,
        clip_aware_loss=args.clip_aware_loss,
        crop_sizes=several if args.stage == "vae" else (),
        latent_sizes=tuple(tuple(max(1, v // 4) for v in s) for s in several) if args.stage != "vae" else (),
        perceptual_weight=args.perceptual_weight if args.perceptual_weights else 0.0,
        perceptual_weights_path=args.perceptual_weights, class_dropout=args.class_dropout, task=args.task,
        tumor_loss_weight=args.tumor_loss_weight, bone_loss_weight=args.bone_loss_weight,
        organ_loss_weights=organ_weights,
    )


def run(args: argparse.Namespace) -> int:
    if args.stage in MASK_STAGES:
        from MAISIEngine.maskgen.train_runner import run_mask_stage

        return run_mask_stage(args)
    from MAISIEngine.commands.common import ensure_writable_dir
    from MAISIEngine.train.distributed import init_distributed, shutdown
    from MAISIEngine.train.runner import build_source, calibrate_stage, train_stage

    config = config_from_args(args)
    ensure_writable_dir(config.out_dir)
    ctx = init_distributed(config.device)
    try:
        def say(message: str) -> None:
            if ctx.is_main:
                print(message, file=sys.stderr)

        phantom_sizes = [tuple(s) for s in args.phantom_size] if args.phantom_size else [config.size]
        source = build_source(args.stage, data=args.data, datalist=args.datalist, phantoms=args.phantoms,
                              spacing=args.spacing, phantom_sizes=phantom_sizes, seed=config.seed,
                              tumor_fraction=args.phantom_tumors, tumor_types=_names(args.phantom_tumor_types),
                              regions=_names(args.phantom_regions))
        if args.calibrate_output:
            if ctx.is_main:
                print(json.dumps(calibrate_stage(config, source, preset=args.preset, init=args.init,
                                                 samples_per_volume=args.calibration_samples, device=ctx.device,
                                                 log=say)))
            return 0
        result = train_stage(config, source, preset=args.preset, init=args.init, ctx=ctx, log=say)
    finally:
        shutdown(ctx)
    if result.interrupted:
        say(f"interrupted after step {result.end_step}; continue with the same command plus --resume")
        return 130
    summary = {"stage": result.stage, "steps": result.end_step, "seconds": round(result.elapsed_s, 1),
               "loss": result.loss_summary(), "outputs": result.outputs,
               "stopped_by_budget": result.stopped_by_budget}
    if ctx.is_main:
        print(json.dumps(summary))
    return 0
