"""Benchmark: exact TSP decoding against MONAI's decoders on this CPU (not a test).

One run decodes the same latent with the real rflow-ct VAE architecture and the same random weights:
  ours-N     MAISIEngine.tsp.decode planned for a memory budget of N MiB (--budgets, several allowed;
             "default" is the planner's own budget, half the available memory)
  monai-4    MONAI AutoencoderKlMaisi built with num_splits=4 (dim_split=1), decode_stage_2_outputs
  monai-1    the same network unsplit (num_splits=1): the reference output
  sliding    the reference's sliding-window decode: MONAI SlidingWindowInferer over the latent,
             gaussian blending, overlap 0.4, roi = the 80 GB configuration's [80, 80, 80] latent roi
             scaled to this volume (same roi/volume ratio, 8 windows), predictor = unsplit decoder
Each runs in its own subprocess so peak RSS (VmHWM) does not mix; it prints time, peak RSS, and the
max abs difference to the unsplit output, then the ratios against the targets
(peak RSS <= 0.35x monai-4, time <= 1.0x monai-4, difference <= 1e-4) for each budget.

    python bench/tsp.py                                 # 128^3 output (latent 32^3)
    python bench/tsp.py --latent 16 --budgets 300       # a quicker look

The CPU networks run in float32: MONAI's norm_float16=True path needs CUDA autocast, so every network
here is built with norm_float16=False (the weights are the same).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REFERENCE_ROI_80GB = 80  # latent roi of the reference's 80 GB configuration for 512^3 (latent 128^3)
REFERENCE_LATENT_512 = 128
OVERLAP = 0.4


def peak_rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(num_splits: int, weights: str):
    import torch
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import (
        AutoencoderKlMaisi,
    )

    from MAISIEngine.presets import load_preset

    kwargs = dict(load_preset("rflow-ct").autoencoder)
    kwargs.update(norm_float16=False, num_splits=num_splits, dim_split=1)
    model = AutoencoderKlMaisi(**kwargs).eval()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model


def child(mode: str, weights: str, input_path: str, out_path: str, task: str) -> None:
    """Run one decoder (or encoder) in this process and print a JSON line with its figures."""
    import torch

    latent = torch.load(input_path, weights_only=True)  # the image when encoding
    model = build(4 if mode == "monai-4" else 1, weights)
    base = peak_rss_mib()
    start = time.perf_counter()
    with torch.inference_mode():
        if mode.startswith("ours"):
            from MAISIEngine import tsp

            budget = mode.split("-", 1)[1]
            limit = None if budget == "default" else int(budget) << 20
            planner = tsp.plan_decode if task == "decode" else tsp.plan_encode
            plan = planner(latent.shape[1:], model, max_memory_bytes=limit)
            print(tsp.format_plan(plan), file=sys.stderr)
            image = tsp.decode(model, latent, plan=plan) if task == "decode" else tsp.encode(model, latent, plan=plan)
        elif task == "encode":
            image = model.encode(latent)[0]
        elif mode == "sliding":
            from monai.inferers import SlidingWindowInferer

            roi = [max(1, round(REFERENCE_ROI_80GB * s / REFERENCE_LATENT_512)) for s in latent.shape[2:]]
            inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=1, overlap=OVERLAP, mode="gaussian", progress=False)
            image = inferer(inputs=latent, network=model.decode_stage_2_outputs)
        else:
            image = model.decode_stage_2_outputs(latent)
    seconds = time.perf_counter() - start
    torch.save(image.contiguous(), out_path)
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss_mib": peak_rss_mib(), "base_rss_mib": base}))


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent", type=int, default=32, help="latent size per axis (output is 4x)")
    parser.add_argument("--task", choices=["decode", "encode"], default="decode",
                        help="encode: the same comparison for the encoder (image 4x the latent size in [0, 1])")
    parser.add_argument("--budgets", default="800,850,default",
                        help="memory budgets (MiB) for our planner, comma-separated; 'default' = the planner's own")
    parser.add_argument("--reference", default="monai-4,monai-1,sliding", help="reference decoders to run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, *args.files, args.task)
        return 0

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        weights, latent_path = os.path.join(tmp, "autoencoder.pt"), os.path.join(tmp, "latent.pt")
        torch.manual_seed(0)
        torch.save(build_random_state(), weights)  # the official raw layout: a plain state dict
        torch.manual_seed(1)
        size = args.latent if args.task == "decode" else 4 * args.latent
        sample = torch.randn(1, 4, size, size, size) if args.task == "decode" else torch.rand(1, 1, size, size, size)
        torch.save(sample, latent_path)
        results = {}
        modes = [f"ours-{b}" for b in args.budgets.split(",") if b] + [
            m for m in args.reference.split(",") if m and not (m == "sliding" and args.task == "encode")]
        for mode in modes:
            out_path = os.path.join(tmp, f"{mode}.pt")
            load_before = load_average()
            proc = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--task", args.task, "--files", weights, latent_path, out_path],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"{mode} failed")
            if mode.startswith("ours"):
                print(proc.stderr.strip())
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[mode]["load"] = f"{load_before}->{load_average()}"
            print(f"{mode:12s} done: {results[mode]['seconds']:.1f} s, peak RSS {results[mode]['peak_rss_mib']:.0f} MiB "
                  f"(load average {results[mode]['load']})", flush=True)
        reference = torch.load(os.path.join(tmp, "monai-1.pt"), weights_only=True) if "monai-1" in results else None
        for mode, figures in results.items():
            image = torch.load(os.path.join(tmp, f"{mode}.pt"), weights_only=True)
            figures["max_abs_diff"] = float((image - reference).abs().max()) if reference is not None else float("nan")
    report(results, args)
    return 0


def build_random_state() -> dict:
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import (
        AutoencoderKlMaisi,
    )

    from MAISIEngine.presets import load_preset

    kwargs = dict(load_preset("rflow-ct").autoencoder)
    kwargs.update(norm_float16=False, num_splits=1)
    return AutoencoderKlMaisi(**kwargs).state_dict()


def report(results: dict, args) -> None:
    size = 4 * args.latent
    print(f"\nVAE {args.task}, rflow-ct architecture, random weights, {size}^3 image (latent {args.latent}^3), "
          f"float32, {os.cpu_count()} CPU threads, torch {__import__('torch').__version__}")
    print(f"{'run':12s} {'time (s)':>9s} {'peak RSS (MiB)':>15s} {'base RSS (MiB)':>15s} {'max |diff| to unsplit':>22s}")
    for mode, r in results.items():
        print(f"{mode:12s} {r['seconds']:9.1f} {r['peak_rss_mib']:15.0f} {r['base_rss_mib']:15.0f} {r['max_abs_diff']:22.2e}")
    ref = results.get("monai-4")
    for mode, ours in results.items():
        if not mode.startswith("ours") or ref is None:
            continue
        rss, sec = ours["peak_rss_mib"] / ref["peak_rss_mib"], ours["seconds"] / ref["seconds"]
        print(f"{mode} / monai-4: peak RSS {rss:.2f}x (target <= 0.35x: {'met' if rss <= 0.35 else 'NOT met'}), "
              f"time {sec:.2f}x (target <= 1.0x: {'met' if sec <= 1.0 else 'NOT met'}), "
              + (f"max |diff| {ours['max_abs_diff']:.1e} (target <= 1e-4: {'met' if ours['max_abs_diff'] <= 1e-4 else 'NOT met'})"
                 if ours["max_abs_diff"] == ours["max_abs_diff"] else "max |diff| not measured (add monai-1 to --reference)"))
    if "sliding" in results:
        print(f"sliding-window decode deviates from the unsplit network by up to {results['sliding']['max_abs_diff']:.3f} "
              "(seams and blending); TSP is exact.")


if __name__ == "__main__":
    raise SystemExit(main())
