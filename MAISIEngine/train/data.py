"""Training data: NIfTI images/labels from a folder or a datalist, or phantoms generated on the fly.

Preprocessing follows the paper: RAS orientation, HU clipped to [-1000, 1000] and scaled to [0, 1],
optional resampling to a common spacing. Batches are drawn deterministically: what sample slot `k`
of step `s` holds (which volume, which crop, which flips) depends only on (seed, s, k), so a resumed
run sees exactly the data it would have seen, and a run split over processes sees the same global
batch as one process.
"""

from __future__ import annotations

import abc
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

import nibabel as nib
import numpy as np
import torch

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.nifti import Volume, read_volume, same_grid, voxel_spacing

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

HU_MIN = -1000.0
HU_MAX = 1000.0
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_FOLDERS = ("images", "imagesTr")
LABEL_FOLDERS = ("labels", "labelsTr")


# ----------------------------------------------------------------------------------------------- volumes


@dataclass
class TrainingVolume:
    """One preprocessed case: image in [0, 1] (or None), labels as MAISI ids (or None), both RAS."""

    image: np.ndarray | None
    labels: np.ndarray | None
    spacing: tuple[float, float, float]
    name: str
    nominal_hu: dict[int, float] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        array = self.image if self.image is not None else self.labels
        assert array is not None
        return tuple(int(s) for s in array.shape)  # type: ignore[return-value]

    def tumor_ids(self) -> list[int]:
        if self.labels is None:
            return []
        present = set(int(v) for v in np.unique(self.labels))
        return sorted(present & set(maisi_labels.TUMOR_TYPES.values()))


def hu_to_unit(hu: np.ndarray) -> np.ndarray:
    """HU clipped to [-1000, 1000] and mapped linearly onto [0, 1] (the VAE's input range)."""
    clipped = np.clip(np.asarray(hu, dtype=np.float32), HU_MIN, HU_MAX)
    return (clipped - HU_MIN) / (HU_MAX - HU_MIN)


