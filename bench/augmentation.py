"""The paper's augmentation experiment (Fig. 6) in miniature, end to end: does adding MAISI-style synthetic
CTs to a small real training set improve liver-tumor segmentation on held-out real scans?

1. "Real" data: phantom CTs (`MAISIEngine.phantom`, chest-abdomen, whole liver in view) with `--tumors`
   liver tumors each, a training set and a held-out set (seeds far from the demo model's training pool and
   from `bench/demo_quality.py`'s held-out phantoms).
2. Synthetic data: `maisi batch` with the demo model, from the real training masks augmented with one more
   liver tumor each (the batch's tumor augmentation); it writes the MONAI datalist real + synthetic (1:1),
   which the training reads.
3. Every case is cut to a fixed box centred on its liver (the label map says where; `--box` voxels), the
   CT windowed to [-100, 200] HU. A small MONAI 3D U-Net (Dice on the tumor channel + tumor-weighted
   cross-entropy; patches drawn half on tumor, half elsewhere by `RandCropByPosNegLabeld`; random flips)
   is trained the same number of steps on the real cases alone and on the datalist's real + synthetic
   cases, for 3 seeds each; the 6 runs share `--workers` processes of one thread each.
4. Liver-tumor Dice (label 26) on the liver box of each held-out real phantom: mean over cases per seed,
   then mean and standard deviation over seeds, and the difference paired by seed; the synthetic set's HU
   quality check (`maisi evaluate quality`) beside it.

    nice -n 10 python bench/augmentation.py                         # default size, 2-core CPU (~15 min)
    python bench/augmentation.py --device cuda --workers 1 --threads 4 --real 24 --test 16 --size 128 128 128 \
        --spacing 3 3 3 --box 96 64 64 --patch 48 --batch-size 8 --steps 4000       # GPU: larger and finer
    python bench/augmentation.py --real 2 --test 1 --steps 5 --seeds 0     # smoke run (~40 s)

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
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LIVER, LIVER_TUMOR = 1, 26
REAL_SEED = 700_000
TEST_SEED = 800_000
"""Phantom seeds: training real cases from REAL_SEED, held-out ones from TEST_SEED (demo training used 0-95,
demo_quality's held-out phantoms start at 900,000)."""
HU_WINDOW = (-100.0, 200.0)
"""Soft-tissue window of the segmentation network's input (liver ~62 HU, hepatic tumor ~28 HU)."""
CONDITIONS = {"real": False, "real + synthetic": True}
"""Training sets: the datalist's real entries only, or all of them."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--real", type=int, default=6, help="real training phantoms (default 6)")
    parser.add_argument("--synthetic", type=int, help="synthetic CTs (default: as many as real, ratio 1:1)")
    parser.add_argument("--test", type=int, default=10, help="held-out real phantoms (default 10)")
    parser.add_argument("--tumors", type=int, default=3, help="liver tumors per phantom (default 3)")
    parser.add_argument("--size", type=int, nargs=3, default=(96, 96, 96), help="phantom and CT grid (voxels)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(4.0, 4.0, 4.0), help="mm (default 4 4 4)")
    parser.add_argument("--box", type=int, nargs=3, default=(64, 48, 48),
                        help="liver-centred box the network sees, voxels; multiples of 8 (default 64 48 48)")
    parser.add_argument("--steps", type=int, default=1200, help="training steps per run (default 1200)")
    parser.add_argument("--patch", type=int, default=32, help="training patch edge in voxels (default 32)")
    parser.add_argument("--batch-size", type=int, default=4, help="patches per step, 2 per case (default 4)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, cosine decay (default 2e-3)")
    parser.add_argument("--tumor-weight", type=float, default=5.0,
                        help="cross-entropy weight of tumor voxels (default 5)")
    parser.add_argument("--seeds", type=int, nargs="+", default=(0, 1, 2))
    parser.add_argument("--model", default="demo", help="generator model for `maisi batch` (default demo)")
    parser.add_argument("--gen-steps", type=int, help="denoising steps (default: the model's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (training and generation)")
    parser.add_argument("--workers", type=int, default=2, help="training processes run at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per training process (default 1)")
    parser.add_argument("--out", type=Path, help="working folder (default: a temporary one, deleted); "
                                                  "a rerun into the same folder reuses the finished batch")
    args = parser.parse_args(argv)
    if any(b % 8 for b in args.box) or args.patch % 8 or args.patch > min(args.box):
        parser.error("--box needs multiples of 8 and --patch a multiple of 8 no larger than the box")
    if args.batch_size % 2:
        parser.error("--batch-size must be even (2 patches per case)")
    args.synthetic = args.synthetic or args.real
    return args


# ---- pure pieces (tested in Testing/test_augmentation_bench.py) -----------------------------------------

def box_center(labels: np.ndarray, classes: tuple[int, ...] = (LIVER, LIVER_TUMOR)) -> tuple[int, ...]:
    """Centre (voxel index, rounded down) of the bounding box of `classes`; the volume centre if absent."""
    where = np.argwhere(np.isin(labels, classes))
    if len(where) == 0:
        return tuple(int(n) // 2 for n in labels.shape)
    return tuple(int(v) for v in (where.min(0) + where.max(0)) // 2)


def crop_centred(array: np.ndarray, center: tuple[int, ...], size: tuple[int, ...], fill: float) -> np.ndarray:
    """The `size` box of `array` whose voxel `size // 2` is `center`; outside the array it holds `fill`."""
    out = np.full(size, fill, dtype=array.dtype)
    source, target = [], []
    for c, n, s in zip(center, array.shape, size):
        start = int(c) - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        if hi <= lo:
            return out
        source.append(slice(lo, hi))
        target.append(slice(lo - start, hi - start))
    out[tuple(target)] = array[tuple(source)]
    return out


def window(ct_hu: np.ndarray, low: float = HU_WINDOW[0], high: float = HU_WINDOW[1]) -> np.ndarray:
    """HU clipped to [low, high] and scaled to [0, 1] (float32)."""
    return ((np.clip(ct_hu.astype(np.float32), low, high) - low) / (high - low)).astype(np.float32)


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty (nothing to find, nothing found)."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    total = int(predicted.sum()) + int(truth.sum())
    return 2.0 * int((predicted & truth).sum()) / total if total else 1.0


def summary(per_seed: list[float]) -> dict[str, float]:
    values = np.asarray(per_seed, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max())}


# ---- data ---------------------------------------------------------------------------------------------

def write_real_set(folder: Path, count: int, first_seed: int, args: argparse.Namespace) -> list[dict[str, str]]:
    """Phantom CTs with `args.tumors` liver tumors each: images/, masks/ and their datalist entries."""
    from MAISIEngine.io.nifti import write_volume
    from MAISIEngine.phantom import make_phantom

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(count):
        seed = first_seed + i
        phantom = make_phantom(size=tuple(args.size), spacing=tuple(args.spacing), region="chest-abdomen", seed=seed,
                               tumors=("liver",) * args.tumors)
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
            "tumors": {"types": ["liver"], "probability": 1.0, "size_mm": [20, 40]},
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


def load_cases(entries: list[dict[str, str]], box: tuple[int, int, int]) -> list[dict[str, np.ndarray]]:
    """Each case's liver box: windowed CT (1, X, Y, Z) float32 and tumor mask (1, X, Y, Z) float32, in RAS."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    load = Compose([LoadImaged(keys=["image", "label"], image_only=True), EnsureChannelFirstd(keys=["image", "label"]),
                    Orientationd(keys=["image", "label"], axcodes="RAS")])
    cases = []
    for entry in entries:
        item = load(dict(entry))
        ct, labels = np.asarray(item["image"])[0], np.rint(np.asarray(item["label"])[0]).astype(np.int16)
        center = box_center(labels)
        image = window(crop_centred(ct.astype(np.float32), center, box, fill=-1024.0))
        tumor = (crop_centred(labels, center, box, fill=0) == LIVER_TUMOR).astype(np.float32)
        cases.append({"image": image[None], "label": tumor[None]})
    return cases


