"""Launched by test_train.py under `torchrun`: one training step of each stage, gradients saved by rank 0.

Usage: torchrun --nproc_per_node 2 train_ddp_gradients.py MODEL_DIR OUTPUT.pt
The global batch is 2 samples whatever the number of processes (2 // N each); the test computes the
single-process reference in its own process with `stage_gradients`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_fixtures import block_source  # noqa: E402

from MAISIEngine.train.config import TrainConfig  # noqa: E402
from MAISIEngine.train.data import rank_slots  # noqa: E402
from MAISIEngine.train.distributed import DistContext, barrier, init_distributed, shutdown  # noqa: E402
from MAISIEngine.train.runner import build_stage  # noqa: E402


def stage_gradients(model_dir: Path, work: Path, ctx: DistContext) -> dict[str, dict[str, object]]:
    """One step of each stage on a global batch of 2; the gradients every process ends up with."""
    if ctx.is_main:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(model_dir, work)
    barrier(ctx)
    per_process = 2 // ctx.world_size
    results = {}
    for stage_name in ("vae", "diffusion", "controlnet"):
        config = TrainConfig(stage=stage_name, out_dir=work, steps=1, batch_size=per_process, lr=0.0, seed=11,
                             device="cpu", progress=False, size=(32, 32, 32), adv_start=0.0, adv_weight=0.1,
                             disc_channels=4)
        stage = build_stage(config, block_source(), ctx=ctx).stage
        stage.train_step(0, rank_slots(ctx.rank, per_process), progress=1.0)
        grads = {}
        for network_name, network in stage.trainable().items():
            for name, parameter in network.named_parameters():
                if parameter.grad is not None:
                    grads[f"{network_name}.{name}"] = parameter.grad.detach().clone()
        results[stage_name] = {"world_size": ctx.world_size, "grads": grads}
    return results


def main(model_dir: Path, output: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    results = stage_gradients(model_dir, output.parent / f"work{ctx.world_size}", ctx)
    if ctx.is_main:
        torch.save(results, output)
    shutdown(ctx)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
