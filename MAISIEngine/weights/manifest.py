"""The official MAISI files the engine knows how to fetch, and how a user may name them.

NVIDIA publishes the CT checkpoints and the mask database in the Hugging Face repository
`nvidia/NV-Generate-CT`. No hashes are published beside them; Hugging Face reports each file's sha256
in a response header at download time, which is what the downloader checks. The sizes below are
approximate (for display and disk-space hints only): some were reported by users of the files, the
others are estimated from the networks' parameter counts, as `size_is_estimate` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from MAISIEngine.errors import MaisiError

OFFICIAL_REPO = "nvidia/NV-Generate-CT"

MB = 1_000_000
GB = 1_000_000_000


@dataclass(frozen=True)
class WeightFile:
    """One downloadable file: where it lives upstream, what it is for, and about how large it is."""

    name: str  # short manifest name, e.g. "rflow-ct-unet"
    repo: str  # Hugging Face repository, "owner/name"
    path: str  # path inside the repository, POSIX form
    role: str  # preset weight role, or what else the file is used for
    presets: tuple[str, ...]  # shipped presets that need this file
    approx_size: int  # bytes, approximate
    size_is_estimate: bool  # True: derived from parameter counts, not from the published file
    description: str
    min_size: int = 0  # bytes a genuine file cannot be below (its parameters), where that is under half approx_size

    @property
    def filename(self) -> str:
        """The bare file name, which is how presets refer to a weight file."""
        return PurePosixPath(self.path).name

    @property
    def key(self) -> str:
        """Where the file sits in the cache, relative to the weights folder (also the registry key)."""
        return f"{self.repo}/{self.path}"


MANIFEST: tuple[WeightFile, ...] = (
    WeightFile(
        "autoencoder-v1", OFFICIAL_REPO, "models/autoencoder_v1.pt", "autoencoder",
        ("rflow-ct", "ddpm-ct"), 84 * MB, False,
        "CT image VAE (AutoencoderKlMaisi), shared by both CT models",
    ),
    WeightFile(
        "rflow-ct-unet", OFFICIAL_REPO, "models/diff_unet_3d_rflow-ct.pt", "diffusion_unet",
        ("rflow-ct",), 2200 * MB, False,
        "latent diffusion U-Net of MAISI v2 (rectified flow)",
        # The reported 2.2 GB is three times the 180.5 M float32 parameters (722 MB): the file holds more
        # than the network, and a checkpoint of the network alone is as genuine a layout.
        min_size=700 * MB,
    ),
    WeightFile(
        "rflow-ct-controlnet", OFFICIAL_REPO, "models/controlnet_3d_rflow-ct.pt", "controlnet",
        ("rflow-ct",), 288 * MB, False,
        "ControlNet of MAISI v2: conditions the CT on a label map",
    ),
    WeightFile(
        "ddpm-ct-unet", OFFICIAL_REPO, "models/diff_unet_3d_ddpm-ct.pt", "diffusion_unet",
        ("ddpm-ct",), 680 * MB, True,
        "latent diffusion U-Net of MAISI v1 (DDPM, body-region conditioned)",
    ),
    WeightFile(
        "ddpm-ct-controlnet", OFFICIAL_REPO, "models/controlnet_3d_ddpm-ct.pt", "controlnet",
        ("ddpm-ct",), 275 * MB, True,
        "ControlNet of MAISI v1",
    ),
    WeightFile(
        "mask-autoencoder", OFFICIAL_REPO, "models/mask_generation_autoencoder.pt", "mask_autoencoder",
        (), 21 * MB, False,
        "VAE of the official label-map generator",
    ),
    WeightFile(
        "mask-unet", OFFICIAL_REPO, "models/mask_generation_diffusion_unet.pt", "mask_diffusion_unet",
        (), 789 * MB, False,
        "diffusion U-Net of the official label-map generator",
    ),
    WeightFile(
        "anatomy-sizes", OFFICIAL_REPO, "datasets/all_anatomy_size_conditions.json", "mask_size_database",
        (), 1 * MB, True,
        "anatomy sizes of the training cases, which the label-map generator's size control looks up",
    ),
    WeightFile(
        "mask-database", OFFICIAL_REPO, "datasets/all_masks_flexible_size_and_spacing_4000.zip", "mask_database",
        (), 11_600 * MB, False,
        "label maps of the training set (used by `maisi masks find`)",
    ),
    WeightFile(
        "mask-candidates", OFFICIAL_REPO, "datasets/candidate_masks_flexible_size_and_spacing_4000.json",
        "mask_candidates", (), 3 * MB, True,
        "index of the mask database: region, size, spacing and labels of each mask",
    ),
    WeightFile(
        # Not NVIDIA's: the Keras RadImageNet ResNet-50 converted to PyTorch, which MONAI's perceptual loss
        # and NVIDIA's 2.5D FID script fetch. No hash is published; Hugging Face's download header gives it.
        # Size: 94.35 MB of float32 tensors in the state dict, plus the pickle's framing.
        "radimagenet-resnet50", "MONAI/checkpoints", "RadImageNet-ResNet50_notop.pth", "fid_features",
        (), 95 * MB, True,
        "RadImageNet ResNet-50 features for `maisi evaluate fid` (2.5D FID) and perceptual distances",
    ),
)

GROUPS: dict[str, tuple[str, ...]] = {
    "masks": ("mask-database", "mask-candidates"),
    "mask-generation": ("mask-autoencoder", "mask-unet", "anatomy-sizes"),
}
"""Names that stand for several files (preset names are groups too, taken from the presets)."""


def entry_by_name(name: str) -> WeightFile | None:
    """The entry whose manifest name, file name or repository path is `name` (case-insensitive)."""
    wanted = name.strip().lower()
    for entry in MANIFEST:
        if wanted in (entry.name.lower(), entry.filename.lower(), entry.path.lower(), entry.key.lower()):
            return entry
    return None


def entry_for_filename(filename: str) -> WeightFile:
    """The entry a preset means by `filename`; a preset naming an unknown official file is an error."""
    entry = entry_by_name(filename)
    if entry is None:
        raise MaisiError(
            f"'{filename}' is not one of the official MAISI files",
            f"use a file listed by `maisi weights list`, or set \"weights_source\": \"directory\" in the preset",
        )
    return entry


def _official_preset_files(preset_name: str) -> list[WeightFile] | None:
    """The files of a shipped preset (None: no such preset); empty when its weights are not downloadable."""
    from MAISIEngine.presets import load_preset, shipped_preset_names

    if preset_name not in shipped_preset_names():
        return None
    preset = load_preset(preset_name)
    if preset.weights_source != "official":
        return []
    return [entry_for_filename(filename) for filename in preset.weights.values()]


def entries_for_name(name: str) -> list[WeightFile]:
    """Expand what a user typed: a manifest name, a file name, a group, or a shipped preset name.

    A preset whose weights ship with the engine (the demo model) expands to nothing: there is nothing
    to download for it.
    """
    entry = entry_by_name(name)
    if entry is not None:
        return [entry]
    key = name.strip().lower()
    if key in GROUPS:
        return [e for e in MANIFEST if e.name in GROUPS[key]]
    preset_files = _official_preset_files(key)
    if preset_files is not None:
        return preset_files
    raise MaisiError(
        f"unknown weight file or model '{name}'",
        "use a name, file name or model from `maisi weights list` (e.g. rflow-ct, autoencoder_v1.pt, masks)",
    )


def entries_for_names(names: list[str] | tuple[str, ...]) -> list[WeightFile]:
    """Expand several names, each file once, in manifest order."""
    chosen = {entry.name for name in names for entry in entries_for_name(name)}
    return [entry for entry in MANIFEST if entry.name in chosen]


def format_size(n_bytes: int) -> str:
    """Sizes as people read them (decimal units, like download pages)."""
    value, unit = float(n_bytes), "B"
    for bigger in ("kB", "MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"
