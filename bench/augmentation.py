"""The paper's augmentation experiment (Fig. 6) in miniature, end to end: does adding MAISI-style synthetic
CTs to a small real training set improve liver-tumor segmentation on held-out real scans?

1. "Real" data: phantom CTs with a liver tumor (`MAISIEngine.phantom`), a training set and a held-out set
   (seeds far from the demo model's training pool and from `bench/demo_quality.py`'s held-out phantoms).
2. Synthetic data: `maisi batch` with the demo model, from the real training masks augmented with one more
   liver tumor each (the batch's tumor augmentation); it writes the MONAI datalist real + synthetic (1:1).
3. A small MONAI 3D U-Net (Dice + tumor-weighted cross-entropy, tumor-centred random crops) trained the same number of steps on the
   real cases alone and on the batch's datalist (real + synthetic), for 3 seeds each.
4. Liver-tumor Dice (label 26) on the held-out real phantoms: mean over cases per seed, then mean and
   standard deviation over seeds; the synthetic set's HU quality check (`maisi evaluate quality`) beside it.

    nice -n 10 python bench/augmentation.py                         # default size, 2-core CPU
    python bench/augmentation.py --device cuda --real 32 --test 16 --size 128 128 128 --spacing 3 3 3 --steps 2000 --patch 64 --batch-size 4
    python bench/augmentation.py --real 2 --test 1 --steps 5 --size 64 64 64 --spacing 6 6 6   # smoke run

Prints a Markdown table (what docs/evaluation.md shows) and writes everything to OUT/augmentation.json.
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
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LIVER_TUMOR = 26
REAL_SEED = 700_000
TEST_SEED = 800_000
"""Phantom seeds: training real cases from REAL_SEED, held-out ones from TEST_SEED (demo training used 0-95,
demo_quality's held-out phantoms start at 900,000)."""
HU_WINDOW = (-100.0, 200.0)
TUMOR_CE_WEIGHT = 20.0
"""Soft-tissue window of the segmentation network's input (liver ~60 HU, hepatic tumor ~30 HU)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--real", type=int, default=4, help="real training phantoms (default 4)")
    parser.add_argument("--synthetic", type=int, help="synthetic CTs (default: as many as real, ratio 1:1)")
    parser.add_argument("--test", type=int, default=4, help="held-out real phantoms (default 4)")
    parser.add_argument("--size", type=int, nargs=3, default=(96, 96, 96))
    parser.add_argument("--spacing", type=float, nargs=3, default=(4.0, 4.0, 4.0))
    parser.add_argument("--steps", type=int, default=160, help="training steps per run (default 160)")
    parser.add_argument("--patch", type=int, default=32, help="training crop edge in voxels (default 32)")
    parser.add_argument("--batch-size", type=int, default=1, help="volumes per step; 2 crops each (default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=(0, 1, 2))
    parser.add_argument("--model", default="demo", help="generator model for `maisi batch` (default demo)")
    parser.add_argument("--gen-steps", type=int, help="denoising steps (default: the model's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (training and generation)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="working folder (default: a temporary one, deleted)")
    return parser.parse_args(argv)


# ---- data ---------------------------------------------------------------------------------------------

def write_real_set(folder: Path, count: int, first_seed: int, size, spacing) -> list[dict[str, str]]:
    """Phantom CTs with one liver tumor each: images/, masks/ and their datalist entries."""
    from MAISIEngine.io.nifti import write_volume
    from MAISIEngine.phantom import make_phantom

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(count):
        seed = first_seed + i
        phantom = make_phantom(size=tuple(size), spacing=tuple(spacing), region="abdomen", seed=seed, tumors=("liver",))
        image = write_volume(folder / "images" / f"case_{seed}.nii.gz", phantom.ct, phantom.affine, "phantom CT", np.int16)
        label = write_volume(folder / "masks" / f"case_{seed}.nii.gz", phantom.labels, phantom.affine, "phantom labels",
                             np.uint8)
        entries.append({"image": str(image), "label": str(label)})
    return entries


def generate_synthetic(out: Path, masks: Path, real_datalist: Path, args: argparse.Namespace) -> tuple[Path, float]:
    """`maisi batch` from the real masks with one more liver tumor each; returns its datalist and seconds."""
    import yaml

    spec = {"model": args.model, "samples": args.synthetic, "base_seed": 24_000, "device": args.device,
            "precision": "fp32" if args.device == "cpu" else "bf16",
            "masks": [{"folder": str(masks)}],
            "tumors": {"types": ["liver"], "probability": 1.0, "size_mm": [15, 35]},
            "datalist": {"folds": 5, "real": str(real_datalist), "ratio": f"1:{args.synthetic / args.real:g}"}}
    if args.gen_steps:
        spec["steps"] = args.gen_steps
    spec_path = out / "batch.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    batch_dir = out / "batch"
    started = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "MAISISynth"), os.environ.get("PYTHONPATH", "")]))
    with open(out / "batch.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "MAISIEngine.cli", "batch", str(spec_path), "-o", str(batch_dir)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise SystemExit(f"maisi batch failed ({done.returncode}); see {out / 'batch.log'}")
    return batch_dir / "datalist.json", time.perf_counter() - started


def read_training(datalist: Path, synthetic: bool) -> list[dict[str, str]]:
    """Entries of the batch datalist: real ones only, or all (paths made absolute)."""
    entries = json.loads(datalist.read_text())["training"]
    chosen = [e for e in entries if synthetic or not e.get("synthetic")]
    return [{key: str((datalist.parent / e[key]).resolve()) for key in ("image", "label")} for e in chosen]


# ---- training and evaluation -------------------------------------------------------------------------

def load_cases(entries: list[dict[str, str]]) -> list[dict[str, torch.Tensor]]:
    """Images windowed to [0, 1] and binary tumor labels, (1, X, Y, Z) each, loaded once."""
    from monai.transforms import (Compose, EnsureChannelFirstd, LoadImaged, Orientationd, ScaleIntensityRanged)

    load = Compose([LoadImaged(keys=["image", "label"], image_only=True), EnsureChannelFirstd(keys=["image", "label"]),
                    Orientationd(keys=["image", "label"], axcodes="RAS"),
                    ScaleIntensityRanged(keys="image", a_min=HU_WINDOW[0], a_max=HU_WINDOW[1], b_min=0.0, b_max=1.0,
                                         clip=True)])
    cases = []
    for entry in entries:
        item = load(dict(entry))
        cases.append({"image": torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32),
                      "label": torch.as_tensor(np.asarray(item["label"]) == LIVER_TUMOR, dtype=torch.float32)})
    return cases


def build_network() -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)


def train(cases: list[dict[str, torch.Tensor]], seed: int, args: argparse.Namespace) -> torch.nn.Module:
    """`args.steps` steps of Dice + weighted CE on random crops (3 of 4 centred on tumor), random flips, cosine learning rate."""
    from monai.losses import DiceLoss
    from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd
    from monai.utils import set_determinism

    set_determinism(seed)
    device = torch.device(args.device)
    network = build_network().to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, args.steps))
    # The tumors fill ~0.3 % of a crop: with plain DiceCE a short run settles on "all background" (Dice 0 on
    # every held-out case, measured). Dice on the tumor channel only, and cross-entropy weighting tumor voxels.
    dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False)
    class_weight = torch.tensor([1.0, TUMOR_CE_WEIGHT], device=device)

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice(logits, target) + torch.nn.functional.cross_entropy(logits, target[:, 0].long(), weight=class_weight)
    patch = (args.patch,) * 3
    augment = Compose([RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=patch, pos=3,
                                              neg=1, num_samples=2),
                       RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0)])
    augment.set_random_state(seed)
    rng = np.random.default_rng(seed)
    network.train()
    for _ in range(args.steps):
        picks = rng.choice(len(cases), size=args.batch_size, replace=len(cases) < args.batch_size)
        crops = [crop for i in picks for crop in augment(dict(cases[i]))]
        images = torch.stack([torch.as_tensor(c["image"]) for c in crops]).to(device)
        labels = torch.stack([torch.as_tensor(c["label"]) for c in crops]).to(device)
        loss = loss_fn(network(images), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    return network.eval()


@torch.no_grad()
def tumor_dice(network: torch.nn.Module, cases: list[dict[str, torch.Tensor]], args: argparse.Namespace) -> list[float]:
    """Dice of the predicted tumor against the truth on each held-out case (0 when one of them is empty)."""
    from monai.inferers import sliding_window_inference

    scores = []
    for case in cases:
        logits = sliding_window_inference(case["image"][None].to(args.device), (args.patch,) * 3, 4, network, overlap=0.25)
        predicted = logits.argmax(1)[0].cpu().bool()
        truth = case["label"][0].bool()
        both = int((predicted & truth).sum())
        total = int(predicted.sum() + truth.sum())
        scores.append(2.0 * both / total if total else 1.0)
    return scores


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (`maisi batch`): the figure contention does not inflate."""
    import resource

    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


# ---- report ------------------------------------------------------------------------------------------

def summary(per_seed: list[float]) -> dict[str, float]:
    values = np.asarray(per_seed, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max())}


