"""GPU benchmark of exact TSP decoding (not a test): time and peak memory of large decodes.

Run by bench/gpu_tsp.sh on one CUDA GPU. With random weights and the real rflow-ct VAE architecture it
  1. checks accuracy on a smaller volume: TSP float32 against MONAI's unsplit float32 decode (TF32 off),
     and TSP in the chosen half precision against that float32 reference;
  2. decodes each requested size with the planner's plan for the memory budget, timing it and reading
     torch.cuda.max_memory_allocated (weights, latent and the float32 output on the GPU included);
  3. prints one summary table and writes it to $OUT/gpu_tsp.txt when $OUT is set.
Targets: peak <= 16 GB and time <= 57 s (the reference's A100 figure for 512x512x768).
`--smoke` runs the same code on the CPU at a tiny size, to catch mistakes before GPU time is spent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from MAISIEngine import tsp
from MAISIEngine.presets import load_preset

GB = 1e9
TARGET_PEAK_GB = 16.0
TARGET_SECONDS = 57.0


def build(device: torch.device, norm_float16: bool, state: dict | None = None):
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import (
        AutoencoderKlMaisi,
    )

    kwargs = dict(load_preset("rflow-ct").autoencoder)
    kwargs.update(norm_float16=norm_float16, num_splits=1)
    model = AutoencoderKlMaisi(**kwargs).eval()
    if state is not None:
        model.load_state_dict(state)
    return model.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def accuracy(model, device: torch.device, latent_size: tuple[int, int, int], half: torch.dtype, budget: int) -> list[str]:
    """TSP float32 vs MONAI unsplit float32, and TSP half precision vs that reference."""
    torch.manual_seed(2)
    latent = torch.randn(1, 4, *latent_size, device=device)
    with torch.inference_mode():
        reference = model.decode_stage_2_outputs(latent)
    exact = tsp.decode(model, latent, devices=[device], dtype=torch.float32, max_memory_bytes=budget)
    fast = tsp.decode(model, latent, devices=[device], dtype=half, max_memory_bytes=budget)
    scale = float(reference.abs().max())
    size = "x".join(str(4 * s) for s in latent_size)
    lines = [
        (f"accuracy {size}: TSP float32 vs MONAI unsplit float32: max |diff| {float((exact - reference).abs().max()):.2e} "
         f"(output max |value| {scale:.2f})"),
        (f"accuracy {size}: TSP {str(half).replace('torch.', '')} vs MONAI unsplit float32: max |diff| "
         f"{float((fast - reference).abs().max()):.2e}, mean |diff| {float((fast - reference).abs().mean()):.2e}"),
    ]
    del reference, exact, fast
    return lines


def decode_once(model, device: torch.device, size: tuple[int, int, int], dtype: torch.dtype, budget: int,
                allow_offload: bool) -> dict:
    torch.manual_seed(3)
    latent = torch.randn(1, 4, *(s // 4 for s in size), device=device)
    plan = tsp.plan_decode(latent.shape[1:], model, devices=[device], max_memory_bytes=budget, dtype=dtype,
                           allow_offload=allow_offload)
    print(tsp.format_plan(plan), flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    image = tsp.decode(model, latent, plan=plan)
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan")
    finite = bool(torch.isfinite(image).all())
    del image
    return {"size": "x".join(map(str, size)), "seconds": seconds, "peak": peak, "finite": finite,
            "kept": len(plan.stored), "offloaded": plan.offloaded, "steps": plan.max_segments,
            "predicted_peak": plan.predicted_peak_bytes, "predicted_s": plan.predicted_seconds,
            "offload_allowed": allow_offload}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny run on the CPU")
    parser.add_argument("--sizes", default="512x512x512,512x512x768")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--budget-gb", type=float, default=15.5,
                        help="memory budget given to the planner, in GB (1e9 bytes; the target is 16 GB)")
    parser.add_argument("--time-limit", type=float, default=150.0, help="skip further runs after this many seconds")
    parser.add_argument("--no-offload-variant", action="store_true", help="also decode each size without host offload")
    args = parser.parse_args()
    started = time.perf_counter()

    if args.smoke:
        device, sizes, check = torch.device("cpu"), [(16, 16, 24)], (3, 4, 5)
        budget = 1 << 30
        half = torch.bfloat16
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU found; use --smoke for a CPU check", file=sys.stderr)
            return 2
        device = torch.device("cuda", 0)
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        check = (32, 32, 24)
        budget = int(args.budget_gb * GB)
        half = getattr(torch, args.dtype)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False  # the float32 comparison must be float32

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    total = torch.cuda.get_device_properties(device).total_memory / GB if device.type == "cuda" else float("nan")
    import monai

    header = [f"TSP decode benchmark on {name} ({total:.0f} GB), torch {torch.__version__}, MONAI {monai.__version__}",
              (f"rflow-ct VAE, random weights (seed 0), compute {str(half).replace('torch.', '')}, "
               f"planner budget {budget / GB:.1f} GB, output float32 on the device")]
    print("\n".join(header), flush=True)
    torch.manual_seed(0)
    model = build(device, norm_float16=False)
    lines = accuracy(model, device, check, half, budget)
    print("\n".join(lines), flush=True)

    rows = []
    runs = [(size, True) for size in sizes] + ([(size, False) for size in sizes] if args.no_offload_variant else [])
    for size, allow in runs:  # the planner's own choice for every size first, then the device-only variants
        label = f"{'x'.join(map(str, size))} (offload {'allowed' if allow else 'off'})"
        if time.perf_counter() - started > args.time_limit:
            lines.append(f"skipped {label}: time limit reached")
            continue
        try:
            rows.append(decode_once(model, device, size, half, budget, allow))
            print(rows[-1], flush=True)
        except torch.cuda.OutOfMemoryError as exc:
            lines.append(f"{label}: out of memory: {str(exc).splitlines()[0]}")
            torch.cuda.empty_cache()

    table = [(f"{'output':>12s} {'offload':>8s} {'time (s)':>9s} {'peak alloc (GB)':>16s} {'predicted (GB)':>15s} "
              f"{'kept':>5s} {'steps':>6s} {'finite':>7s} {'targets':>24s}")]
    for r in rows:
        met = (r["peak"] <= TARGET_PEAK_GB * GB) and (r["seconds"] <= TARGET_SECONDS)
        verdict = "n/a (CPU smoke run)" if math.isnan(r["peak"]) else ("met" if met else "NOT met")
        table.append(
            f"{r['size']:>12s} {('yes' if r['offloaded'] else 'no') if r['offload_allowed'] else 'off':>8s} "
            f"{r['seconds']:9.1f} {r['peak'] / GB:16.2f} {r['predicted_peak'] / GB:15.2f} {r['kept']:5d} {r['steps']:6d} "
            f"{r['finite']!s:>7s} {verdict:>24s}"
        )
    summary = "\n".join([*header, *lines, "", *table, f"targets: peak <= {TARGET_PEAK_GB:.0f} GB, time <= {TARGET_SECONDS:.0f} s"])
    print("\n" + summary)
    out_dir = os.environ.get("OUT")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        Path(out_dir, "gpu_tsp.txt").write_text(summary + "\n")
        Path(out_dir, "gpu_tsp.json").write_text(json.dumps({"device": name, "torch": torch.__version__,
                                                             "checks": lines, "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
