"""Run a batch: each process (torchrun rank) generates its share, resumably, with a quality gate.

Sample i gets seed `derive_seed(base_seed, i, attempt)`, its mask source and tumor augmentation from that
seed alone, so outputs do not depend on how many processes run. Rank r takes the samples with
i % world_size == r. Each sample is written atomically into `samples/sample_iiiii/` with `sample.json`
(seed, attempts, quality, file hashes); a rerun skips samples whose hashes verify and redoes the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from MAISIEngine.batch.spec import BatchSpec
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import write_text_atomic
from MAISIEngine.io.nifti import Volume, read_volume
from MAISIEngine.io.privacy import describe_source
from MAISIEngine.models import LoadedModel, load_model, resolve_device
from MAISIEngine.pipeline import GenerationRequest, generate, write_outputs
from MAISIEngine.presets import load_preset

SAMPLES_DIR = "samples"
SPEC_RECORD = "batch_spec.json"
MANIFEST = "manifest.jsonl"
REPORT = "report.json"


def derive_seed(base_seed: int, index: int, attempt: int = 0) -> int:
    """A 31-bit seed from (base seed, sample index, attempt), independent of process count."""
    digest = hashlib.sha256(f"{base_seed}:{index}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def sample_dir(out_dir: Path, index: int) -> Path:
    return out_dir / SAMPLES_DIR / f"sample_{index:05d}"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finished(out_dir: Path, index: int) -> dict[str, Any] | None:
    """The sample's record when its files are complete and their hashes verify, else None."""
    folder = sample_dir(out_dir, index)
    record_path = folder / "sample.json"
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        for name, digest in record["sha256"].items():
            if file_sha256(folder / name) != digest:
                return None
    except (OSError, ValueError, KeyError):
        return None
    return record


def claim_output_dir(out_dir: Path, spec: BatchSpec) -> None:
    """Refuse an output folder written by another spec; record ours on first use."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = out_dir / SPEC_RECORD
    ours = {"fingerprint": spec.fingerprint(), "spec": spec.__dict__}
    if record.is_file():
        theirs = json.loads(record.read_text())
        if theirs.get("fingerprint") != ours["fingerprint"]:
            raise MaisiError(f"{out_dir} holds the outputs of another batch spec",
                             "use a new output folder, or rerun with the spec that made it")
        return
    if any(out_dir.iterdir()):
        raise MaisiError(f"{out_dir} is not empty and holds no batch", "use a new or empty output folder")
    write_text_atomic(record, json.dumps(ours, indent=2, default=str))


def clear_partial(out_dir: Path, indices: list[int]) -> None:
    """Remove half-written sample folders of this rank's samples (a previous run was killed)."""
    samples = out_dir / SAMPLES_DIR
    if not samples.is_dir():
        return
    for index in indices:
        for leftover in samples.glob(f".sample_{index:05d}.*.partial"):
            shutil.rmtree(leftover, ignore_errors=True)
        folder = sample_dir(out_dir, index)
        if folder.exists() and finished(out_dir, index) is None:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class PreparedMask:
    index: int
    volume: Volume
    source: str
    tumor: str | None


def _phantom_mask(options: dict[str, Any], spec: BatchSpec, seed: int, rng: np.random.Generator,
                  default_size: tuple[int, ...], default_spacing: tuple[float, ...]) -> tuple[Volume, str]:
    from MAISIEngine.phantom import make_phantom

    regions = options.get("region", "chest-abdomen")
    region = str(rng.choice(regions)) if isinstance(regions, list) else str(regions)
    size = tuple(options.get("size") or spec.size or default_size)
    spacing = tuple(options.get("spacing") or spec.spacing or default_spacing)
    phantom = make_phantom(size=size, spacing=spacing, region=region, seed=seed, tumors=tuple(options.get("tumors", ())))
    return Volume(phantom.labels, phantom.affine), f"phantom region={region} seed={seed}"


