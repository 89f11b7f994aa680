"""Volumes per hour of a batch run (`maisi batch`, i.e. `MAISIEngine.batch.runner.run_batch`) on this machine.

Generates a few samples from phantom masks into a temporary folder exactly as `maisi batch` does (one
model load, masks prepared on a worker thread, outputs written by a background thread, manifest and
report at the end) and prints the throughput end to end and per sample once the model is loaded.

    python bench/batch.py                                               # demo model, 4 x 128^3 at 3 mm, CPU
    python bench/batch.py --model rflow-ct --size 256 256 256 --device cuda   # real architecture, 30 steps

The demo model uses its shipped weights when they are installed (MAISIEngine/assets/demo/), otherwise
random weights of the same architecture (same cost; said in the output). rflow-ct always runs random
weights of the real architecture, written once into a cache folder.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import GIB, cached_model_directory, machine_lines, print_table

FIELD_OF_VIEW_MM = 384.0
"""Default spacing gives this field of view per axis (what MAISI advises outside the head)."""
SAMPLE_LINE = re.compile(r"sample (\d+) seed (\d+) in ([0-9.]+) s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("demo", "rflow-ct"), default="demo")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=3, default=[128, 128, 128], metavar=("X", "Y", "Z"))
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                        help=f"mm per voxel (default: a {FIELD_OF_VIEW_MM:.0f} mm field of view, 3 mm at 128)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's, 20 demo / 30 rflow-ct)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the batch")
    parser.add_argument("--cache-dir", help="random-weight model folder to write once and reuse")
    return parser.parse_args(argv)


def resolve_model(args: argparse.Namespace) -> tuple[str, str]:
    """(what the spec's `model` says, how to describe the weights in the output)."""
    if args.model == "demo":
        from MAISIEngine.errors import MaisiError
        from MAISIEngine.models import weight_paths
        from MAISIEngine.presets import load_preset

        try:
            if all(path.is_file() for path in weight_paths(load_preset("demo")).values()):
                return "demo", "demo model, shipped trained weights"
        except MaisiError:
            pass
        directory = cached_model_directory("demo", args.cache_dir)
        return str(directory), ("demo weights not installed under MAISIEngine/assets/demo/: random weights of the "
                                "demo architecture instead (same cost per volume)")
    directory = cached_model_directory(args.model, args.cache_dir)
    return str(directory), f"{args.model}: random weights of the real architecture"


def peak_memory(device: str) -> str:
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    text = f"peak RSS {rss / GIB:.2f} GiB"
    if device.startswith("cuda"):
        text += f", peak GPU memory allocated {torch.cuda.max_memory_allocated() / GIB:.2f} GiB"
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.samples < 1:
        raise SystemExit("--samples must be at least 1")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} was asked for but CUDA is not available here; use --device cpu")
    from MAISIEngine.batch.runner import run_batch
    from MAISIEngine.batch.spec import parse_spec

    spacing = args.spacing or [round(FIELD_OF_VIEW_MM / s, 4) for s in args.size]
    for line in machine_lines(args.device):
        print(line)
    model, weights_note = resolve_model(args)
    print(weights_note)
    spec = parse_spec({
        "model": model, "samples": args.samples, "base_seed": args.seed, "steps": args.steps, "device": args.device,
        "masks": [{"phantom": {"region": "chest-abdomen", "size": list(args.size), "spacing": spacing}}],
    })
    from MAISIEngine.presets import load_preset

    steps = args.steps or load_preset(model).num_inference_steps
    print(f"batch: {args.samples} samples of {'x'.join(map(str, args.size))} at {'x'.join(f'{s:g}' for s in spacing)} mm "
          f"from phantom masks, {steps} steps, device {args.device}")

    sample_s: list[float] = []
    sample_cpu_s: list[float] = []
    last_cpu = time.process_time()

    def log(message: str) -> None:
        nonlocal last_cpu
        found = SAMPLE_LINE.search(message)
        if found:
            sample_s.append(float(found.group(3)))
            sample_cpu_s.append(time.process_time() - last_cpu)
            last_cpu = time.process_time()
        if not message.startswith("warning:"):
            print(f"  {message}", flush=True)

    with tempfile.TemporaryDirectory(prefix="maisi-bench-batch-") as tmp:
        start, cpu_start = time.perf_counter(), time.process_time()
        last_cpu = cpu_start
        report = run_batch(spec, Path(tmp) / "out", log=log)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if report is None or len(sample_s) != args.samples:
        print("the batch did not complete every sample")
        return 1
    later = slice(1, None) if len(sample_s) > 1 else slice(0, None)
    per_sample, per_sample_cpu = statistics.mean(sample_s[later]), statistics.mean(sample_cpu_s[later])
    rows = [
        ["end to end (model load, all samples, writing, manifest)", f"{wall:.1f} s", f"{cpu:.1f} s",
         f"{args.samples / wall * 3600:.1f}"],
        ["first sample (warm-up included)", f"{sample_s[0]:.1f} s", "-", "-"],  # its CPU figure would count the load
        ["per sample, model loaded" + (" (samples 2..n)" if len(sample_s) > 1 else ""), f"{per_sample:.1f} s",
         f"{per_sample_cpu:.1f} s", f"{3600 / per_sample:.1f}"],
    ]
    print()
    print_table(["measure", "wall", "CPU (all threads)", "volumes/hour"], rows)
    print(f"per-sample wall times: {', '.join(f'{s:.1f} s' for s in sample_s)}")
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"
    print(f"{device_name}; {peak_memory(args.device)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