def unit_to_hu(unit: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Inverse of `hu_to_unit` (after clipping to [0, 1])."""
    if isinstance(unit, torch.Tensor):
        return unit.clamp(0, 1) * (HU_MAX - HU_MIN) + HU_MIN
    return np.clip(unit, 0, 1) * (HU_MAX - HU_MIN) + HU_MIN


def orient_ras(volume: Volume) -> Volume:
    """Reorder/flip the voxel axes so that i, j, k point (as closely as possible) to R, A, S."""
    current = nib.orientations.io_orientation(volume.affine)
    target = nib.orientations.axcodes2ornt(("R", "A", "S"))
    transform = nib.orientations.ornt_transform(current, target)
    if np.array_equal(current, target):
        return volume
    array = nib.orientations.apply_orientation(volume.array, transform)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(transform, volume.array.shape)
    return Volume(np.ascontiguousarray(array), affine)


def resample_to_spacing(volume: Volume, spacing: Sequence[float], order: int, cval: float) -> Volume:
    """Resample onto the same field of view at `spacing` (linear for images, nearest for labels)."""
    from MAISIEngine.masks import grid_affine, resample_to_reference

    current = np.asarray(voxel_spacing(volume.affine))
    target = np.asarray([float(s) for s in spacing])
    if np.allclose(current, target, rtol=1e-4):
        return volume
    size = tuple(max(1, int(round(n * c / t))) for n, c, t in zip(volume.shape, current, target))
    affine = grid_affine(volume.affine, volume.shape, size, tuple(target))  # type: ignore[arg-type]
    array = resample_to_reference(volume, affine, size, order=order, cval=cval)  # type: ignore[arg-type]
    return Volume(array, affine)


def preprocess(
    image: Volume | None,
    labels: Volume | None,
    name: str,
    spacing: Sequence[float] | None = None,
) -> TrainingVolume:
    """RAS, HU -> [0, 1], optional resampling; labels checked against the MAISI dictionary."""
    from MAISIEngine.masks import validate_label_ids

    if image is not None and labels is not None and not same_grid(image, labels):
        raise MaisiError(
            f"image and labels of case '{name}' are on different grids "
            f"(image {image.shape} spacing {tuple(round(s, 3) for s in image.spacing)}, "
            f"labels {labels.shape} spacing {tuple(round(s, 3) for s in labels.spacing)})",
            "resample the label map onto its image's grid (same shape and affine) before training",
        )
    if labels is not None:
        validate_label_ids(labels.array, what=f"label map of case '{name}'")
        labels = orient_ras(Volume(np.asarray(labels.array).astype(np.uint8), labels.affine))
        if spacing is not None:
            labels = resample_to_spacing(labels, spacing, order=0, cval=0)
    if image is not None:
        image = orient_ras(Volume(np.asarray(image.array, dtype=np.float32), image.affine))
        if spacing is not None:
            image = resample_to_spacing(image, spacing, order=1, cval=HU_MIN)
    reference = image if image is not None else labels
    assert reference is not None
    return TrainingVolume(
        image=hu_to_unit(image.array) if image is not None else None,
        labels=np.asarray(labels.array, dtype=np.uint8) if labels is not None else None,
        spacing=voxel_spacing(reference.affine),
        name=name,
    )


# ----------------------------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class CaseFiles:
    name: str
    image: Path | None
    labels: Path | None


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _match_label(image: Path, label_dir: Path) -> Path | None:
    """Label file of an image: same name, or the name with nnU-Net's `_0000` channel suffix removed."""
    stem = _stem(image)
    for candidate_stem in (stem, stem[:-5] if stem.endswith("_0000") else stem):
        for suffix in NIFTI_SUFFIXES:
            candidate = label_dir / f"{candidate_stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def list_folder(folder: str | Path) -> list[CaseFiles]:
    """Cases of a dataset folder: `images/` (+ `labels/` with the same file names), or NIfTI files directly."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MaisiError(f"dataset folder {folder} does not exist", "give a folder holding images/ and labels/")
    image_dir = next((folder / n for n in IMAGE_FOLDERS if (folder / n).is_dir()), None)
    label_dir = next((folder / n for n in LABEL_FOLDERS if (folder / n).is_dir()), None)
    if image_dir is None and label_dir is not None:
        # Label maps only (e.g. for checking masks): cases without images.
        return [CaseFiles(_stem(p), None, p) for p in sorted(label_dir.iterdir()) if _is_nifti(p)] or _no_images(folder)
    images = sorted(p for p in (image_dir or folder).iterdir() if _is_nifti(p))
    if not images:
        _no_images(folder)
    return [CaseFiles(_stem(p), p, _match_label(p, label_dir) if label_dir else None) for p in images]


def _no_images(folder: Path) -> list[CaseFiles]:
    raise MaisiError(
        f"dataset folder {folder} holds no NIfTI images",
        "put CT volumes (.nii/.nii.gz) in FOLDER/images/ and their label maps with the same names in FOLDER/labels/",
    )


def read_datalist(path: str | Path) -> list[CaseFiles]:
    """MAISI-style datalist: {"training": [{"image": ..., "label": ...}, ...]}, paths relative to the file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise MaisiError(f"datalist {path} does not exist", "check the path") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MaisiError(f"cannot read datalist {path}: {exc}", "it must be a JSON file") from None
    entries = document.get("training", document.get("train")) if isinstance(document, dict) else document
    if not isinstance(entries, list) or not entries:
        raise MaisiError(
            f"datalist {path.name} lists no cases",
            'write {"training": [{"image": "ct.nii.gz", "label": "labels.nii.gz"}, ...]}',
        )
    cases = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not (entry.get("image") or entry.get("label")):
            raise MaisiError(f"entry {index} of datalist {path.name} has neither 'image' nor 'label'",
                             'each entry is {"image": PATH, "label": PATH}')
        image = (path.parent / entry["image"]) if entry.get("image") else None
        label = (path.parent / entry["label"]) if entry.get("label") else None
        name = _stem(image or label)  # type: ignore[arg-type]
        cases.append(CaseFiles(name, image, label))
    return cases


# ----------------------------------------------------------------------------------------------- sources


class VolumeSource(abc.ABC):
    """Indexable collection of preprocessed training volumes."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def get(self, index: int) -> TrainingVolume: ...

    def name(self, index: int) -> str:
        """Name of a case without necessarily reading it."""
        return self.get(index).name

    @property
    def has_images(self) -> bool:
        return True

    @property
    def has_labels(self) -> bool:
        return True

    def describe(self) -> str:
        return f"{len(self)} volumes"


class NiftiSource(VolumeSource):
    """Cases read from disk on demand and kept in a small least-recently-used cache."""

    def __init__(self, cases: list[CaseFiles], spacing: Sequence[float] | None = None,
                 need_images: bool = True, need_labels: bool = False, cache_size: int = 8) -> None:
        if not cases:
            raise MaisiError("the dataset holds no cases", "give a folder or datalist with at least one image")
        if need_images:
            missing = [c.name for c in cases if c.image is None]
            if missing:
                raise MaisiError(f"{len(missing)} case(s) have no image (e.g. '{missing[0]}')",
                                 "this stage trains on CT images; add them or drop those cases")
        if need_labels:
            missing = [c.name for c in cases if c.labels is None]
            if missing:
                raise MaisiError(
                    f"{len(missing)} of {len(cases)} image(s) have no label map (e.g. '{missing[0]}')",
                    "ControlNet training needs a label map per image: put it in labels/ under the image's file name",
                )
        self.cases = cases
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self.need_images = need_images
        self.need_labels = need_labels
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[int, TrainingVolume] = OrderedDict()

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def has_labels(self) -> bool:
        return all(c.labels is not None for c in self.cases)

    @property
    def has_images(self) -> bool:
        return all(c.image is not None for c in self.cases)

    def name(self, index: int) -> str:
        return self.cases[index].name

    def get(self, index: int) -> TrainingVolume:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        case = self.cases[index]
        image = read_volume(case.image, "image") if case.image is not None and self.need_images else None
        labels = read_volume(case.labels, "label map") if case.labels is not None else None
        volume = preprocess(image, labels, case.name, self.spacing)
        self._cache[index] = volume
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return volume

    def validate_all(self) -> None:
        """Read every case once, so bad files fail before training starts (not hours into it)."""
        for index in range(len(self)):
            self.get(index)

    def describe(self) -> str:
        return f"{len(self)} NIfTI case(s)"


@dataclass(frozen=True)
class PhantomSpec:
    """How to make one phantom of the pool (a pure function of these fields)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    region: str
    seed: int
    tumors: tuple[str, ...]


def make_phantom_volume(spec: PhantomSpec) -> TrainingVolume:
    """Generate one phantom and preprocess it like a real CT (module level so worker processes can run it)."""
    from MAISIEngine.phantom import make_phantom

    phantom = make_phantom(size=spec.size, spacing=spec.spacing, region=spec.region, seed=spec.seed,
                           tumors=list(spec.tumors), strict_tumors=False)
    labels = np.asarray(phantom.labels, dtype=np.uint8)
    image = hu_to_unit(np.asarray(phantom.ct, dtype=np.float32))
    nominal = {int(k): float(v) for k, v in dict(getattr(phantom, "nominal_hu", {}) or {}).items()
               if str(k).lstrip("-").isdigit()}
    return TrainingVolume(image=image, labels=labels, spacing=tuple(float(s) for s in spec.spacing),
                          name=f"phantom-{spec.region}-{spec.seed}", nominal_hu=nominal)


def phantom_specs(count: int, seed: int, sizes: Sequence[Sequence[int]], spacings: tuple[float, float],
                  regions: Sequence[str] = ("chest", "abdomen", "chest-abdomen"),
                  tumor_fraction: float = 0.4,
                  tumor_types: Sequence[str] = tuple(maisi_labels.TUMOR_TYPES)) -> list[PhantomSpec]:
    """A varied, reproducible list of phantoms: sizes, spacings, regions and tumors drawn from `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
    specs = []
    for index in range(int(count)):
        size = tuple(int(v) for v in sizes[int(rng.integers(len(sizes)))])
        in_plane = float(np.round(rng.uniform(*spacings), 2))
        axial = float(np.round(rng.uniform(*spacings), 2))
        region = str(regions[int(rng.integers(len(regions)))])
        tumors: tuple[str, ...] = ()
        if rng.random() < tumor_fraction:
            tumors = (str(tumor_types[int(rng.integers(len(tumor_types)))]),)
        spacing = (in_plane, in_plane, axial)
        specs.append(PhantomSpec(size, spacing, region, int(seed) * 100003 + index, tumors))  # type: ignore[arg-type]
    return specs


def _single_threaded() -> None:
    """Worker processes each take one core; numpy/torch thread pools would oversubscribe them."""
    torch.set_num_threads(1)


class PhantomSource(VolumeSource):
    """A pool of phantoms generated once (in parallel worker processes) and kept in memory."""

    def __init__(self, specs: Sequence[PhantomSpec], workers: int | None = None) -> None:
        if not specs:
            raise MaisiError("--phantoms must be at least 1", "e.g. --phantoms 16")
        self.specs = list(specs)
        workers = int(workers if workers is not None else min(len(self.specs), os.cpu_count() or 1))
        self.volumes: list[TrainingVolume] = []
        if workers > 1 and len(self.specs) > 1:
            try:
                # spawn: workers must not inherit a CUDA context or the parent's thread pools.
                with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                         initializer=_single_threaded) as pool:
                    self.volumes = list(pool.map(make_phantom_volume, self.specs))
            except (OSError, RuntimeError, BrokenProcessPool):
                self.volumes = []  # no worker processes here (sandbox, no /dev/shm): make them in this one
        if not self.volumes:
            self.volumes = [make_phantom_volume(s) for s in self.specs]

    def __len__(self) -> int:
        return len(self.volumes)

    def get(self, index: int) -> TrainingVolume:
        return self.volumes[index]

    def tumor_counts(self) -> dict[int, int]:
        """Tumor label id -> number of phantoms holding it (tumors whose host was out of view are absent)."""
        counts: dict[int, int] = {}
        for volume in self.volumes:
            for tumor_id in volume.tumor_ids():
                counts[tumor_id] = counts.get(tumor_id, 0) + 1
        return dict(sorted(counts.items()))

    def describe(self) -> str:
        with_tumor = sum(1 for v in self.volumes if v.tumor_ids())
        return f"{len(self)} phantoms ({with_tumor} with tumors)"


class ListSource(VolumeSource):
    """Volumes already in memory (tests, benchmarks)."""

    def __init__(self, volumes: Sequence[TrainingVolume]) -> None:
        if not volumes:
            raise MaisiError("no training volumes", "give at least one")
        self.volumes = list(volumes)

    def __len__(self) -> int:
        return len(self.volumes)

    def get(self, index: int) -> TrainingVolume:
        return self.volumes[index]


# ----------------------------------------------------------------------------------------------- sampling


def slot_seed(seed: int, step: int, slot: int, stream: int = 0) -> int:
    """A 63-bit seed for sample `slot` of `step`: independent of how slots are spread over processes."""
    state = np.random.SeedSequence([int(seed), int(step), int(slot), int(stream)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


BATCH_SHAPE_SLOT = 1 << 30
"""Pseudo slot whose random stream picks the crop size of a step (shared by all processes)."""


def slot_rng(seed: int, step: int, slot: int) -> np.random.Generator:
    return np.random.default_rng(slot_seed(seed, step, slot, stream=1))


def slot_generator(seed: int, step: int, slot: int, device: torch.device) -> torch.Generator:
    """Torch generator for the noise/timestep of one sample, on the device that draws it."""
    generator = torch.Generator(device=device)
    generator.manual_seed(slot_seed(seed, step, slot, stream=2))
    return generator


def rank_slots(rank: int, batch_size: int) -> range:
    """Global batch slots this process owns."""
    return range(rank * batch_size, (rank + 1) * batch_size)


def crop_start(shape: Sequence[int], crop: Sequence[int], rng: np.random.Generator,
               centre: Sequence[float] | None = None, multiple: int = 1) -> tuple[int, ...]:
    """Random crop origin (a multiple of `multiple`); near `centre` when given; 0 where the volume is smaller."""
    starts = []
    for axis, (n, c) in enumerate(zip(shape, crop)):
        room = n - c
        if room <= 0:
            starts.append(0)
            continue
        if centre is not None:
            jitter = int(rng.integers(-c // 4, c // 4 + 1))
            wanted = int(round(centre[axis] - c / 2)) + jitter
            start = int(np.clip(wanted, 0, room))
        else:
            start = int(rng.integers(0, room + 1))
        starts.append((start // multiple) * multiple)
    return tuple(starts)


def crop(array: ArrayT, start: Sequence[int], size: Sequence[int], fill: float = 0) -> ArrayT:
    """Crop `array` (..., X, Y, Z; numpy or torch) at `start` to `size`, padding with `fill` where it runs out."""
    spatial = array.shape[-3:]
    size = tuple(int(s) for s in size)
    src = tuple(slice(int(s), min(int(s) + c, n)) for s, c, n in zip(start, size, spatial))
    if all(sl.stop - sl.start == c for sl, c in zip(src, size)):
        return array[(Ellipsis,) + src]
    shape = tuple(array.shape[:-3]) + size
    if isinstance(array, torch.Tensor):
        out = torch.full(shape, fill, dtype=array.dtype, device=array.device)
    else:
        out = np.full(shape, fill, dtype=array.dtype)
    dst = tuple(slice(0, sl.stop - sl.start) for sl in src)
    out[(Ellipsis,) + dst] = array[(Ellipsis,) + src]
    return out  # type: ignore[return-value]


def pad_to_multiple(array: np.ndarray, multiple: int, fill: float = 0) -> np.ndarray:
    """Pad the last three axes at their end up to a multiple (the VAE halves each axis twice)."""
    spatial = array.shape[-3:]
    target = tuple(int(np.ceil(n / multiple) * multiple) for n in spatial)
    if target == tuple(spatial):
        return array
    return crop(array, (0, 0, 0), target, fill)


class TensorStore:
    """The volumes of a source as torch tensors; kept on the training device when asked (phantom pools),
    so crops are cut where the network runs instead of being copied to it every step."""

    def __init__(self, source: VolumeSource, device: torch.device, on_device: bool) -> None:
        self.source = source
        self.device = device if on_device else torch.device("cpu")
        self._tensors: dict[tuple[int, str], torch.Tensor] = {}
        self.on_device = on_device

    def get(self, index: int, attribute: str) -> torch.Tensor:
        key = (index, attribute)
        if key in self._tensors:
            return self._tensors[key]
        array = getattr(self.source.get(index), attribute)
        if array is None:
            raise MaisiError(f"case '{self.source.name(index)}' has no {attribute}",
                             "every case needs an image (and a label map for ControlNet training)")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        if self.on_device or isinstance(self.source, (PhantomSource, ListSource)):
            self._tensors[key] = tensor  # in memory anyway; disk-backed sources keep their own LRU cache
        return tensor


def image_batch(store: TensorStore | VolumeSource, seed: int, step: int, slots: Sequence[int], size: Sequence[int],
                flips: bool) -> torch.Tensor:
    """(B, 1, X, Y, Z) crops in [0, 1] for the VAE; random flips are harmless for an autoencoder."""
    if isinstance(store, VolumeSource):
        store = TensorStore(store, torch.device("cpu"), on_device=False)
    source = store.source
    crops = []
    for slot in slots:
        rng = slot_rng(seed, step, slot)
        index = int(rng.integers(len(source)))
        image = store.get(index, "image")
        start = crop_start(tuple(image.shape), size, rng)
        patch = crop(image, start, size, fill=0.0)
        if flips:
            axes = [axis for axis in range(3) if rng.random() < 0.5]
            if axes:
                patch = torch.flip(patch, dims=axes)
        crops.append(patch[None])
    return torch.stack(crops).float()


def describe_source(source: VolumeSource) -> str:
    return source.describe()
