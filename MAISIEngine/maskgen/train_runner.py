"""`maisi train mask-vae|mask-diffusion`: the mask generator's two stages, with the other stages' machinery.

Both stages train on procedural phantoms (`--phantoms N`) into one model folder (`--out`): `mask_preset.json`,
the size database of the training maps, and the weights in NVIDIA's layout (a bare VAE state dict;
`unet_state_dict` + `scale_factor`), so the folder loads with `maisi masks generate --model FOLDER`.
`--resume` continues from the last checkpoint (same settings required), `--time-budget` stops early and
still exports, and under `torchrun` the processes average gradients (DDP; gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from MAISIEngine.errors import MaisiError
from MAISIEngine.maskgen.model import (MaskPreset, build_mask_autoencoder, build_mask_scheduler, build_mask_unet,
                                       load_mask_preset, mask_preset_from_dict)
from MAISIEngine.maskgen.train import (MASK_KL_WEIGHT, MaskDataset, _cosine_lr, build_dataset, diffusion_objective,
                                       encode_latents, vae_objective)
from MAISIEngine.masks import label_bitplanes

MASK_STAGES = ("mask-vae", "mask-diffusion")
FILES = {"mask_autoencoder": "mask_generation_autoencoder.pt",
         "mask_diffusion_unet": "mask_generation_diffusion_unet.pt",
         "size_database": "mask_anatomy_sizes.json"}
DEFAULT_LR = {"mask-vae": 3e-3, "mask-diffusion": 1e-3}
DEFAULT_BATCH = {"mask-vae": 2, "mask-diffusion": 16}
VAE_CROP = 32


def folder_preset(out: Path, base: str | None) -> MaskPreset:
    """The model folder's preset, or a new one from `base` (default mask-demo) pointing at the folder's files."""
    path = out / "mask_preset.json"
    if path.is_file():
        return load_mask_preset(path)
    raw = load_mask_preset(base or "mask-demo").to_dict()
    raw.update(weights_source="directory", weights=dict(FILES))
    return mask_preset_from_dict(raw, path)


def _vae_batch(data: MaskDataset, rng: np.random.Generator, batch: int) -> torch.Tensor:
    idx = rng.choice(len(data.classes), size=min(batch, len(data.classes)), replace=False)
    crop = min(VAE_CROP, *data.classes.shape[1:])
    corner = [int(rng.integers(0, n - crop + 1)) for n in data.classes.shape[1:]]
    window = tuple(slice(c, c + crop) for c in corner)
    return torch.from_numpy(np.ascontiguousarray(data.classes[(idx, *window)]))


def run_mask_stage(args: argparse.Namespace) -> int:
    from MAISIEngine.io.atomic import atomic_path, write_text_atomic
    from MAISIEngine.train.checkpoints import (apply_training_state, check_signature, load_training_state,
                                               save_training_state, state_path)
    from MAISIEngine.train.distributed import any_across, init_distributed, shutdown, unwrap, wrap_ddp

    if not args.phantoms:
        raise MaisiError(f"{args.stage} trains on procedural phantoms", "give --phantoms N (e.g. 40)")
    stage, out = args.stage, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = init_distributed(args.device)
    device = ctx.device
    say = (lambda m: print(m, file=sys.stderr)) if ctx.is_main else (lambda m: None)
    try:
        preset = folder_preset(out, args.preset)
        data = build_dataset(preset, range(args.seed, args.seed + args.phantoms))
        batch = args.batch_size if args.batch_size and args.batch_size > 1 else DEFAULT_BATCH[stage]
        lr = args.lr or DEFAULT_LR[stage]
        kl_weight = MASK_KL_WEIGHT if getattr(args, "kl_weight", None) is None else float(args.kl_weight)
        scheduler = build_mask_scheduler(preset)
        extra: dict[str, Any] = {}
        if stage == "mask-vae":
            network = build_mask_autoencoder(preset)
        else:
            vae_path = out / preset.weights["mask_autoencoder"]
            if not vae_path.is_file():
                raise MaisiError(f"{vae_path} does not exist", "train the mask VAE first: `maisi train mask-vae --out "
                                 f"{out} --phantoms {args.phantoms}`")
            vae = build_mask_autoencoder(preset)
            from MAISIEngine.networks import extract_checkpoint, load_state_dict_strict, read_checkpoint_file

            load_state_dict_strict(vae, extract_checkpoint(read_checkpoint_file(vae_path), "mask_autoencoder").state_dict,
                                   "mask autoencoder")
            latents = encode_latents(vae.eval(), data)
            scale = float(1.0 / latents.flatten().std())
            scaled = (latents * scale).to(device)
            conditions = torch.from_numpy(data.conditions).float().unsqueeze(1).to(device)
            extra["scale_factor"] = scale
            network = build_mask_unet(preset)
        network = network.to(device).train()
        model = wrap_ddp(network, ctx)
        optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.0)
        signature = {"stage": stage, "phantoms": args.phantoms, "seed": args.seed, "batch": batch, "lr": lr,
                     "steps": args.steps, "world": ctx.world_size, "preset": preset.name}
        if stage == "mask-vae":
            signature["kl_weight"] = kl_weight
        checkpoint = state_path(out, stage)
        start_step, losses = 0, []
        if args.resume:
            payload = load_training_state(checkpoint)
            check_signature(payload["signature"], signature)
            start_step = apply_training_state(payload, {stage: network}, {stage: optimizer}, device)
            losses = list(payload["extra"].get("losses", []))
            say(f"{stage}: resuming after step {start_step}")
        began = time.perf_counter()
        step = start_step
        for step in range(start_step, args.steps):
            rng = np.random.default_rng([args.seed, ctx.rank, step])
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(step, args.steps, lr)
            if stage == "mask-vae":
                target = _vae_batch(data, rng, batch).to(device)
                recon, mu, sigma = model(label_bitplanes(target.unsqueeze(1)))
                loss = vae_objective(recon, mu, sigma, target, kl_weight)
            else:
                idx = torch.from_numpy(rng.choice(len(scaled), size=min(batch, len(scaled)), replace=False))
                x0 = scaled[idx]
                noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32)).to(device)
                t = torch.from_numpy(rng.integers(0, scheduler.num_train_timesteps, x0.shape[0])).to(device)
                loss = diffusion_objective(scheduler, lambda x: model(x, timesteps=t, context=conditions[idx]), x0,
                                           noise, t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            done = step + 1
            if done % max(args.checkpoint_every, 1) == 0 and ctx.is_main:
                save_training_state(checkpoint, step=done, models={stage: network}, optimizers={stage: optimizer},
                                    signature=signature, extra={"losses": losses}, device=device)
            if done % 10 == 0 or done == args.steps:
                say(f"{stage} step {done}/{args.steps} loss {loss.item():.4f}")
            over = args.time_budget is not None and time.perf_counter() - began > args.time_budget
            if any_across(over, ctx):
                say(f"{stage}: time budget reached after {done} steps")
                break
        network = unwrap(model).eval()
        if ctx.is_main:
            rows = [{"organ_size": [round(float(v), 4) for v in row]} for row in data.conditions]
            write_text_atomic(out / preset.weights["size_database"], json.dumps(rows) + "\n")
            write_text_atomic(out / "mask_preset.json", json.dumps(preset.to_dict() | {"weights_source": "directory",
                                                                                       "weights": dict(FILES)}, indent=2) + "\n")
            state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
            if stage == "mask-vae":
                payload: Any = state
                target_file = out / preset.weights["mask_autoencoder"]
            else:
                payload = {"unet_state_dict": state, "scale_factor": torch.tensor(extra["scale_factor"])}
                target_file = out / preset.weights["mask_diffusion_unet"]
            with atomic_path(target_file) as tmp:
                torch.save(payload, tmp)
            summary = {"stage": stage, "steps": len(losses), "loss_first": losses[0] if losses else None,
                       "loss_last": losses[-1] if losses else None, "weights": str(target_file)}
            print(json.dumps(summary))
    finally:
        shutdown(ctx)
    return 0