def markdown(result: dict[str, Any]) -> str:
    rows = ["| training set | cases | Dice per seed (mean over held-out cases) | mean ± sd over seeds |",
            "|---|---|---|---|"]
    for name, run in result["runs"].items():
        per_seed = ", ".join(f"{v:.3f}" for v in run["dice_per_seed"])
        rows.append(f"| {name} | {run['cases']} | {per_seed} | {run['summary']['mean']:.3f} ± {run['summary']['std']:.3f} |")
    gain = result["runs"]["real + synthetic"]["summary"]["mean"] - result["runs"]["real"]["summary"]["mean"]
    rows.append("")
    rows.append(f"Difference (real + synthetic - real): {gain:+.3f} Dice; paired by seed: "
                + ", ".join(f"{d:+.3f}" for d in result["paired_difference"]) + ".")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.synthetic = args.synthetic or args.real
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="maisi-augmentation-") as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}

        t = time.perf_counter()
        real_entries = write_real_set(out / "real", args.real, REAL_SEED, args.size, args.spacing)
        test_entries = write_real_set(out / "test", args.test, TEST_SEED, args.size, args.spacing)
        real_datalist = out / "real_datalist.json"
        real_datalist.write_text(json.dumps({"training": real_entries}, indent=2))
        timings["phantoms_s"] = time.perf_counter() - t
        print(f"{args.real} real + {args.test} held-out phantoms {list(args.size)} at {list(args.spacing)} mm: "
              f"{timings['phantoms_s']:.0f} s", flush=True)

        datalist, timings["maisi_batch_s"] = generate_synthetic(out, out / "real" / "masks", real_datalist, args)
        print(f"maisi batch: {args.synthetic} synthetic CTs in {timings['maisi_batch_s']:.0f} s -> {datalist}", flush=True)

        from MAISIEngine.evaluate.batch_quality import evaluate_quality
        from MAISIEngine.evaluate.sources import read_set

        quality = evaluate_quality(read_set(datalist.parent, "batch"), log=lambda _: None)
        print(f"synthetic set quality check: {quality['passed']}/{quality['images']} pass; per organ group "
              + ", ".join(f"{k} {v['passed']}/{v['checked']}" for k, v in quality["organ_groups"].items()), flush=True)

        test_cases = load_cases(test_entries)
        conditions = {"real": False, "real + synthetic": True}
        training = {name: read_training(datalist, flag) for name, flag in conditions.items()}
        loaded = {name: load_cases(entries) for name, entries in training.items()}
        runs: dict[str, Any] = {name: {"cases": len(training[name]), "dice_per_seed": [], "dice_per_case": [],
                                       "train_eval_s": []} for name in conditions}
        for seed in args.seeds:  # both conditions per seed, so a cut-short run still gives paired figures
            for name in conditions:
                t = time.perf_counter()
                network = train(loaded[name], seed, args)
                scores = tumor_dice(network, test_cases, args)
                run = runs[name]
                run["train_eval_s"].append(round(time.perf_counter() - t, 1))
                run["dice_per_seed"].append(float(np.mean(scores)))
                run["dice_per_case"].append(scores)
                print(f"{name}, seed {seed}: Dice {run['dice_per_seed'][-1]:.3f} "
                      f"(cases {', '.join(f'{s:.2f}' for s in scores)}), {run['train_eval_s'][-1]:.0f} s", flush=True)
        for run in runs.values():
            run["summary"] = summary(run["dice_per_seed"])
        timings["total_s"] = time.perf_counter() - started
        timings["cpu_s"] = cpu_seconds()
        result = {"args": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()},
                  "runs": runs, "quality_synthetic": {k: quality[k] for k in ("images", "passed", "organ_groups")},
                  "paired_difference": [b - a for a, b in zip(runs["real"]["dice_per_seed"],
                                                             runs["real + synthetic"]["dice_per_seed"])],
                  "timings_s": {k: round(v, 1) for k, v in timings.items()}}
        (out / "augmentation.json").write_text(json.dumps(result, indent=2))
        print()
        print(markdown(result))
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\nload average at the end {load:.1f}; CPU time {timings['cpu_s'] / 60:.1f} min")
        print(f"total {timings['total_s'] / 60:.1f} min ({', '.join(f'{k} {v:.0f}' for k, v in timings.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