def _folder_mask(folder: str, position: int) -> tuple[Volume, str]:
    files = sorted(p for p in Path(folder).expanduser().iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        raise MaisiError(f"mask folder {folder} holds no NIfTI files", "put label maps (.nii.gz) with MAISI ids there")
    path = files[position % len(files)]
    return read_volume(path, what="mask", labels=True), describe_source(path)


def _database_mask(options: dict[str, Any], spec: BatchSpec, position: int, default_size: tuple[int, ...],
                   default_spacing: tuple[float, ...], seed: int = 0) -> tuple[Volume, str]:
    """The official mask database: sample `position` takes the next of the ten best-ranked candidates,
    randomly augmented as the reference does (`augment: false` in the spec turns that off)."""
    volume, source = _retrieved_mask(options, spec, position, default_size, default_spacing)
    if not options.get("augment", True):
        return volume, source
    from MAISIEngine.masktools.augment import augment_retrieved_mask

    array, done = augment_retrieved_mask(volume.array, seed)
    return Volume(array, volume.affine), f"{source} (augmented: {done}, seed {seed})"


def _retrieved_mask(options: dict[str, Any], spec: BatchSpec, position: int, default_size: tuple[int, ...],
                    default_spacing: tuple[float, ...]) -> tuple[Volume, str]:
    import tempfile

    from MAISIEngine.masktools.maskdb import MaskArchive, find_masks, load_candidate, locate_database, resolve_anatomy

    size = tuple(options.get("size") or spec.size or default_size)
    spacing = tuple(options.get("spacing") or spec.spacing or default_spacing)
    db_json, archive_path = locate_database(options.get("db_dir"))
    anatomy = resolve_anatomy(options.get("anatomy", []))
    candidates = find_masks(db_json, archive_path, anatomy, options.get("region"), size=size, spacing=spacing)[:10]
    if not candidates:
        raise MaisiError("no mask in the database fits the batch's anatomy and region", "ask for fewer structures")
    refused: list[str] = []
    with MaskArchive(archive_path) as archive, tempfile.TemporaryDirectory() as work:
        for offset in range(len(candidates)):
            candidate = candidates[(position + offset) % len(candidates)]
            try:
                return load_candidate(archive, candidate.entry, size, spacing, anatomy, work), candidate.entry.mask_path
            except MaisiError as exc:
                refused.append(exc.message)
    raise MaisiError(f"none of the best database masks fits: {refused[0]}", "choose a larger size or spacing")


def _add_tumor(volume: Volume, options: dict[str, Any], rng: np.random.Generator, seed: int) -> tuple[Volume, str | None]:
    """Paper-style augmentation: with the given probability, grow a tumor of a listed type in its host."""
    from MAISIEngine.labels import TUMOR_HOSTS, TUMOR_TYPES
    from MAISIEngine.masktools.tumors import apply_tumor, tumor_from_point

    if rng.random() >= float(options.get("probability", 1.0)):
        return volume, None
    types = list(options.get("types", []))
    rng.shuffle(types)
    low, high = options.get("size_mm", [10.0, 25.0])
    for tumor_type in types:
        host = np.isin(volume.array, list(TUMOR_HOSTS[TUMOR_TYPES[tumor_type]]))
        if host.sum() < 50:
            continue
        candidates = np.argwhere(host)
        point = candidates[rng.integers(len(candidates))]
        size_mm = float(rng.uniform(low, high))
        try:
            tumor = tumor_from_point(volume.array, volume.affine, tuple(int(v) for v in point), size_mm, tumor_type,
                                     seed=seed, point_space="voxel")
        except MaisiError:
            continue
        return Volume(apply_tumor(volume.array, tumor, tumor_type, clip=True), volume.affine), tumor_type
    return volume, None


def prepare_mask(spec: BatchSpec, index: int, default_size: tuple[int, ...], default_spacing: tuple[float, ...]) -> PreparedMask:
    """The label map of sample `index`, decided by its derived seed alone."""
    seed = derive_seed(spec.base_seed, index)
    rng = np.random.default_rng(seed)
    kind, options = next(iter(spec.masks[index % len(spec.masks)].items()))
    position = index // len(spec.masks)
    if kind == "phantom":
        volume, source = _phantom_mask(options or {}, spec, seed, rng, default_size, default_spacing)
    elif kind == "folder":
        volume, source = _folder_mask(str(options), position)
    else:
        volume, source = _database_mask(options or {}, spec, position, default_size, default_spacing, seed)
    tumor = None
    if spec.tumors and spec.tumors.get("types"):
        volume, tumor = _add_tumor(volume, spec.tumors, rng, seed)
    return PreparedMask(index, volume, source, tumor)


def organ_passes(quality: dict[str, Any] | None) -> dict[str, bool]:
    """Organ name -> passed, from a quality report dictionary."""
    if not quality:
        return {}
    organs = quality.get("organs", {})
    if isinstance(organs, dict):
        return {name: bool(entry.get("passed")) for name, entry in organs.items()}
    return {entry.get("organ", str(i)): bool(entry.get("passed")) for i, entry in enumerate(organs)}


def generate_sample(spec: BatchSpec, prepared: PreparedMask, model: LoadedModel,
                    log: Callable[[str], None]) -> tuple[Any, list[dict[str, Any]]]:
    """Generate one sample, regenerating with the next derived seed while the quality check fails."""
    attempts: list[dict[str, Any]] = []
    result = None
    for attempt in range(int(spec.quality_retries) + 1):
        seed = derive_seed(spec.base_seed, prepared.index, attempt)
        request = GenerationRequest(model=spec.model, mask=prepared.volume, mask_source=prepared.source, seed=seed,
                                    steps=spec.steps, device=str(model.device), precision=spec.precision)
        result = generate(request, model=model, log=log)
        quality = result.provenance.get("quality")
        passed = None if quality is None else bool(quality.get("passed"))
        attempts.append({"attempt": attempt, "seed": seed, "quality_passed": passed})
        if passed is not False:
            break
    return result, attempts


def write_sample(out_dir: Path, spec: BatchSpec, prepared: PreparedMask, result: Any, attempts: list[dict[str, Any]],
                 rank: int) -> dict[str, Any]:
    folder = sample_dir(out_dir, prepared.index)
    provenance = {**result.provenance, "batch_index": prepared.index, "batch_fingerprint": spec.fingerprint()}
    provenance.pop("created_utc", None)
    provenance.pop("timings_s", None)
    write_outputs(folder, result.image, result.labels, provenance, spec.output_format)
    quality = result.provenance.get("quality")
    record = {
        "index": prepared.index, "seed": attempts[-1]["seed"], "base_seed": spec.base_seed, "attempts": attempts,
        "mask_source": prepared.source, "tumor": prepared.tumor,
        "quality_passed": None if quality is None else bool(quality.get("passed")),
        "organ_checks": organ_passes(quality), "rank": rank,
        "image": f"{SAMPLES_DIR}/{folder.name}/image.nii.gz", "label": f"{SAMPLES_DIR}/{folder.name}/labels.nii.gz",
        "sha256": {name: file_sha256(folder / name) for name in ("image.nii.gz", "labels.nii.gz", "provenance.json")},
    }
    write_text_atomic(folder / "sample.json", json.dumps(record, indent=2))
    return record


@dataclass
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False


def init_distributed(device_name: str) -> RankInfo:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, NCCL on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return RankInfo()
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    return RankInfo(dist.get_rank(), dist.get_world_size(), local, True)


def barrier(info: RankInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()


def run_batch(spec: BatchSpec, out_dir: Path, log: Callable[[str], None] = print,
              stop_after: int | None = None) -> dict[str, Any] | None:
    """Generate this rank's share; rank 0 then writes the manifest, report and datalist."""
    info = init_distributed(spec.device)
    out_dir = Path(out_dir)
    if info.rank == 0:
        claim_output_dir(out_dir, spec)
    barrier(info)
    if info.rank != 0:
        claim_output_dir(out_dir, spec)
    mine = [i for i in range(spec.samples) if i % info.world_size == info.rank]
    clear_partial(out_dir, mine)
    todo = [i for i in mine if finished(out_dir, i) is None]
    log(f"rank {info.rank}/{info.world_size}: {len(mine) - len(todo)} of {len(mine)} samples already done")
    if todo:
        device = resolve_device(f"cuda:{info.local_rank}" if spec.device in ("auto", "cuda") and torch.cuda.is_available()
                                else spec.device)
        preset = load_preset(spec.model)
        model = load_model(preset, device)
        size, spacing = tuple(preset.default_size), tuple(preset.default_spacing)
        with ThreadPoolExecutor(1, thread_name_prefix="masks") as masks, ThreadPoolExecutor(1, thread_name_prefix="writer") as writer:
            upcoming: Future = masks.submit(prepare_mask, spec, todo[0], size, spacing)
            pending: list[Future] = []
            for position, index in enumerate(todo):
                prepared = upcoming.result()
                if position + 1 < len(todo):
                    upcoming = masks.submit(prepare_mask, spec, todo[position + 1], size, spacing)
                tick = time.perf_counter()
                result, attempts = generate_sample(spec, prepared, model, log)
                pending.append(writer.submit(write_sample, out_dir, spec, prepared, result, attempts, info.rank))
                log(f"rank {info.rank}: sample {index} seed {attempts[-1]['seed']} in {time.perf_counter() - tick:.1f} s")
                if stop_after is not None and position + 1 >= stop_after:
                    break
            for future in pending:
                future.result()
    barrier(info)
    if info.rank != 0:
        return None
    from MAISIEngine.batch.datalist import write_datalist
    from MAISIEngine.batch.report import write_manifest_and_report

    report = write_manifest_and_report(out_dir, spec)
    if report["complete"]:
        write_datalist(out_dir, spec)
    return report
