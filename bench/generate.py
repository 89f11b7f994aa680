"""Time and peak memory of each stage of one generation, MAISISynth's engine beside the reference code path.

Both paths run the real architecture of a preset (random weights, written once into a cache folder in
NVIDIA's checkpoint layout), the same phantom mask, the same seed and the same initial noise, each in
its own process so that their memory peaks do not mix:

- "ours": the engine's own functions (`load_model`, `build_conditions`, `seeded_noise`, `sample`,
  `decode_latent` with the exact TSP decoder), the code every front end runs;
- "reference": MONAI's networks driven the way NVIDIA's NV-Generate-CTMR inference scripts drive them:
  networks built with the reference's `num_splits`/`dim_split`, checkpoints loaded non-strictly with the
  ControlNet first copied from the U-Net, the RFlowScheduler loop calling the ControlNet then the
  U-Net, and the VAE decode of the scaled latent either called whole (MONAI's own tensor splitting)
  or through MONAI's gaussian SlidingWindowInferer, whichever the reference picks for the latent size.

Printed: per-stage wall time and peak memory (peak RSS on CPU, torch.cuda.max_memory_allocated on CUDA)
of both paths with the ratio ours / reference, and how far apart the results are (latent, VAE output,
HU image). On CUDA the reference runs in float16 autocast as it does on GPUs; on CPU, where its
`autocast("cuda")` does nothing and float16 inputs would not run, both paths compute in float32 (the
reference's VAE then with `norm_float16` off, since its float16 GroupNorm needs CUDA autocast).

    python bench/generate.py                       # rflow-ct, 128^3, 2 steps, CPU
    python bench/generate.py --size 64 64 64 --steps 1
    python bench/generate.py --model demo --size 128 128 128 --steps 20
    python bench/generate.py --size 256 256 256 --steps 30 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    StageMeter,
    cached_model_directory,
    format_bytes,
    format_seconds,
    machine_lines,
    print_table,
    run_child,
)

REFERENCE_WINDOW = (48, 48, 48)
"""Latent voxels per sliding window in the reference's default inference config (config_infer.json)."""
REFERENCE_OVERLAP = 0.6666
REFERENCE_SCHEDULER_EXTRA = {"scale": 1.4}
"""The reference's network config also sets the logit-normal `scale` (used only when training)."""
PATHS = ("ours", "reference")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("rflow-ct", "demo"), default="rflow-ct",
                        help="architecture to run with random weights (default rflow-ct)")
    parser.add_argument("--size", type=int, nargs=3, default=[128, 128, 128], metavar=("X", "Y", "Z"))
    parser.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 3.0], metavar=("SX", "SY", "SZ"))
    parser.add_argument("--steps", type=int, default=2, help="denoising steps (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=PATHS, help="run one path only")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run both paths this many times, alternating, and keep each stage's fastest time")
    parser.add_argument("--cache-dir", help="model folder to write once and reuse (default /tmp/maisi-bench-rflow or -demo)")
    parser.add_argument("--reference-window", type=int, nargs=3, default=list(REFERENCE_WINDOW), metavar=("X", "Y", "Z"),
                        help="latent voxels per sliding window of the reference decode (its default config: 48 48 48)")
    parser.add_argument("--reference-overlap", type=float, default=REFERENCE_OVERLAP)
    parser.add_argument("--reference-splits", type=int,
                        help="num_splits of the reference's VAE (default: the model's network config, 4 for rflow-ct)")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--repeat-index", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------- shared


