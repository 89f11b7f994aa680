"""Measure a mask model the way its model card reports it, through `maisi masks generate` itself.

    nice -n 10 python bench/eval_mask_demo.py --model /tmp/mask-demo --seeds 10 --liver-seeds 5

For 10 seeds of a 128^3 chest-abdomen map at 3 mm: the time of each CLI run, whether the map holds liver,
spleen, both kidneys, pancreas, lungs and vertebrae, and the connected components per organ; then the
mean liver volume asking liver=0.1, 0.5 and 0.9 over 5 seeds each, beside the liver volume at those
percentiles of the training phantoms (`--training-phantoms N`, the first N seeds, as `maisi train
mask-vae --phantoms N` draws them). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

ORGANS = {"liver": (1,), "spleen": (3,), "right kidney": (5,), "left kidney": (14,), "pancreas": (4,),
          "lungs": (28, 29, 30, 31, 32), "vertebrae": tuple(range(33, 57))}
CUBE = np.ones((3, 3, 3), dtype=bool)


def run_cli(model: str, out: Path, seed: int, sizes: list[str], steps: int | None) -> tuple[np.ndarray, float, float]:
    cmd = [sys.executable, "-m", "MAISIEngine.cli", "masks", "generate", "--model", model, "--size", "128", "128",
           "128", "--spacing", "3", "3", "3", "--region", "chest-abdomen", "--seed", str(seed), "--attempts", "1",
           "--device", "cpu", "-o", str(out)]
    if sizes:
        cmd[7:7] = ["--anatomy-size", *sizes]
    if steps:
        cmd += ["--steps", str(steps)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    image = nib.load(out / "labels.nii.gz")
    voxel_ml = float(np.prod(image.header.get_zooms())) / 1000.0
    return np.asarray(image.dataobj), seconds, voxel_ml


def training_liver_ml(model: str, count: int) -> np.ndarray:
    """Liver volume (ml) of the training phantoms on the model's own grid."""
    from MAISIEngine.maskgen.model import load_mask_preset
    from MAISIEngine.maskgen.train import phantom_maps

    preset = load_mask_preset(model)
    voxel_ml = float(np.prod(preset.spacing)) / 1000.0
    return np.array([float((m == 1).sum()) * voxel_ml for m in phantom_maps(preset, range(count))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--liver-seeds", type=int, default=5)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--training-phantoms", type=int, default=48)
    parser.add_argument("--levels", nargs="+", default=["0.1", "0.5", "0.9"])
    args = parser.parse_args()
    report: dict = {"model": args.model, "maps": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            labels, seconds, voxel_ml = run_cli(args.model, Path(tmp) / f"s{seed}", seed, [], args.steps)
            present = {name: bool(np.isin(labels, ids).any()) for name, ids in ORGANS.items()}
            components = {name: int(ndimage.label(np.isin(labels, ids), structure=CUBE)[1])
                          for name, ids in ORGANS.items() if name != "vertebrae"}
            volumes = {name: round(float(np.isin(labels, ids).sum()) * voxel_ml, 1) for name, ids in ORGANS.items()}
            report["maps"].append({"seed": seed, "seconds": round(seconds, 1), "all_present": all(present.values()),
                                   "present": present, "components": components, "volumes_ml": volumes})
        liver: dict[str, list[float]] = {}
        for request in args.levels:
            volumes = []
            for seed in range(args.liver_seeds):
                labels, _, voxel_ml = run_cli(args.model, Path(tmp) / f"l{request}-{seed}", 100 + seed,
                                              [f"liver={request}"], args.steps)
                volumes.append(round(float((labels == 1).sum()) * voxel_ml, 1))
            liver[request] = volumes
    maps = report["maps"]
    report["share_with_every_organ"] = f"{sum(m['all_present'] for m in maps)}/{len(maps)}"
    report["seconds_max"] = max(m["seconds"] for m in maps)
    report["seconds_median"] = float(np.median([m["seconds"] for m in maps]))
    report["components_median"] = {name: float(np.median([m["components"][name] for m in maps]))
                                   for name in maps[0]["components"]}
    report["volumes_ml_median"] = {name: float(np.median([m["volumes_ml"][name] for m in maps])) for name in ORGANS}
    reference = training_liver_ml(args.model, args.training_phantoms)
    report["liver_ml"] = {f"liver={k}": {"volumes": v, "mean": round(float(np.mean(v)), 1),
                                         "training_phantoms_at_percentile": round(float(np.quantile(reference, float(k))), 1)}
                          for k, v in liver.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