# ---- training and evaluation -------------------------------------------------------------------------

def build_network() -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                num_res_units=1)


def train(cases: list[dict[str, np.ndarray]], seed: int, args: argparse.Namespace) -> torch.nn.Module:
    """`args.steps` steps of Dice (tumor channel) + tumor-weighted CE on patches, half of them centred on
    tumor; random flips; AdamW with cosine decay."""
    from monai.losses import DiceLoss
    from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd
    from monai.utils import set_determinism

    set_determinism(seed)
    device = torch.device(args.device)
    network = build_network().to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=max(1, args.steps),
                                                   pct_start=0.05, anneal_strategy="cos")
    # Tumor voxels are ~0.6 % of a liver box: Dice on the tumor channel alone, and tumor voxels weighted in the CE.
    dice_loss = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    class_weight = torch.tensor([1.0, args.tumor_weight], device=device)
    patch = (args.patch,) * 3
    augment = Compose([RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=patch, pos=1,
                                              neg=1, num_samples=2),
                       RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
                       RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
                       RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=2)])
    augment.set_random_state(seed)
    rng = np.random.default_rng(seed)
    network.train()
    per_step = args.batch_size // 2
    for _ in range(args.steps):
        picks = rng.choice(len(cases), size=per_step, replace=len(cases) < per_step)
        crops = [crop for i in picks for crop in augment(dict(cases[i]))]
        images = torch.stack([torch.as_tensor(c["image"]) for c in crops]).to(device)
        labels = torch.stack([torch.as_tensor(c["label"]) for c in crops]).to(device)
        logits = network(images)
        loss = dice_loss(logits, labels) + torch.nn.functional.cross_entropy(logits, labels[:, 0].long(),
                                                                            weight=class_weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    return network.eval()


@torch.no_grad()
def tumor_dice(network: torch.nn.Module, cases: list[dict[str, np.ndarray]], device: str) -> list[float]:
    """Dice of the predicted tumor against the truth over each held-out case's whole liver box."""
    scores = []
    for case in cases:
        logits = network(torch.as_tensor(case["image"])[None].to(device))
        scores.append(dice(logits.argmax(1)[0].cpu().numpy(), case["label"][0] > 0.5))
    return scores


def run_one(name: str, seed: int, training: list[dict[str, np.ndarray]], test: list[dict[str, np.ndarray]],
            args: argparse.Namespace) -> dict[str, Any]:
    """One training run and its held-out evaluation (in a worker process with `args.threads` threads)."""
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    network = train(training, seed, args)
    scores = tumor_dice(network, test, args.device)
    return {"name": name, "seed": seed, "scores": scores, "seconds": time.perf_counter() - started}


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (`maisi batch`, workers): what contention does not inflate."""
    import resource

    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


# ---- report ------------------------------------------------------------------------------------------

def markdown(result: dict[str, Any]) -> str:
    cases = result["args"]["test"]
    rows = [f"| training set | cases | Dice per seed (mean over {cases} held-out cases) | mean ± sd over seeds |",
            "|---|---|---|---|"]
    for name, run in result["runs"].items():
        per_seed = ", ".join(f"{v:.3f}" for v in run["dice_per_seed"])
        rows.append(f"| {name} | {run['cases']} | {per_seed} | {run['summary']['mean']:.3f} ± {run['summary']['std']:.3f} |")
    gain = result["runs"]["real + synthetic"]["summary"]["mean"] - result["runs"]["real"]["summary"]["mean"]
    rows.append("")
    rows.append(f"Difference (real + synthetic - real): {gain:+.3f} Dice; paired by seed: "
                + ", ".join(f"{d:+.3f}" for d in result["paired_difference"]) + ".")
    return "\n".join(rows)


def run_all(loaded: dict[str, list], test_cases: list, args: argparse.Namespace) -> dict[str, Any]:
    """The 2 x len(seeds) runs, `args.workers` at a time; per condition its Dice per seed and per case."""
    runs: dict[str, Any] = {name: {"cases": len(loaded[name]), "dice_per_seed": [], "dice_per_case": [],
                                   "train_eval_s": []} for name in CONDITIONS}
    jobs = [(name, seed) for seed in args.seeds for name in CONDITIONS]  # paired by seed, in that order

    def report(done: dict[str, Any]) -> dict[str, Any]:
        print(f"{done['name']}, seed {done['seed']}: Dice {np.mean(done['scores']):.3f} "
              f"(cases {', '.join(f'{s:.2f}' for s in done['scores'])}), {done['seconds']:.0f} s", flush=True)
        return done

    if args.workers > 1:
        import multiprocessing

        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_one, name, seed, loaded[name], test_cases, args) for name, seed in jobs]
            for future in as_completed(futures):  # printed as they finish, recorded in job order
                report(future.result())
            results = [f.result() for f in futures]
    else:
        results = [report(run_one(name, seed, loaded[name], test_cases, args)) for name, seed in jobs]
    for done in results:
        run = runs[done["name"]]
        run["dice_per_seed"].append(float(np.mean(done["scores"])))
        run["dice_per_case"].append([round(s, 4) for s in done["scores"]])
        run["train_eval_s"].append(round(done["seconds"], 1))
    for run in runs.values():
        run["summary"] = summary(run["dice_per_seed"])
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads * args.workers))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="maisi-augmentation-") as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}

        t = time.perf_counter()
        real_entries = write_real_set(out / "real", args.real, REAL_SEED, args)
        test_entries = write_real_set(out / "test", args.test, TEST_SEED, args)
        real_datalist = out / "real_datalist.json"
        real_datalist.write_text(json.dumps({"training": real_entries}, indent=2))
        timings["phantoms_s"] = time.perf_counter() - t
        print(f"{args.real} real + {args.test} held-out phantoms {list(args.size)} at {list(args.spacing)} mm, "
              f"{args.tumors} liver tumors each: {timings['phantoms_s']:.0f} s", flush=True)

        datalist, timings["maisi_batch_s"] = generate_synthetic(out, out / "real" / "masks", real_datalist, args)
        print(f"maisi batch: {args.synthetic} synthetic CTs in {timings['maisi_batch_s']:.0f} s -> {datalist}", flush=True)

        from MAISIEngine.evaluate.batch_quality import evaluate_quality
        from MAISIEngine.evaluate.sources import read_set

        quality = evaluate_quality(read_set(datalist.parent, "batch"), log=lambda _: None)
        print(f"synthetic set quality check: {quality['passed']}/{quality['images']} pass; per organ group "
              + ", ".join(f"{k} {v['passed']}/{v['checked']}" for k, v in quality["organ_groups"].items()), flush=True)

        box = tuple(args.box)
        test_cases = load_cases(test_entries, box)
        loaded = {name: load_cases(read_training(datalist, flag), box) for name, flag in CONDITIONS.items()}
        tumor_share = {name: float(np.mean([c["label"].mean() for c in cases])) for name, cases in loaded.items()}
        print("tumor share of the liver box: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in tumor_share.items())
              + f", held-out {100 * np.mean([c['label'].mean() for c in test_cases]):.1f} %", flush=True)

        t = time.perf_counter()
        runs = run_all(loaded, test_cases, args)
        timings["training_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - started
        timings["cpu_s"] = cpu_seconds()
        result = {"args": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()},
                  "runs": runs, "quality_synthetic": {k: quality[k] for k in ("images", "passed", "organ_groups")},
                  "tumor_share": tumor_share,
                  "paired_difference": [b - a for a, b in zip(runs["real"]["dice_per_seed"],
                                                             runs["real + synthetic"]["dice_per_seed"])],
                  "timings_s": {k: round(v, 1) for k, v in timings.items()}}
        (out / "augmentation.json").write_text(json.dumps(result, indent=2))
        print()
        print(markdown(result))
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"\nload average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min); "
              f"CPU time {timings['cpu_s'] / 60:.1f} min")
        print(f"total {timings['total_s'] / 60:.1f} min ({', '.join(f'{k} {v:.0f}' for k, v in timings.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
