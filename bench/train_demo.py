"""Train the shipped demo model on procedural phantoms, all stages in one run, within a time budget.

    python bench/train_demo.py --out DIR [--budget-s 420]      # GPU (bf16), about budget + 1 minute
    python bench/train_demo.py --out DIR --smoke               # CPU check of the whole script, ~2 minutes

Stages, in the paper's order: the VAE-GAN, then latents encoded once, the diffusion U-Net, the CT
ControlNet (label-map bit-planes, U-Net frozen), and the inpainting ControlNet (masked image + tumor).
Training data: a pool of phantoms generated at the start in parallel processes (sizes and spacings
within the demo preset's `trained_on`, chest / abdomen / both, about half with a tumor), cropped and
flipped (VAE) per step. The budget is shared out over the stages as they go, so a slow stage does not
starve the later ones of their share.

DIR receives at most 8 files, flat: `preset.json` and the fp16 safetensors of every finished network
(a model directory that `maisi generate --model DIR` loads), `train_report.json` (timings, losses,
figures, errors), `losses.csv` and `MODEL_CARD.md`. A stage that fails is reported and the others
still run where they can; whatever finished is always written. Intermediate files (official-layout
.pt, training states, latent cache) stay in --work.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import torch  # noqa: E402
from demo_quality import CARD_BEGIN, CARD_END, figure_lines  # noqa: E402

STAGE_ORDER = ("vae", "diffusion", "controlnet", "inpaint")
OUTPUT_FILES = ("preset.json", "autoencoder.safetensors", "diffusion_unet.safetensors", "controlnet.safetensors",
                "controlnet_inpaint.safetensors", "train_report.json", "losses.csv", "MODEL_CARD.md")


@dataclass
class StagePlan:
    batch: int
    lr: float
    share: float
    """Share of the training time (the shares of the stages still to run are renormalised as they go)."""
    size: tuple[int, int, int] = (128, 128, 128)
    latent_sizes: tuple[tuple[int, int, int], ...] = ()
    max_steps: int = 1_000_000
    warmup: int = 100
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Profile:
    name: str
    pool: int
    pool_sizes: tuple[tuple[int, int, int], ...]
    spacing_range: tuple[float, float]
    tumor_fraction: float
    vae: StagePlan
    diffusion: StagePlan
    controlnet: StagePlan
    inpaint: StagePlan
    eval_reserve_s: float
    setup_allowance_s: float
    eval_seeds: int
    eval_size: tuple[int, int, int]
    eval_spacing: tuple[float, float, float]
    eval_steps: int
    eval_vae_volumes: int
    budget_s: float
    log_every: int = 1
    """Logged (and GPU-synchronised) every this many steps; in between the GPU runs ahead."""
    min_stage_s: float = 0.5
    """Every stage trains at least this long (and at least one step), even when earlier ones overran."""

    def stage(self, name: str) -> StagePlan:
        return getattr(self, name)


GPU = Profile(
    name="gpu",
    pool=96,
    # Latents of 32^3 (128^3 images) are the generation default; 160^3 in-plane adds wider fields of view.
    pool_sizes=((128, 128, 128), (128, 128, 128), (128, 128, 128), (160, 160, 128)),
    spacing_range=(2.0, 4.0),
    tumor_fraction=0.5,
    # The squared error keeps bone bright in reconstructions, weighting bone keeps it bright in generation,
    # and the clip-aware loss keeps air at -1000 HU (all measured on the CPU refinements of the shipped
    # model, see its card).
    vae=StagePlan(batch=16, lr=5e-4, share=0.27, size=(64, 64, 64),
                  extra={"adv_weight": 0.02, "adv_start": 0.6, "kl_weight": 1e-7, "disc_channels": 16,
                         "mse_weight": 10.0, "clip_aware_loss": True}),
    diffusion=StagePlan(batch=24, lr=5e-4, share=0.33,
                        latent_sizes=((32, 32, 32), (32, 32, 32), (32, 32, 32), (24, 24, 24))),
    controlnet=StagePlan(batch=12, lr=3e-4, share=0.27,
                         latent_sizes=((32, 32, 32), (32, 32, 32), (32, 32, 32), (24, 24, 24)),
                         extra={"bone_loss_weight": 5.0, "tumor_loss_weight": 5.0}),
    inpaint=StagePlan(batch=12, lr=3e-4, share=0.13, latent_sizes=((24, 24, 24), (16, 16, 16)),
                      extra={"task": "inpaint", "inpaint_region_weight": 5.0, "tumor_loss_weight": 5.0}),
    eval_reserve_s=50.0,
    setup_allowance_s=6.0,
    eval_seeds=4,
    eval_size=(128, 128, 128),
    eval_spacing=(3.0, 3.0, 3.0),
    eval_steps=20,
    eval_vae_volumes=3,
    budget_s=420.0,
    log_every=5,
    min_stage_s=15.0,
)

SMOKE = Profile(
    name="smoke",
    pool=3,
    pool_sizes=((64, 64, 64),),
    spacing_range=(4.0, 5.0),
    tumor_fraction=0.7,
    vae=StagePlan(batch=2, lr=5e-4, share=0.25, size=(32, 32, 32), max_steps=4, warmup=2,
                  extra={"adv_weight": 0.02, "adv_start": 0.5, "kl_weight": 1e-7, "disc_channels": 8}),
    diffusion=StagePlan(batch=2, lr=5e-4, share=0.25, latent_sizes=((16, 16, 16), (8, 8, 8)), max_steps=4, warmup=2),
    controlnet=StagePlan(batch=2, lr=3e-4, share=0.25, latent_sizes=((16, 16, 16),), max_steps=3, warmup=2),
    inpaint=StagePlan(batch=2, lr=3e-4, share=0.25, latent_sizes=((8, 8, 8),), max_steps=3, warmup=2,
                      extra={"task": "inpaint", "inpaint_region_weight": 5.0, "tumor_loss_weight": 5.0}),
    eval_reserve_s=40.0,
    setup_allowance_s=3.0,
    eval_seeds=1,
    eval_size=(64, 64, 64),
    eval_spacing=(4.0, 4.0, 4.0),
    eval_steps=3,
    eval_vae_volumes=1,
    budget_s=110.0,
)

CPU = Profile(
    # A scaled-down run for machines without a GPU (64^3 phantoms at 5-6 mm, 16^3 latents): it checks that
    # every stage learns, but a shippable demo needs the GPU profile.
    name="cpu",
    pool=16,
    pool_sizes=((64, 64, 64),),
    spacing_range=(5.0, 6.0),
    tumor_fraction=0.5,
    vae=StagePlan(batch=4, lr=1e-3, share=0.25, size=(32, 32, 32), warmup=20,
                  extra={"adv_weight": 0.02, "adv_start": 0.6, "kl_weight": 1e-7, "disc_channels": 8,
                         "mse_weight": 10.0, "clip_aware_loss": True}),
    diffusion=StagePlan(batch=8, lr=5e-4, share=0.35, latent_sizes=((16, 16, 16),), warmup=20),
    controlnet=StagePlan(batch=4, lr=3e-4, share=0.3, latent_sizes=((16, 16, 16),), warmup=20,
                         extra={"bone_loss_weight": 5.0, "tumor_loss_weight": 5.0}),
    inpaint=StagePlan(batch=4, lr=3e-4, share=0.1, latent_sizes=((8, 8, 8),), warmup=20,
                      extra={"task": "inpaint", "inpaint_region_weight": 5.0, "tumor_loss_weight": 5.0}),
    eval_reserve_s=150.0,
    setup_allowance_s=10.0,
    eval_seeds=3,
    eval_size=(64, 64, 64),
    eval_spacing=(5.5, 5.5, 5.5),
    eval_steps=20,
    eval_vae_volumes=2,
    budget_s=1800.0,
)

PROFILES = {"gpu": GPU, "smoke": SMOKE, "cpu": CPU}


def log(message: str) -> None:
    print(f"[train_demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpus": os.cpu_count(), "cuda": torch.cuda.is_available()}
    try:
        import monai

        info["monai"] = monai.__version__
    except ImportError:
        info["monai"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def configure_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def make_pool(profile: Profile, seed: int, workers: int | None) -> Any:
    from MAISIEngine.train.data import PhantomSource, phantom_specs

    specs = phantom_specs(profile.pool, seed, profile.pool_sizes, profile.spacing_range,
                          tumor_fraction=profile.tumor_fraction)
    return PhantomSource(specs, workers=workers)


def stage_config(name: str, plan: StagePlan, work: Path, seed: int, device: str, budget_s: float,
                 log_every: int = 1) -> Any:
    from MAISIEngine.train.config import TrainConfig

    extra = dict(plan.extra)
    return TrainConfig(
        stage="controlnet" if name == "inpaint" else name, out_dir=work, steps=plan.max_steps,
        batch_size=plan.batch, lr=plan.lr, seed=seed, device=device, amp=True, checkpoint_every=0,
        log_every=log_every, warmup_steps=plan.warmup, time_budget_s=budget_s, progress=False,
        size=plan.size, latent_sizes=plan.latent_sizes, data_on_device=True, **extra,
    )


def calibrate_decoder(work: Path, pool: Any, seed: int, device: torch.device, report: dict[str, Any]) -> None:
    """Refit the decoder's output convolution on the pool's whole volumes (`maisi train vae --calibrate-output`):
    the VAE trained on crops then reproduces the intensities of whole volumes; the latents do not change."""
    from MAISIEngine.train.config import TrainConfig
    from MAISIEngine.train.runner import calibrate_stage

    tick = time.perf_counter()
    try:
        figures = calibrate_stage(TrainConfig(stage="vae", out_dir=work, seed=seed), pool, init=str(work),
                                  samples_per_volume=30_000, device=device, log=log)
        report["stages"]["vae"]["calibration"] = figures | {"seconds": round(time.perf_counter() - tick, 1)}
        log(f"vae calibration: {report['stages']['vae']['calibration']}")
    except Exception as exc:
        report["errors"].append({"where": "vae calibration", "error": f"{exc.__class__.__name__}: {exc}",
                                 "traceback": traceback.format_exc()[-3000:]})


def summarise(result: Any) -> dict[str, Any]:
    history = result.history
    keys = [k for k in ("loss", "l1", "psnr", "kl", "adv_g", "d_loss") if history and k in history[-1]]
    window = max(1, min(50, len(history) // 5 or 1))

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return round(sum(r[key] for r in rows) / max(1, len(rows)), 5)

    return {
        "steps": result.end_step, "seconds": round(result.elapsed_s, 1),
        "steps_per_s": round(result.end_step / max(result.elapsed_s, 1e-9), 2),
        "stopped_by_budget": result.stopped_by_budget,
        "first": {k: mean(history[:window], k) for k in keys},
        "last": {k: mean(history[-window:], k) for k in keys},
    }


def losses_csv(histories: dict[str, list[dict[str, float]]], max_rows: int = 2400) -> str:
    """All stages' logged steps in one table, thinned evenly to at most `max_rows` rows."""
    columns = ["stage", "step", "elapsed_s", "lr", "loss", "l1", "psnr", "kl", "adv_g", "d_loss"]
    per_stage = max(1, max_rows // max(1, len(histories)))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for stage, rows in histories.items():
        stride = max(1, len(rows) // per_stage)
        for row in rows[::stride]:
            writer.writerow({"stage": stage, **{k: f"{v:.6g}" for k, v in row.items()}})
    return buffer.getvalue()


def write_outputs(out: Path, work: Path, report: dict[str, Any], histories: dict[str, list[dict[str, float]]]) -> None:
    """Export what finished as fp16 safetensors + preset.json, then the report, losses and card."""
    from MAISIEngine.io.atomic import write_text_atomic
    from MAISIEngine.train.checkpoints import export_safetensors

    out.mkdir(parents=True, exist_ok=True)
    if (work / "preset.json").is_file():
        try:
            written = export_safetensors(work, out, dtype=torch.float16, name="demo")
            report["outputs"] = {role: {"file": p.name, "bytes": p.stat().st_size} for role, p in written.items()}
            report["outputs_total_mb"] = round(sum(p.stat().st_size for p in written.values()) / 1e6, 2)
        except Exception as exc:  # reported, never fatal: the report must still be written
            report["errors"].append({"where": "export", "error": f"{exc.__class__.__name__}: {exc}",
                                     "traceback": traceback.format_exc()[-3000:]})
    write_text_atomic(out / "losses.csv", losses_csv(histories))
    write_text_atomic(out / "train_report.json", json.dumps(report, indent=2, default=str))
    write_text_atomic(out / "MODEL_CARD.md", render_model_card(report))
    unexpected = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_FILES)
    if unexpected:
        log(f"note: {out} also holds {unexpected} (not written by this run)")


def evaluate(out: Path, profile: Profile, device: str, report: dict[str, Any]) -> None:
    """VAE PSNR/SSIM on held-out phantoms and a few generations from held-out masks, with the exported model."""
    from demo_quality import generation_figures, vae_figures_for_model

    figures = report.setdefault("figures", {})
    roles = report.get("outputs", {})
    if "autoencoder" in roles:
        try:
            started = time.perf_counter()
            figures["vae"] = vae_figures_for_model(out, profile.eval_vae_volumes, profile.eval_size,
                                                   profile.eval_spacing, device)
            figures["vae"]["seconds"] = round(time.perf_counter() - started, 1)
            log(f"VAE held-out: PSNR {figures['vae']['psnr_db']} dB, SSIM {figures['vae']['ssim']}")
        except Exception as exc:
            report["errors"].append({"where": "eval vae", "error": f"{exc.__class__.__name__}: {exc}",
                                     "traceback": traceback.format_exc()[-3000:]})
    if {"autoencoder", "diffusion_unet", "controlnet"} <= set(roles):
        try:
            started = time.perf_counter()
            figures["generation"] = generation_figures(out, profile.eval_seeds, profile.eval_size,
                                                       profile.eval_spacing, profile.eval_steps, device, log=log)
            figures["generation"]["seconds"] = round(time.perf_counter() - started, 1)
        except Exception as exc:
            report["errors"].append({"where": "eval generation", "error": f"{exc.__class__.__name__}: {exc}",
                                     "traceback": traceback.format_exc()[-3000:]})


ROLE_TITLES = {"autoencoder": "VAE (AutoencoderKlMaisi)", "diffusion_unet": "diffusion U-Net (DiffusionModelUNetMaisi)",
               "controlnet": "CT ControlNet (ControlNetMaisi, label-map bit-planes)",
               "controlnet_inpaint": "inpainting ControlNet (ControlNetMaisi, masked image + tumor)"}
STAGE_TITLES = {"vae": "VAE-GAN: L1 + KL (weight 1e-7) + patch adversarial (least squares)",
                "diffusion": "diffusion U-Net: rectified flow, L1 on the velocity, cached latents",
                "controlnet": "CT ControlNet: U-Net frozen, zero-initialised residuals, L1 on the velocity",
                "inpaint": "inpainting ControlNet: U-Net frozen, L1 weighted x5 inside the painted region, +4 on tumor voxels"}


def _parameter_counts() -> dict[str, int]:
    from MAISIEngine.networks import build_network, count_parameters
    from MAISIEngine.presets import load_preset
    from MAISIEngine.inpaint_controlnet import build_inpaint_controlnet

    preset = load_preset("demo")
    roles = ("autoencoder", "diffusion_unet", "controlnet")
    counts = {role: count_parameters(build_network(role, preset)) for role in roles}
    counts["controlnet_inpaint"] = count_parameters(build_inpaint_controlnet(preset))
    return counts


def plan_of(report: dict[str, Any], stage: str) -> dict[str, Any]:
    return dict(report.get("plan", {}).get(stage, {}))


def _sizes(sizes: Any) -> str:
    """[(32, 32, 32), (24, 24, 24)] -> '32^3 or 24^3' (other shapes as AxBxC)."""
    names = []
    for size in sizes or []:
        if not size:
            continue
        size = [int(v) for v in size]
        name = f"{size[0]}^3" if len(set(size)) == 1 else "x".join(str(v) for v in size)
        if name not in names:
            names.append(name)
    return " or ".join(names) or "?"


def render_model_card(report: dict[str, Any]) -> str:
    """The model card (Markdown) from a training report: data, procedure, time, losses, figures, limits."""
    counts = _parameter_counts()
    outputs = report.get("outputs", {})
    pool = report.get("pool", {})
    env = report.get("environment", {})
    figures = report.get("figures", {})
    lines = [
        "# MAISISynth demo model",
        "",
        "A small model of the MAISI architecture families (MONAI `AutoencoderKlMaisi`, `DiffusionModelUNetMaisi`,",
        "`ControlNetMaisi`) that makes every MAISISynth front end work on a laptop CPU without NVIDIA's",
        "multi-gigabyte weights. It was trained by `bench/train_demo.py` on procedural torso phantoms.",
        "",
        "**Phantoms, not real anatomy.** Its CTs look like the phantoms it learned from, not like patients.",
        "It is not for clinical use, diagnosis, or drawing research conclusions; every output is marked SYNTHETIC.",
        "",
        "## Networks",
        "",
        "| network | parameters | file | size |",
        "|---|---|---|---|",
    ]
    for role, title in ROLE_TITLES.items():
        entry = outputs.get(role, {})
        size = f"{entry['bytes'] / 1e6:.2f} MB" if entry else "not trained"
        lines.append(f"| {title} | {counts[role] / 1e6:.2f} M | {entry.get('file', '-')} | {size} |")
    lines += [
        "",
        f"Total {sum(counts.values()) / 1e6:.2f} M parameters; {report.get('outputs_total_mb', 0)} MB as fp16 safetensors "
        "(the diffusion file carries the latent `scale_factor` in its metadata).",
        "Architecture: the `demo` preset (VAE channels 16/32/64, one residual block per level; U-Net and ControlNets",
        "32/64/96 with attention at the lowest level; rectified-flow scheduler, 20 steps by default). The inpainting",
        "ControlNet takes 10 conditioning channels: the image blanked inside the region to paint, that region,",
        "and the 8 bit-planes of the tumor label.",
        "",
        "## Training data",
        "",
        f"{pool.get('phantoms', '?')} procedural phantoms (`MAISIEngine.phantom`, seeds {pool.get('seeds')}), "
        f"sizes {pool.get('sizes')}, spacing {pool.get('spacing_mm')} mm, regions {pool.get('regions')}, "
        f"{pool.get('with_tumor', '?')} with a tumor (phantoms per tumor id: {pool.get('tumor_ids')}; 23 lung, "
        "24 pancreas, 26 liver, 27 colon, 128 bone lesion). HU clipped to",
        f"[-1000, 1000] and scaled to [0, 1]. VAE: random {_sizes([plan_of(report, 'vae').get('size')])} crops with "
        "random flips. Diffusion and ControlNets: posterior-mean latents of the whole volumes, encoded once; crops of",
        f"{_sizes(plan_of(report, 'diffusion').get('latent_sizes'))} latent voxels (inpainting: "
        f"{_sizes(plan_of(report, 'inpaint').get('latent_sizes'))}, centred on a tumor most of the time).",
        "",
        "## Training",
        "",
        f"One run of `{report.get('command', 'bench/train_demo.py')}` on {env.get('gpu') or 'CPU'} "
        f"(torch {env.get('torch')}, MONAI {env.get('monai')}), bf16 autocast on CUDA, AdamW, linear warm-up then",
        f"cosine decay over each stage's share of a {report.get('budget_s')} s budget, gradient norm clipped at 1.",
        "",
        "| stage | objective | batch | peak lr | steps | seconds | loss first -> last |",
        "|---|---|---|---|---|---|---|",
    ]
    plan = report.get("plan", {})
    for stage, title in STAGE_TITLES.items():
        entry = report.get("stages", {}).get(stage, {})
        settings = plan.get(stage, {})
        if "steps" in entry:
            first, last = entry["first"].get("loss"), entry["last"].get("loss")
            batch = entry.get("batch", settings.get("batch"))
            lines.append(f"| {stage} | {title} | {batch} | {settings.get('lr')} | {entry['steps']} | "
                         f"{entry['seconds']} | {first} -> {last} |")
        else:
            lines.append(f"| {stage} | {title} | {settings.get('batch')} | {settings.get('lr')} | - | - | "
                         f"{entry.get('error') or entry.get('skipped') or 'not run'} |")
    lines += ["", "Per-step losses: `losses.csv` of the training run; all figures: `train_report.json`.", "",
              "## Evaluation (measured on the training machine right after training)", ""]
    lines += figure_lines(figures)
    if not figures.get("vae") and not figures.get("generation"):
        lines.append("- not measured in this run.")
    lines += ["", CARD_BEGIN,
              "CPU figures: run `python bench/demo_quality.py --card MAISIEngine/assets/demo/MODEL_CARD.md`.",
              CARD_END, "",
              "## Limitations",
              "",
              "- Trained on a few dozen procedural phantoms for minutes: organ shapes, textures and intensities are",
              "  those of the phantom generator; real patients, pathologies, contrast phases and scanners are not covered.",
              "- Sizes and spacings outside the preset's `trained_on` range (64-160 voxels in-plane, 2-4 mm) degrade.",
              "- Tumor inpainting was trained on the five MAISI tumor types placed by the phantom generator only.",
              "- Small networks: fine detail (vessels, bone trabeculae, noise texture) is smoothed.",
              "",
              "## Retraining",
              "",
              "```",
              "bash bench/train_demo.sh OUT_DIR --budget-s 420     # one GPU, bf16; writes the files above into OUT_DIR",
              "python bench/train_demo.py --out /tmp/demo-smoke --smoke   # a two-minute CPU check of the same script",
              "python bench/demo_quality.py --model OUT_DIR --seeds 10     # acceptance figures on CPU",
              "```",
              "",
              "The same stages run individually as",
              "`maisi train vae|diffusion|controlnet [--task inpaint] --phantoms N ...`.",
              ""]
    return "\n".join(lines)


def prerequisites_met(name: str, work: Path) -> str | None:
    needs = {"vae": [], "diffusion": ["autoencoder.pt"], "controlnet": ["autoencoder.pt", "diffusion_unet.pt"],
             "inpaint": ["autoencoder.pt", "diffusion_unet.pt"]}[name]
    missing = [n for n in needs if not (work / n).is_file()]
    return f"needs {', '.join(missing)} from an earlier stage" if missing else None


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    profile = PROFILES["smoke" if args.smoke else args.profile]
    budget = float(args.budget_s if args.budget_s is not None else profile.budget_s)
    out = Path(args.out).expanduser()
    work = Path(args.work).expanduser() if args.work else Path(tempfile.mkdtemp(prefix="maisi-demo-work-"))
    if work.exists() and not args.keep_work:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    from MAISIEngine.models import resolve_device

    device = resolve_device(args.device)
    configure_backends(device)
    torch.manual_seed(args.seed)
    report: dict[str, Any] = {
        "profile": profile.name, "budget_s": budget, "seed": args.seed, "device": str(device),
        "environment": environment(), "plan": {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v)
                                               for k, v in asdict(profile).items()},
        "stages": {}, "errors": [], "figures": {},
        "command": " ".join([Path(sys.executable).name] + sys.argv),
    }
    histories: dict[str, list[dict[str, float]]] = {}
    log(f"profile {profile.name}, budget {budget:.0f} s, device {device}, work {work}, out {out}")

    try:
        tick = time.perf_counter()
        pool = make_pool(profile, args.seed, args.workers)
        report["pool"] = {"phantoms": len(pool), "with_tumor": sum(1 for v in pool.volumes if v.tumor_ids()),
                          "tumor_ids": pool.tumor_counts(),
                          "sizes": sorted({tuple(s.size) for s in pool.specs}),
                          "spacing_mm": [min(min(s.spacing) for s in pool.specs), max(max(s.spacing) for s in pool.specs)],
                          "regions": sorted({s.region for s in pool.specs}),
                          "seeds": [pool.specs[0].seed, pool.specs[-1].seed],
                          "seconds": round(time.perf_counter() - tick, 1)}
        log(f"phantom pool: {pool.describe()} in {report['pool']['seconds']} s")
    except Exception as exc:
        report["errors"].append({"where": "phantom pool", "error": f"{exc.__class__.__name__}: {exc}",
                                 "traceback": traceback.format_exc()[-3000:]})
        write_outputs(out, work, report, histories)
        return 1

    from MAISIEngine.train.runner import train_stage

    stages = [s for s in STAGE_ORDER if s not in set(args.skip or [])]
    for position, name in enumerate(stages):
        plan = profile.stage(name)
        reason = prerequisites_met(name, work)
        if reason:
            report["stages"][name] = {"skipped": reason}
            log(f"{name}: skipped ({reason})")
            continue
        elapsed = time.perf_counter() - started
        remaining = budget - elapsed - profile.eval_reserve_s
        shares = sum(profile.stage(s).share for s in stages[position:])
        stage_budget = max(remaining * plan.share / shares - profile.setup_allowance_s, profile.min_stage_s)
        tick = time.perf_counter()
        for attempt in range(2):
            config = stage_config(name, plan, work, args.seed, str(device), stage_budget, profile.log_every)
            log(f"{name}: up to {stage_budget:.0f} s, batch {plan.batch}, lr {plan.lr}")
            try:
                result = train_stage(config, pool, preset="demo" if name == "vae" else None, log=log)
                histories[name] = result.history
                report["stages"][name] = summarise(result) | {"budget_s": round(stage_budget, 1), "batch": plan.batch,
                                                              "wall_s": round(time.perf_counter() - tick, 1)}
                log(f"{name}: {report['stages'][name]}")
                break
            except torch.cuda.OutOfMemoryError:
                # Half the batch once (the stage's time share shrinks by what the failed try used).
                torch.cuda.empty_cache()
                used = time.perf_counter() - tick
                plan = replace(plan, batch=max(1, plan.batch // 2))
                stage_budget = max(stage_budget - used, profile.min_stage_s)
                report["errors"].append({"where": name, "error": f"CUDA out of memory; retrying with batch {plan.batch}"})
                log(f"{name}: out of GPU memory, retrying with batch {plan.batch}")
                if attempt == 1:
                    report["stages"][name] = {"error": "CUDA out of memory"}
            except Exception as exc:
                report["stages"][name] = {"error": f"{exc.__class__.__name__}: {exc}"}
                report["errors"].append({"where": name, "error": f"{exc.__class__.__name__}: {exc}",
                                         "traceback": traceback.format_exc()[-3000:]})
                log(f"{name}: FAILED {exc.__class__.__name__}: {exc}")
                break
        if name == "vae" and "steps" in report["stages"].get("vae", {}):
            calibrate_decoder(work, pool, args.seed, device, report)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    report["training_seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(out, work, report, histories)
    if not args.skip_eval:
        evaluate(out, profile, str(device), report)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(out, work, report, histories)
    log(f"done in {report['total_seconds']} s; {len(report['errors'])} error(s); outputs in {out}")
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    finished = all("steps" in report["stages"].get(s, {}) for s in stages)
    return 0 if finished and not report["errors"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default: $OUT)")
    parser.add_argument("--work", help="folder for intermediate files (default: a new temporary folder)")
    parser.add_argument("--keep-work", action="store_true", help="keep --work afterwards (and reuse it)")
    parser.add_argument("--budget-s", type=float, help="total wall-clock budget in seconds (gpu default 420)")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of every stage (checks the script)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="gpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, help="processes generating phantoms (default: all CPUs)")
    parser.add_argument("--skip", nargs="*", choices=STAGE_ORDER, help="stages to leave out")
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("--out is required when $OUT is not set")
    if args.smoke and args.device == "auto":
        args.device = "cpu"
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
