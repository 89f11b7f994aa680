"""The training loop shared by every stage: schedule, logging, checkpoints, resume, time budget.

A stage object supplies its networks, optimizers and a `train_step(step, slots)`; this module runs
the steps, sets the learning rate (linear warm-up, cosine decay to a floor), writes the CSV and
TensorBoard logs, saves the training state periodically and on interruption, and finally lets the
stage write its weights into the model directory.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from MAISIEngine.io.atomic import write_text_atomic
from MAISIEngine.train import checkpoints
from MAISIEngine.train.config import TrainConfig
from MAISIEngine.train.data import rank_slots
from MAISIEngine.train.distributed import DistContext, any_across, barrier, mean_across
from MAISIEngine.train.ema import WeightAverages

StepHook = Callable[[int, dict[str, float]], None]
"""Called after each completed step with (steps done, logged values); may raise KeyboardInterrupt."""


class Stage(Protocol):
    key: str
    """Name of the training state / log files (vae, diffusion, controlnet, controlnet_inpaint)."""
    log_keys: tuple[str, ...]
    exported: tuple[str, ...]
    """Keys of `trainable()` whose weights `export()` writes (what `--ema-decay` averages)."""

    def trainable(self) -> dict[str, torch.nn.Module]: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(self, step: int, slots: range, progress: float) -> dict[str, torch.Tensor | float]: ...

    def evaluate(self, step: int, slots: range) -> float: ...

    def extra_state(self) -> dict[str, Any]: ...

    def load_extra_state(self, extra: dict[str, Any]) -> None: ...

    def export(self) -> dict[str, str]: ...


@dataclass
class TrainResult:
    stage: str
    start_step: int
    end_step: int
    elapsed_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    stopped_by_budget: bool = False

    @property
    def steps_run(self) -> int:
        return self.end_step - self.start_step

    def loss_summary(self, key: str = "loss", window: int = 20) -> dict[str, float]:
        values = [h[key] for h in self.history if key in h]
        if not values:
            return {}
        n = max(1, min(window, len(values) // 2))
        return {"first": sum(values[:n]) / n, "last": sum(values[-n:]) / n, "steps": float(len(values))}


def lr_factor(progress: float, step: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup_steps`, then cosine from 1 to `min_ratio` as progress goes 0 -> 1."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    cosine = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return warm * cosine


def set_learning_rate(optimizers: dict[str, torch.optim.Optimizer], factor: float) -> float:
    lr = 0.0
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
            lr = group["lr"]
    return lr


class LossLog:
    """CSV of every logged step (rewritten up to the resume step when a run resumes) and TensorBoard."""

    def __init__(self, out_dir: Path, key: str, columns: tuple[str, ...], enabled: bool) -> None:
        self.path = Path(out_dir) / "logs" / f"{key}_losses.csv"
        self.columns = ("step", "lr", "elapsed_s") + tuple(columns)
        self.enabled = enabled
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(out_dir) / "logs" / "tensorboard" / key))
            except Exception:  # tensorboard not installed, or its import fails: the CSV suffices
                self.writer = None

    def start(self, resume_step: int) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, str]] = []
        if resume_step > 0 and self.path.is_file():
            with open(self.path, newline="") as handle:
                kept = [row for row in csv.DictReader(handle) if int(float(row.get("step", 0))) <= resume_step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        write_text_atomic(self.path, buffer.getvalue())

    def write(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=list(self.columns), extrasaction="ignore").writerow(
                {k: (f"{row[k]:.6g}" if k in row else "") for k in self.columns})
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "elapsed_s"):
                    self.writer.add_scalar(f"train/{key}", value, int(row["step"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _TermAsInterrupt:
    """Turn SIGTERM into KeyboardInterrupt while training, so the state is saved before exiting."""

    def __enter__(self) -> "_TermAsInterrupt":
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            def handler(signum: int, frame: object) -> None:
                raise KeyboardInterrupt

            self.previous = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class _NoBar:
    """Stands in for tqdm where it is not installed (bare training machines)."""

    def set_postfix(self, *args: object, **kwargs: object) -> None:
        return None

    def update(self, count: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def _progress_bar(config: TrainConfig, ctx: DistContext, start: int, key: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=config.steps, initial=start, desc=f"train {key}", unit="step", dynamic_ncols=True,
                disable=not (config.progress and ctx.is_main), mininterval=1.0)


def run_stage(stage: Stage, config: TrainConfig, ctx: DistContext, on_step: StepHook | None = None) -> TrainResult:
    """Run (or resume) a stage to `config.steps` steps, within the time budget, and export its weights."""
    out_dir = Path(config.out_dir)
    path = checkpoints.state_path(out_dir, stage.key)
    signature = config.resume_signature() | {"world_size": ctx.world_size, "stage_key": stage.key}
    models, optimizers = stage.trainable(), stage.optimizers()
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
    exported = {key: models[key] for key in stage.exported}
    averages = WeightAverages(exported, config.ema_decay) if config.ema_decay and ctx.is_main else None
    start = 0
    if config.resume:
        payload = checkpoints.load_training_state(path)
        checkpoints.check_signature(payload["signature"], signature)
        start = checkpoints.apply_training_state(payload, models, optimizers, ctx.device)
        stage.load_extra_state(payload.get("extra", {}))
        if averages is not None:
            averages.load_state_dict(payload.get("averages", {}))
    log = LossLog(out_dir, stage.key, stage.log_keys, enabled=ctx.is_main)
    log.start(start)

    def save(step: int) -> None:
        if ctx.is_main:
            checkpoints.save_training_state(path, step=step, models=models, optimizers=optimizers,
                                            signature=signature, extra=stage.extra_state(), device=ctx.device,
                                            averages=averages.state_dict() if averages is not None else None)
        barrier(ctx)

    began = time.perf_counter()
    result = TrainResult(stage.key, start, start, 0.0)
    bar = _progress_bar(config, ctx, start, stage.key)
    step = start
    try:
        with _TermAsInterrupt():
            while step < config.steps:
                elapsed = time.perf_counter() - began
                over = config.time_budget_s is not None and elapsed >= config.time_budget_s
                if config.time_budget_s is not None and any_across(over, ctx):
                    result.stopped_by_budget = True
                    break
                progress = step / max(1, config.steps)
                if config.time_budget_s:
                    progress = max(progress, elapsed / config.time_budget_s)
                lr = set_learning_rate(optimizers, lr_factor(progress, step, config.warmup_steps, config.min_lr_ratio))
                raw = stage.train_step(step, rank_slots(ctx.rank, config.batch_size), progress)
                if averages is not None:
                    averages.update(exported)
                step += 1
                values: dict[str, float] = {}
                if step % config.log_every == 0 or step == config.steps:
                    # Reading the values waits for the GPU: only on logged steps, so it can run ahead otherwise.
                    values = mean_across({k: float(v) for k, v in raw.items()}, ctx)
                    row = {"step": float(step), "lr": lr, "elapsed_s": time.perf_counter() - began, **values}
                    result.history.append(row)
                    log.write(row)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in ("loss", "l1", "psnr")})
                bar.update(1)
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                    save(step)
                if on_step is not None:
                    on_step(step, values)
    except KeyboardInterrupt:
        save(step)
        result.interrupted = True
    finally:
        bar.close()
        log.close()
    result.end_step = step
    result.elapsed_s = time.perf_counter() - began
    if not result.interrupted:
        save(step)
        if ctx.is_main:
            if averages is not None:
                averages.copy_into(exported)  # the training state above keeps the last step's weights
            result.outputs = stage.export()
        barrier(ctx)
    return result
