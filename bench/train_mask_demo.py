"""Train the demo mask-generation model on procedural phantoms (CPU) and write it to a folder.

    nice -n 10 python bench/train_mask_demo.py --out /tmp/mask-demo --phantoms 64 --vae-budget-s 360 --diffusion-budget-s 600

The folder then holds the shipped files (fp16 safetensors, size database), the official-layout .pt files,
`mask_preset.json` (loadable with `maisi masks generate --model FOLDER`) and `training.json` with the
losses and timings. Phantoms whose labels fall outside the preset's class table are skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from MAISIEngine.maskgen.model import load_mask_preset
from MAISIEngine.maskgen.train import (build_dataset, encode_latents, export_official_layout, export_package,
                                       train_mask_diffusion, train_mask_vae)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--phantoms", type=int, default=64)
    parser.add_argument("--vae-steps", type=int, default=2000)
    parser.add_argument("--vae-budget-s", type=float, default=360)
    parser.add_argument("--diffusion-steps", type=int, default=20000)
    parser.add_argument("--diffusion-budget-s", type=float, default=600)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared CPU more threads wait on each other)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = load_mask_preset("mask-demo")
    start = time.perf_counter()
    data = build_dataset(preset, range(args.phantoms))
    data_s = time.perf_counter() - start
    print(f"{len(data.seeds)} phantoms in {data_s:.0f} s")
    vae, vae_losses = train_mask_vae(preset, data, args.vae_steps, budget_s=args.vae_budget_s)
    latents = encode_latents(vae, data)
    unet, scale, diff_losses = train_mask_diffusion(preset, latents, data.conditions, args.diffusion_steps,
                                                    budget_s=args.diffusion_budget_s)
    shipped = export_package(args.out, vae, unet, scale, data.conditions)
    official = export_official_layout(args.out / "official-layout", vae, unet, scale)
    raw = preset.to_dict()
    raw.update(name="mask-demo", weights_source="directory")
    (args.out / "mask_preset.json").write_text(json.dumps(raw, indent=2) + "\n")
    summary = {
        "phantoms": len(data.seeds), "grid": {"size": list(preset.image_shape), "spacing": list(preset.spacing)},
        "vae": {"steps": len(vae_losses), "loss_first": vae_losses[0], "loss_last_20_mean": sum(vae_losses[-20:]) / 20},
        "diffusion": {"steps": len(diff_losses), "loss_first": diff_losses[0],
                      "loss_last_100_mean": sum(diff_losses[-100:]) / min(100, len(diff_losses))},
        "scale_factor": scale, "seconds_total": round(time.perf_counter() - start, 1), "threads": args.threads,
        "files": {k: str(v) for k, v in {**shipped, **official}.items()},
    }
    (args.out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
