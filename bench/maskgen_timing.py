"""Time `generate_mask` (sampling, decode, post-processing, placement) on random weights of a mask preset.

    nice -n 10 python bench/maskgen_timing.py --model mask-demo --size 128 128 128 --spacing 3 3 3 --steps 100

Random weights make random maps, so this measures speed only (the architecture's cost on this machine).
Prints one JSON line: seconds per stage and in total.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from MAISIEngine.maskgen.model import (LoadedMaskModel, build_mask_autoencoder, build_mask_unet, load_mask_preset)
from MAISIEngine.maskgen.pipeline import generate_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mask-demo")
    parser.add_argument("--size", nargs=3, type=int, default=[128, 128, 128])
    parser.add_argument("--spacing", nargs=3, type=float, default=[3.0, 3.0, 3.0])
    parser.add_argument("--steps", type=int)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = load_mask_preset(args.model)
    if preset.autoencoder.get("norm_float16"):  # MONAI's float16 GroupNorm is CUDA-only; TSP decode ignores it
        raw = preset.to_dict()
        raw["autoencoder"]["norm_float16"] = False
        from MAISIEngine.maskgen.model import mask_preset_from_dict

        preset = mask_preset_from_dict(raw)
    torch.manual_seed(0)
    vae, unet = build_mask_autoencoder(preset).eval(), build_mask_unet(preset).eval()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db.json"
        db.write_text(json.dumps([{"organ_size": [0.5] * 5 + [-1] * 5}]))
        model = LoadedMaskModel(preset, vae, unet, 1.0, torch.device("cpu"), {"size_database": db}, {"size_database": ""})
        stages: dict[str, float] = {}
        last = [time.perf_counter()]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.perf_counter()
            stages[stage] = stages.get(stage, 0.0) + now - last[0]
            last[0] = now

        start = time.perf_counter()
        result = generate_mask(model, [("liver", 0.5)], args.size, args.spacing, seed=0, num_steps=args.steps,
                               progress=progress)
        total = time.perf_counter() - start
    print(json.dumps({"model": preset.name, "size": args.size, "spacing": args.spacing,
                      "steps": result.provenance["num_inference_steps"], "threads": args.threads,
                      "sampling_s": round(stages.get("sampling", 0.0), 2), "decoding_s": round(stages.get("decoding", 0.0), 2),
                      "total_s": round(total, 2)}))


if __name__ == "__main__":
    main()
