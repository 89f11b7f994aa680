"""The engine's mask generation beside NVIDIA's own (NV-Generate-CTMR `ldm_conditional_sample_one_mask`).

Mask networks of the official families (the reference's `AutoencoderKlMaisi` with transposed-convolution
upsampling and its cross-attention `DiffusionModelUNet`) are built with every parameter random (MONAI's
zero-initialised output layers included), then one label map is drawn twice from the same anatomy-size
condition and the same noise:

- the reference: `scripts.sample_mask.ldm_conditional_sample_one_mask` (MONAI's `DiffusionInferer` DDPM loop
  over all 1000 steps, its VAE decode, softmax + argmax, `remap_labels` with its 124-to-132 table, and
  `general_mask_generation_post_process` for the requested tumor);
- the engine: `sample_latents`, `decode_classes` (the exact tensor-split decode), `classes_to_maisi` and
  `postprocess_generated`, the functions `maisi masks generate` runs before its own last steps (kidney-mass
  voxels to the nearest kidney, placement on the requested grid, body envelope), which are not compared.

The reference is called on the CPU as on a GPU, less its `autocast("cuda")` (inactive on a CPU): its
`initialize_noise_latents` is handed the engine's seeded noise, DDPM's per-step noise comes from the global
generator seeded as the engine's and advanced past the initial noise (the engine draws both from one
seeded generator), the VAE's float16 GroupNorm (CUDA only) is off on both sides, and its
float16 condition is given to the U-Net as float32 by a thin
wrapper (the condition values below are exact in float16). Printed: the largest differences of the final
latent and of the VAE's logits (the reference's whole-volume decode against the same decode in the engine),
how many voxels the engine's split decode puts in another class (a logit tie broken by rounding), and the
share of voxels with the same MAISI id after post-processing, with the differing ones.

    python bench/mask_reference_equivalence.py --reference /path/to/NV-Generate-CTMR
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

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from MAISIEngine.maskgen.model import (build_mask_autoencoder, build_mask_scheduler, build_mask_unet,  # noqa: E402
                                       load_mask_preset, mask_preset_from_dict)
from MAISIEngine.maskgen.anatomy import target_tumor_label  # noqa: E402
from MAISIEngine.maskgen.postprocess import postprocess_generated  # noqa: E402
from MAISIEngine.maskgen.sampling import classes_to_maisi, decode_classes, sample_latents  # noqa: E402
from reference_equivalence import compare  # noqa: E402

CONDITION = [0.5, 0.75, 0.25, 0.5, 0.625, -1.0, -1.0, 0.375, -1.0, -1.0]
"""Ten anatomy sizes (a hepatic tumor asked), every one exact in float16 as the reference hands them over."""


class UNetHarness(torch.nn.Module):
    """The reference's U-Net call on a CPU: half inputs as float32 (what autocast would do on a GPU)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(x.float(), timesteps=timesteps, context=None if context is None else context.float())


class DecodeHarness(torch.nn.Module):
    """The reference's VAE: records the latent it decodes (divided by the scale factor) and the logits."""

    def __init__(self, inner: torch.nn.Module, seen: list[torch.Tensor]) -> None:
        super().__init__()
        self.inner, self.seen = inner, seen

    def decode_stage_2_outputs(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.inner.decode_stage_2_outputs(z.float())
        self.seen.extend([z.detach().float().clone(), logits.detach().clone()])
        return logits


def randomise(module: torch.nn.Module, seed: int, std: float) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (std if p.dim() > 1 else 0.05))
    return module


def preset_for(case: str, latent: int) -> Any:
    raw = load_mask_preset("mask-ct").to_dict()
    raw.update(name=f"mask-{case}", latent_shape=[4, latent, latent, latent], weights_source="directory")
    raw["autoencoder"].update(norm_float16=False)  # MONAI's float16 GroupNorm needs CUDA, on both sides
    if case == "small":  # the official families, narrow: every level, block and attention kept
        raw["autoencoder"].update(num_channels=[8, 8, 8], norm_num_groups=4, num_splits=1)
        raw["diffusion_unet"].update(channels=[8, 8, 8, 8], num_head_channels=[0, 0, 8, 8], norm_num_groups=4)
    else:  # the official channels (32/64/128; 64/128/256/512)
        raw["autoencoder"].update(num_splits=1)
    return mask_preset_from_dict(raw)


def run_case(ref: Any, table: Path, case: str, latent: int, seed: int, scale: float) -> dict[str, Any]:
    preset = preset_for(case, latent)
    vae = randomise(build_mask_autoencoder(preset), seed, 0.2).eval()
    unet = randomise(build_mask_unet(preset), seed + 1, 0.05).eval()
    shape = tuple(preset.latent_shape)
    noise = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)

    start = time.perf_counter()
    ours_latent = sample_latents(unet, build_mask_scheduler(preset), CONDITION, shape, 1000, seed)
    ours_logits: list[torch.Tensor] = []
    classes = decode_classes(vae, ours_latent, scale, len(preset.classes))
    with torch.no_grad():
        ours_logits.append(vae.decode_stage_2_outputs(ours_latent / scale))
    flips = int((torch.argmax(ours_logits[0][0], dim=0).numpy() != classes).sum())
    ours_ids = postprocess_generated(classes_to_maisi(classes, preset.classes), target_tumor_label(CONDITION))
    engine_s = time.perf_counter() - start

    seen: list[torch.Tensor] = []
    ref.initialize_noise_latents = lambda shape_, device: noise.clone()
    torch.manual_seed(seed)  # DDPM's per-step noise: the global generator where the engine's stands after
    torch.randn((1, *shape))  # drawing the initial noise from the same seed
    start = time.perf_counter()
    theirs = ref.ldm_conditional_sample_one_mask(DecodeHarness(vae, seen), UNetHarness(unet),
                                                 build_mask_scheduler(preset), scale, CONDITION, torch.device("cpu"),
                                                 shape, str(table), num_inference_steps=1000)
    reference_s = time.perf_counter() - start
    theirs_ids = theirs[0, 0].cpu().numpy()
    same = float((theirs_ids == ours_ids).mean())
    differ = theirs_ids != ours_ids
    pairs: dict[str, int] = {}
    for a, b in zip(ours_ids[differ].tolist(), theirs_ids[differ].tolist()):
        pairs[f"{a}->{b}"] = pairs.get(f"{a}->{b}", 0) + 1
    return {"case": case, "latent": list(shape), "seed": seed, "steps": 1000,
            "latent_decoded": compare("final latent / scale factor", ours_latent / scale, seen[0]),
            "logits": compare("VAE logits", ours_logits[0], seen[1]),
            "argmax_flips_split_vs_whole_decode": flips,
            "labels_same_share": round(same, 6),
            "voxels_differing": dict(sorted(pairs.items(), key=lambda kv: -kv[1])[:8]),
            "labels_present": sorted(int(v) for v in np.unique(ours_ids))[:12],
            "engine_s": round(engine_s, 1), "reference_s": round(reference_s, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of NV-Generate-CTMR")
    parser.add_argument("--cases", nargs="+", default=["small:8", "official:8"], metavar="CASE:LATENT",
                        help="small (narrow channels) or official (the official channels), and the latent edge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(args.reference.resolve()))
    import scripts.sample_mask as ref  # noqa: PLC0415

    table = args.reference / "configs" / "label_dict_124_to_132.json"
    rows = []
    for spec in args.cases:
        case, latent = spec.split(":")
        rows.append(run_case(ref, table, case, int(latent), args.seed, scale=0.8))
        print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
