"""Per-organ Dice of the mask VAE's encode-decode on held-out phantoms: can the latent carry the small organs?

    nice -n 10 python bench/eval_mask_vae.py --model /tmp/mask-demo --first-seed 1000 --phantoms 5

Run it before training the U-Net: an organ the VAE cannot reconstruct cannot be generated either.
Prints one JSON document (the mean Dice per organ, and the voxel accuracy).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from MAISIEngine.maskgen.model import build_mask_autoencoder, load_mask_preset, weight_path
from MAISIEngine.maskgen.train import build_dataset
from MAISIEngine.masks import label_bitplanes
from MAISIEngine.networks import extract_checkpoint, load_state_dict_strict, read_checkpoint_file

ORGANS = {"liver": (1,), "spleen": (3,), "right kidney": (5,), "left kidney": (14,), "pancreas": (4,),
          "lungs": (28, 29, 30, 31, 32), "vertebrae": tuple(range(33, 57)), "heart": (115,), "body": (200,)}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder holding mask_preset.json")
    parser.add_argument("--first-seed", type=int, default=1000, help="phantom seeds outside the training ones")
    parser.add_argument("--phantoms", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    preset = load_mask_preset(args.model)
    vae = build_mask_autoencoder(preset)
    path = weight_path(preset, "mask_autoencoder")
    load_state_dict_strict(vae, extract_checkpoint(read_checkpoint_file(path), "mask_autoencoder").state_dict,
                           "mask autoencoder")
    vae.eval()
    data = build_dataset(preset, range(args.first_seed, args.first_seed + args.phantoms))
    classes = np.asarray(preset.classes)
    scores: dict[str, list[float]] = {name: [] for name in ORGANS}
    accuracy = []
    with torch.no_grad():
        for target in data.classes:
            x = torch.from_numpy(target[None, None])
            z_mu, _ = vae.encode(label_bitplanes(x))
            recon = vae.decode(z_mu).argmax(1)[0].numpy()
            accuracy.append(float((recon == target).mean()))
            truth, got = classes[target], classes[recon]
            for name, ids in ORGANS.items():
                scores[name].append(dice(np.isin(truth, ids), np.isin(got, ids)))
    print(json.dumps({"model": args.model, "weights": str(path), "phantoms": args.phantoms,
                      "voxel_accuracy": round(float(np.mean(accuracy)), 4),
                      "dice": {k: round(float(np.mean(v)), 3) for k, v in scores.items()}}, indent=2))


if __name__ == "__main__":
    main()
