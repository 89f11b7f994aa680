"""Train the shipped demo mask model (mask-demo) on procedural phantoms on a CPU, and package it.

    OMP_NUM_THREADS=1 nice -n 5 python bench/train_mask_demo.py --out /tmp/mask-demo [--install]

Runs the two `maisi train` stages as a user would (mask VAE: 1500 steps of batch 2, 32^3 crops;
mask U-Net: 2000 steps of batch 16; 48 chest-abdomen phantoms at 6 mm; about 50 minutes on one core),
prints the VAE's per-organ Dice on held-out phantoms (`bench/eval_mask_vae.py`), and writes the shipped
files (fp16 safetensors and the size database) to `--out`/package, or with `--install` into
`MAISIEngine/assets/demo/`. Both stages resume (`--resume`) after an interruption.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from MAISIEngine.cli import main as maisi
from MAISIEngine.maskgen.train import package_model_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder the stages train into")
    parser.add_argument("--phantoms", type=int, default=48)
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--diffusion-steps", type=int, default=2000)
    parser.add_argument("--resume", action="store_true", help="continue both stages from their checkpoints")
    parser.add_argument("--install", action="store_true", help="write the package into MAISIEngine/assets/demo")
    args = parser.parse_args()
    common = ["--out", str(args.out), "--phantoms", str(args.phantoms), "--no-progress"]
    resume = ["--resume"] if args.resume else []
    began = time.perf_counter()
    stages = [["train", "mask-vae", "--preset", "mask-demo", "--steps", str(args.vae_steps), "--batch-size", "2",
               "--checkpoint-every", "100", *common, *resume],
              ["train", "mask-diffusion", "--steps", str(args.diffusion_steps), "--batch-size", "16",
               "--checkpoint-every", "200", *common, *resume]]
    for number, stage in enumerate(stages):
        if maisi(stage) != 0:
            sys.exit(f"`maisi {' '.join(stage)}` failed")
        print(f"{stage[1]} done after {time.perf_counter() - began:.0f} s", file=sys.stderr)
        if number == 0:
            evaluate = Path(__file__).with_name("eval_mask_vae.py")
            subprocess.run([sys.executable, str(evaluate), "--model", str(args.out)], check=True)
    target = Path(__file__).resolve().parents[1] / "MAISIEngine" / "assets" / "demo" if args.install \
        else args.out / "package"
    for role, path in package_model_folder(args.out, target).items():
        print(f"{role}: {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
