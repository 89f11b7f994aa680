"""Settings of one training run, shared by the three stages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("vae", "diffusion", "controlnet")
"""Training stages in the order the paper trains them."""

CONTROLNET_TASKS = ("generate", "inpaint")
"""`generate`: condition on the label map's bit-planes; `inpaint`: on the masked image and the tumor."""


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in its checkpoint so a resumed run can be checked against it."""

    stage: str
    out_dir: Path
    steps: int = 1000
    batch_size: int = 1
    """Samples per process and step (the global batch is this times the number of processes)."""
    lr: float = 1e-4
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    """bf16 autocast on CUDA; ignored on CPU, where full precision is faster for 3D convolutions."""
    resume: bool = False
    checkpoint_every: int = 200
    log_every: int = 1
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0 = off): keeps short high-learning-rate runs from spiking."""
    ema_decay: float = 0.0
    """Export the exponential moving average of the weights with this decay per step (0 = the last
    step's weights). The average is kept beside the training weights, which go on training as before."""
    time_budget_s: float | None = None
    """Stop after this many seconds (the learning-rate schedule then follows elapsed time)."""
    progress: bool = True
    data_on_device: bool = False
    """Keep the training volumes (or latents) on the GPU and crop there (phantom pools that fit)."""
    size: tuple[int, int, int] = (64, 64, 64)
    """Crop size in image voxels (the latent crop is this divided by the VAE's downsampling)."""
    crop_sizes: tuple[tuple[int, int, int], ...] = ()
    """VAE crop sizes drawn per step (image voxels); empty = `size`. Several sizes train the decoder's
    GroupNorms on the statistics of several fields of view."""
    latent_sizes: tuple[tuple[int, int, int], ...] = ()
    """Latent crop sizes drawn per step (diffusion/ControlNet); empty = derived from `size`."""
    # VAE objectives
    kl_weight: float = 1e-7
    adv_weight: float = 0.1
    adv_start: float = 0.3
    """Fraction of the run after which the adversarial loss switches on (reconstruction first)."""
    disc_channels: int = 32
    """Width of the patch discriminator's first layer (MAISI: 32; a small VAE does with fewer)."""
    window_weight: float = 0.0
    """Weight of an extra L1 in the soft-tissue HU window (0 = the paper's objective)."""
    mse_weight: float = 0.0
    """Weight of an extra squared error (0 = the paper's objective). L1 alone makes the decoder output
    the conditional median, which erases structures thinner than its receptive field resolves (ribs,
    cortical shells); the squared error keeps their mean brightness, and it is what PSNR measures."""
    clip_aware_loss: bool = False
    """Outputs up to `losses.CLIP_BAND` beyond [0, 1] where the target sits on that bound (air, 1000 HU)
    cost nothing: inference clips them to the target anyway (False = the paper's objective)."""
    perceptual_weight: float = 0.3
    perceptual_weights_path: str | None = None
    augment_flips: bool = True
    freeze_encoder: bool = False
    """Train the decoder only: the latent space stays as it is, so a diffusion model and ControlNets
    trained on it remain valid (sharpen or de-bias a VAE after the later stages were trained)."""
    decode_posterior_mean: bool = False
    """With `freeze_encoder`: decode the posterior mean instead of a sample of the posterior. The
    diffusion U-Net and ControlNets are trained on posterior means (`latents.encode_volume`), so these
    are the latents the decoder meets at generation; the sampling noise (a posterior sigma of about
    0.5-1.2 in the demo VAE) only hides their fine variations from a decoder being retrained."""
    # diffusion / ControlNet objectives
    class_dropout: float = 0.0
    task: str = "generate"
    tumor_loss_weight: float = 1.0
    bone_loss_weight: float = 1.0
    organ_loss_weights: tuple[tuple[str, float], ...] = ()
    """CT ControlNet: (organ group of `MAISIEngine.labels.ORGAN_GROUPS`, loss weight) pairs, as
    `bone_loss_weight` is for bone."""
    inpaint_region_weight: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)

    def resume_signature(self) -> dict[str, Any]:
        """Settings that must not change when a run is resumed, or it would not continue identically."""
        return {
            "stage": self.stage,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "size": list(self.size),
            "latent_sizes": [list(s) for s in self.latent_sizes],
            "crop_sizes": [list(s) for s in self.crop_sizes],
            "task": self.task,
            "freeze_encoder": self.freeze_encoder,
            "decode_posterior_mean": self.decode_posterior_mean,
        } | ({"ema_decay": self.ema_decay} if self.ema_decay else {})  # runs from before the option resume

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["size"] = list(self.size)
        data["latent_sizes"] = [list(s) for s in self.latent_sizes]
        data["crop_sizes"] = [list(s) for s in self.crop_sizes]
        data["organ_loss_weights"] = [list(pair) for pair in self.organ_loss_weights]
        return data