def latent_shape(preset_raw: dict[str, Any], size: list[int]) -> tuple[int, ...]:
    factor = 2 ** (len(preset_raw["autoencoder"]["num_channels"]) - 1)
    return (1, int(preset_raw["diffusion_unet"]["in_channels"]), *(s // factor for s in size))


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The same float32 noise both paths start from, drawn on the CPU from the seed."""
    return torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(seed), dtype=torch.float32)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so a stage's time includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock() -> tuple[float, float]:
    """(wall, CPU time of all this process's threads), in seconds."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> list[float]:
    now = clock()
    return [now[0] - start[0], now[1] - start[1]]


def save_outputs(workdir: Path, name: str, meter: StageMeter, steps: list[list[float]], total: list[float],
                 latent: torch.Tensor, decoded: torch.Tensor, notes: list[str], repeat: int) -> None:
    np.save(workdir / f"{name}_latent.npy", latent.detach().float().cpu().numpy())
    np.save(workdir / f"{name}_decoded.npy", decoded.detach().float().cpu().numpy()[0, 0])
    record = {"stages": meter.results, "steps": steps, "total": total, "notes": notes,
              "process_peak_rss": meter.process_peak_rss()}
    (workdir / f"{name}_{repeat}.json").write_text(json.dumps(record, indent=2))


# ------------------------------------------------------------------------------------------------- ours


def run_ours(args: argparse.Namespace, workdir: Path, inputs: dict[str, Any]) -> None:
    """The engine's generation path, stage by stage (the functions `pipeline.generate` calls)."""
    from MAISIEngine.io.nifti import Volume
    from MAISIEngine.models import load_model, resolve_device
    from MAISIEngine.pipeline import build_conditions, decode_latent, seeded_noise
    from MAISIEngine.sampling import make_scheduler, sample

    device = resolve_device(args.device)
    meter = StageMeter(str(device))
    labels = Volume(np.load(workdir / "labels.npy"), np.asarray(inputs["affine"]))
    start = clock()
    with meter.stage("load"):
        model = load_model(inputs["model_dir"], device)
    with meter.stage("conditions"):
        cond, _ = build_conditions(model, labels, None, model.preset.guidance_scale)
    steps: list[list[float]] = []
    step_start = clock()

    def on_step(done: int, total: int) -> None:
        nonlocal step_start
        synchronize(device)
        steps.append(since(step_start))
        step_start = clock()

    with meter.stage("sampling"):
        step_start = clock()
        noise = seeded_noise(tuple(inputs["latent_shape"]), args.seed, device)
        generator = torch.Generator(device=device).manual_seed(args.seed)
        latent = sample(model.unet, model.controlnet, make_scheduler(model.preset), noise, cond, args.steps,
                        generator, progress=on_step)
        synchronize(device)
    with meter.stage("decode"):
        decoded = decode_latent(model, latent / model.scale_factor)
        synchronize(device)
    total = since(start)
    notes = ["decode: exact TSP decoder (MAISIEngine.tsp.decode)"]
    save_outputs(workdir, "ours", meter, steps, total, latent, decoded, notes, args.repeat_index)


# -------------------------------------------------------------------------------------------- reference


def label_bits(labels: torch.Tensor) -> torch.Tensor:
    """(1, 1, X, Y, Z) integer labels -> (1, 8, X, Y, Z) bytes, bit b of each label in channel b."""
    weights = (2 ** torch.arange(8, device=labels.device)).view(1, 8, 1, 1, 1)
    return (labels.long() & weights).ne(0).to(torch.uint8)


def load_reference_networks(raw: dict[str, Any], model_dir: Path, splits: int, device: torch.device) -> dict[str, Any]:
    """Build and load the three networks and the scheduler as the reference's model loader does.

    A function of its own, as in the reference, so the checkpoint dictionaries are freed on return.
    """
    import monai
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi
    from monai.apps.generation.maisi.networks.controlnet_maisi import ControlNetMaisi
    from monai.apps.generation.maisi.networks.diffusion_model_unet_maisi import DiffusionModelUNetMaisi
    from monai.networks.schedulers import RFlowScheduler

    cuda = device.type == "cuda"
    files = {role: model_dir / name for role, name in raw["weights"].items()}

    def network_kwargs(role: str) -> dict[str, Any]:
        kwargs = dict(raw[role])
        if "use_flash_attention" in kwargs:
            kwargs["use_flash_attention"] = bool(kwargs["use_flash_attention"]) and cuda  # MONAI refuses it on CPU
        return kwargs

    vae_kwargs = network_kwargs("autoencoder")
    vae_kwargs["num_splits"] = splits
    if not cuda:  # its float16 GroupNorm relies on CUDA autocast; on CPU it would feed float16 to float32 convs
        vae_kwargs["norm_float16"] = False
    autoencoder = AutoencoderKlMaisi(**vae_kwargs).to(device)
    state = torch.load(files["autoencoder"], map_location="cpu", weights_only=True)
    autoencoder.load_state_dict(state.get("unet_state_dict", state))
    unet = DiffusionModelUNetMaisi(**network_kwargs("diffusion_unet")).to(device)
    unet_checkpoint = torch.load(files["diffusion_unet"], map_location="cpu", weights_only=True)
    unet.load_state_dict(unet_checkpoint["unet_state_dict"], strict=False)
    scale_factor = unet_checkpoint["scale_factor"].to(device)
    controlnet = ControlNetMaisi(**network_kwargs("controlnet")).to(device)
    control_checkpoint = torch.load(files["controlnet"], map_location="cpu", weights_only=True)
    monai.networks.utils.copy_model_state(controlnet, unet.state_dict())
    controlnet.load_state_dict(control_checkpoint["controlnet_state_dict"], strict=False)
    scheduler_kwargs = {k: v for k, v in raw["scheduler"].items() if k != "type"}
    scheduler = RFlowScheduler(**scheduler_kwargs, **REFERENCE_SCHEDULER_EXTRA)
    for network in (autoencoder, unet, controlnet):
        network.eval()
    return {"autoencoder": autoencoder, "unet": unet, "controlnet": controlnet, "scale_factor": scale_factor,
            "scheduler": scheduler, "vae_kwargs": vae_kwargs}


def run_reference(args: argparse.Namespace, workdir: Path, inputs: dict[str, Any]) -> None:
    """MONAI's networks called the way the reference inference scripts call them."""
    from monai.inferers import SlidingWindowInferer

    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    cuda = device.type == "cuda"
    meter = StageMeter(str(device))
    raw = json.loads((Path(inputs["model_dir"]) / "preset.json").read_text())
    start = clock()
    with meter.stage("load"):
        loaded = load_reference_networks(raw, Path(inputs["model_dir"]), inputs["reference_splits"], device)
    autoencoder, unet, controlnet = loaded["autoencoder"], loaded["unet"], loaded["controlnet"]
    scale_factor, scheduler, vae_kwargs = loaded["scale_factor"], loaded["scheduler"], loaded["vae_kwargs"]
    del loaded

    half = (lambda t: t.half()) if cuda else (lambda t: t.float())
    with meter.stage("conditions"):
        labels = torch.from_numpy(np.load(workdir / "labels.npy").astype(np.int64))[None, None].to(device)
        control_input = half(label_bits(labels))
        spacing = half(torch.tensor(inputs["spacing"], dtype=torch.float32).unsqueeze(0)).to(device) * 100
        modality = torch.ones((1,), dtype=torch.long, device=device) if raw["diffusion_unet"].get("num_class_embeds") else None

    steps: list[list[float]] = []
    precision = torch.autocast("cuda", dtype=torch.float16) if cuda else nullcontext()
    with torch.no_grad(), precision:
        with meter.stage("sampling"):
            latents = half(initial_noise(tuple(inputs["latent_shape"]), args.seed)).to(device)
            scheduler.set_timesteps(num_inference_steps=args.steps,
                                    input_img_size_numel=torch.prod(torch.tensor(latents.shape[-3:])))
            timesteps = scheduler.timesteps
            following = torch.cat((timesteps[1:], torch.tensor([0], dtype=timesteps.dtype)))
            for t, next_t in zip(timesteps, following):
                tick = clock()
                control = {"x": latents, "timesteps": torch.Tensor((t,)).to(device), "controlnet_cond": control_input}
                if modality is not None:
                    control["class_labels"] = modality
                down, mid = controlnet(**control)
                unet_inputs = {"x": latents, "timesteps": torch.Tensor((t,)).to(device), "spacing_tensor": spacing,
                               "down_block_additional_residuals": down, "mid_block_additional_residual": mid}
                if modality is not None:
                    unet_inputs["class_labels"] = modality
                output = unet(**unet_inputs)
                latents, _ = scheduler.step(output, t, latents, next_t)
                synchronize(device)
                steps.append(since(tick))
        with meter.stage("decode"):
            decoded, note = reference_decode(autoencoder, scale_factor, latents, inputs, device, SlidingWindowInferer)
            synchronize(device)
    total = since(start)
    notes = [f"decode: {note}", f"VAE num_splits {vae_kwargs['num_splits']}, dim_split {vae_kwargs['dim_split']}, "
             f"norm_float16 {vae_kwargs['norm_float16']}" + ("" if cuda else " (float16 norms need CUDA autocast)")]
    save_outputs(workdir, "reference", meter, steps, total, latents, decoded, notes, args.repeat_index)


def reference_decode(autoencoder: Any, scale_factor: Any, latents: Any, inputs: dict[str, Any], device: Any,
                     inferer_class: Any) -> tuple[Any, str]:
    """The reference's decode: the whole latent at once when it fits one window, else gaussian sliding windows."""

    class ScaledDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.autoencoder = autoencoder

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.autoencoder.decode_stage_2_outputs(z / scale_factor)

    decoder = ScaledDecoder().to(device)
    window = [int(w) for w in inputs["reference_window"]]
    spatial = list(latents.shape[2:])
    if math.prod(spatial) <= math.prod(window):
        return decoder(latents), "whole latent at once (it fits one reference window), MONAI's num_splits"
    roi = [min(w, s) for w, s in zip(window, spatial)]
    inferer = inferer_class(roi_size=roi, sw_batch_size=1, mode="gaussian", overlap=inputs["reference_overlap"],
                            sw_device=device, device=torch.device("cpu"), progress=False)
    return inferer(inputs=latents, network=decoder), (
        f"gaussian sliding window {roi} latent voxels, overlap {inputs['reference_overlap']}")


# ------------------------------------------------------------------------------------------------ parent


def prepare_inputs(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Model folder, phantom mask (body envelope included) and the shapes both paths use."""
    from MAISIEngine.pipeline import GenerationRequest, prepare_labels
    from MAISIEngine.presets import load_preset

    model_dir = cached_model_directory(args.model, args.cache_dir)
    preset = load_preset(str(model_dir))
    request = GenerationRequest(model=str(model_dir), size=tuple(args.size), spacing=tuple(args.spacing), seed=args.seed)
    labels = prepare_labels(preset, request, lambda message: print(f"note: {message}"))
    np.save(workdir / "labels.npy", labels.array)
    raw = preset.to_dict()
    splits = args.reference_splits or int(raw["autoencoder"].get("num_splits", 1))
    inputs = {"model_dir": str(model_dir), "affine": np.asarray(labels.affine).tolist(),
              "spacing": [float(s) for s in labels.spacing], "latent_shape": list(latent_shape(raw, list(labels.shape))),
              "reference_splits": splits, "reference_window": list(args.reference_window),
              "reference_overlap": args.reference_overlap}
    (workdir / "inputs.json").write_text(json.dumps(inputs))
    return inputs


def ratio(ours: float | None, reference: float | None) -> str:
    if ours is None or reference is None or reference <= 0:
        return "-"
    return f"{ours / reference:.2f}"


Measure = tuple[float | None, float | None, float | None]
"""(wall s, CPU s, peak bytes) of one stage."""


def best_of(records: list[dict[str, Any]], processes: list[tuple[float, int]]) -> dict[str, Measure | list[Measure]]:
    """Per stage over the repeats: the fastest wall and CPU times (the least disturbed run), the largest peak."""
    def combine(measures: list[Measure]) -> Measure:
        walls, cpus = [m[0] for m in measures if m[0] is not None], [m[1] for m in measures if m[1] is not None]
        peaks = [m[2] for m in measures if m[2] is not None]
        return (min(walls) if walls else None, min(cpus) if cpus else None, max(peaks) if peaks else None)

    out: dict[str, Measure | list[Measure]] = {}
    for stage in ("load", "conditions", "sampling", "decode"):
        out[stage] = combine([(r["stages"][stage]["s"], r["stages"][stage]["cpu_s"], r["stages"][stage]["peak_bytes"])
                              for r in records])
    out["steps"] = [combine([(r["steps"][i][0], r["steps"][i][1], None) for r in records])
                    for i in range(len(records[0]["steps"]))]
    out["total"] = combine([(r["total"][0], r["total"][1], max(v["peak_bytes"] or 0 for v in r["stages"].values()) or None)
                            for r in records])
    out["process"] = combine([(wall, None, max(peak, r["process_peak_rss"] or 0))
                              for r, (wall, peak) in zip(records, processes)])
    return out


def report(args: argparse.Namespace, workdir: Path, processes: dict[str, list[tuple[float, int]]]) -> None:
    names = list(processes)
    records = {n: [json.loads((workdir / f"{n}_{k}.json").read_text()) for k in range(len(processes[n]))] for n in names}
    best = {n: best_of(records[n], processes[n]) for n in names}
    peak_name = "GPU peak" if args.device.startswith("cuda") else "peak RSS"
    headers = ["stage"]
    for name in names:
        short = "ref" if name == "reference" else name
        headers += [f"{short} wall", f"{short} CPU", f"{short} {peak_name}"]
    if len(names) == 2:
        headers += ["wall ours/ref", "CPU ours/ref", "memory ours/ref"]

    def row(label: str, key: str, index: int | None = None) -> list[str]:
        values = [best[n][key] if index is None else best[n][key][index] for n in names]  # type: ignore[index]
        cells = [label]
        for wall, cpu, peak in values:
            cells += [format_seconds(wall), format_seconds(cpu), format_bytes(peak)]
        if len(values) == 2:
            cells += [ratio(values[0][i], values[1][i]) for i in range(3)]
        return cells

    rows = [row("load", "load"), row("conditions", "conditions"), row("sampling", "sampling")]
    rows += [row(f"  step {i + 1}", "steps", i) for i in range(args.steps)]
    rows += [row("VAE decode", "decode"), row("total (load..decode)", "total"), row("whole process (RSS)", "process")]
    print()
    print_table(headers, rows)
    repeats = f", fastest of {args.repeat} runs each" if args.repeat > 1 else ""
    print(f"(wall and CPU time of all threads{repeats}; whole process: wall from interpreter start, peak RSS "
          "over the process's life)")
    for name in names:
        for note in records[name][0]["notes"]:
            print(f"{name}: {note}")
    if len(names) == 2:
        print_differences(workdir)


def print_differences(workdir: Path) -> None:
    """How far apart the two paths' results are, latent first, so decode and sampling differences separate."""
    labels = np.load(workdir / "labels.npy")
    latent_gap = np.abs(np.load(workdir / "ours_latent.npy") - np.load(workdir / "reference_latent.npy")).max()
    ours, reference = np.load(workdir / "ours_decoded.npy"), np.load(workdir / "reference_decoded.npy")
    vae_gap = np.abs(ours - reference).max()

    def hounsfield(decoded: np.ndarray) -> np.ndarray:
        hu = np.clip(decoded, 0.0, 1.0) * 2000.0 - 1000.0
        hu[labels == 0] = -1000.0
        return hu

    hu_gap = np.abs(hounsfield(ours) - hounsfield(reference))
    print(f"max |ours - reference|: latent after sampling {latent_gap:.3g}; VAE output {vae_gap:.3g} "
          f"(= {vae_gap * 2000:.3g} HU before clipping); image after clip and air outside the body "
          f"{hu_gap.max():.3g} HU (mean {hu_gap.mean():.3g} HU; VAE output range ours "
          f"[{ours.min():.3g}, {ours.max():.3g}])")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        workdir = Path(args.workdir)
        inputs = json.loads((workdir / "inputs.json").read_text())
        (run_ours if args.child == "ours" else run_reference)(args, workdir, inputs)
        return 0
    if args.steps < 1 or args.repeat < 1:
        raise SystemExit("--steps and --repeat must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} was asked for but CUDA is not available here; use --device cpu")
    for line in machine_lines(args.device):
        print(line)
    print(f"model {args.model} (random weights, real architecture), output {'x'.join(map(str, args.size))} "
          f"at {'x'.join(f'{s:g}' for s in args.spacing)} mm, {args.steps} steps, seed {args.seed}, device {args.device}")
    with tempfile.TemporaryDirectory(prefix="maisi-bench-generate-") as tmp:
        workdir = Path(tmp)
        prepare_inputs(args, workdir)
        processes: dict[str, list[tuple[float, int]]] = {}
        forwarded = list(argv if argv is not None else sys.argv[1:])
        for repeat in range(args.repeat):
            for name in ([args.only] if args.only else PATHS):
                print(f"running the {name} path in its own process (run {repeat + 1} of {args.repeat}) ...", flush=True)
                code, wall, peak = run_child([sys.executable, str(Path(__file__).resolve()), *forwarded, "--child", name,
                                              "--workdir", str(workdir), "--repeat-index", str(repeat)],
                                             env=dict(os.environ))
                if code != 0:
                    print(f"the {name} path failed (exit code {code})")
                    return 1
                processes.setdefault(name, []).append((wall, peak))
        report(args, workdir, processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
