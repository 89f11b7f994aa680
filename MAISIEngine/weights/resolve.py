"""Where a preset's weight file is on this machine, whatever kind of model the preset describes.

- "official": NVIDIA's files, in the user's weights cache (downloaded or imported);
- "package": files shipped inside the engine, under `MAISIEngine/assets/<preset name>/`;
- "directory": a model directory written by training, holding `preset.json` beside its weights.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import NamedTuple

from MAISIEngine.errors import MaisiError, WeightsMissingError
from MAISIEngine.presets import Preset
from MAISIEngine.weights import cache
from MAISIEngine.weights.manifest import entry_by_name, entry_for_filename


class WeightState(NamedTuple):
    path: Path
    present: bool
    verified: bool  # its sha256 matched a published one (only official files have one)


def _filename(preset: Preset, role: str) -> str:
    try:
        return preset.weights[role]
    except KeyError:
        raise MaisiError(
            f"model '{preset.name}' names no weight file for the {role}",
            f"add \"{role}\": FILE under \"weights\" in its preset",
        ) from None


def confined(folder: Path, filename: str, preset: Preset, what: str) -> Path:
    """`folder / filename`, refused when it (or a symlink on the way) leads outside `folder`."""
    path = folder / filename
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        inside = False
    if Path(filename).is_absolute() or ".." in Path(filename).parts or not inside:
        raise MaisiError(f"model '{preset.name}': the weight path {filename!r} leads outside its {what}",
                         "keep the weight files inside the model folder and name them relatively")
    return path


def _package_path(preset: Preset, filename: str) -> Path:
    folder = Path(str(resources.files("MAISIEngine").joinpath("assets", preset.name)))
    return confined(folder, filename, preset, "package folder")


def _directory_path(preset: Preset, filename: str) -> Path:
    if preset.source_path is None:
        raise MaisiError(
            f"model '{preset.name}' keeps its weights in its model directory, but it was not loaded from one",
            "load it with the path of the model directory (the folder holding preset.json)",
        )
    folder = Path(preset.source_path).parent
    return confined(folder, filename, preset, "model directory")


def _official_state(preset: Preset, role: str) -> tuple[cache.FileStatus, str]:
    filename = _filename(preset, role)
    return cache.status_of(entry_for_filename(filename)), filename


def resolve_weight_path(preset: Preset, role: str) -> Path:
    """The file holding the weights of `role` for `preset`; a clear error when it is not there."""
    source = preset.weights_source
    if source == "official":
        state, filename = _official_state(preset, role)
        name = state.entry.name
        if state.status == cache.MISSING:
            raise WeightsMissingError(
                f"the {role} weights of model '{preset.name}' ({filename}) are not downloaded",
                f"run `maisi weights download {preset.name}`; offline, copy the files to this machine and run "
                "`maisi weights import DIR`",
            )
        if state.status == cache.CORRUPT:
            raise MaisiError(
                f"the cached {filename} is damaged (its size or hash differs from when it was recorded): {state.path}",
                f"run `maisi weights download {name}` to fetch it again",
            )
        return state.path
    return resolve_model_file(preset, _filename(preset, role), role)


def resolve_model_file(preset: Preset, filename: str, role: str) -> Path:
    """A file that ships with a package or directory model (e.g. its inpainting ControlNet)."""
    source = preset.weights_source
    if source == "package":
        path = _package_path(preset, filename)
        if not path.is_file():
            raise WeightsMissingError(
                f"the {role} weights of model '{preset.name}' ({filename}) are missing from this installation ({path})",
                "reinstall maisi-engine (`pip install --force-reinstall maisi-engine`)",
            )
        return path
    if source == "directory":
        path = _directory_path(preset, filename)
        if not path.is_file():
            raise WeightsMissingError(
                f"the {role} weights of model '{preset.name}' are missing: {path} does not exist",
                "train that stage first (`maisi train`), or copy the file into the model directory",
            )
        return path
    raise MaisiError(
        f"model '{preset.name}' has an unknown weights_source '{source}'",
        "use \"official\", \"package\" or \"directory\" in its preset",
    )


def cached_file(name: str) -> Path:
    """The cached path of one official file (e.g. the mask database), by manifest name or file name."""
    entry = entry_by_name(name)
    if entry is None:
        raise MaisiError(f"'{name}' is not one of the official MAISI files", "see `maisi weights list`")
    state = cache.status_of(entry)
    if state.status == cache.MISSING:
        raise WeightsMissingError(
            f"{entry.filename} is not in the cache", f"run `maisi weights download {entry.name}`"
        )
    if state.status == cache.CORRUPT:
        raise MaisiError(
            f"the cached {entry.filename} is damaged: {state.path}", f"run `maisi weights download {entry.name}`"
        )
    return state.path


def weights_status(preset: Preset) -> dict[str, WeightState]:
    """For each role of the preset: where its file is (or would be), whether it is there, whether verified."""
    result: dict[str, WeightState] = {}
    registry = cache.load_registry() if preset.weights_source == "official" else {}
    for role, filename in preset.weights.items():
        if preset.weights_source == "official":
            state = cache.status_of(entry_for_filename(filename), registry)
            present = state.status in (cache.PRESENT, cache.VERIFIED)
            result[role] = WeightState(state.path, present, state.status == cache.VERIFIED)
        elif preset.weights_source == "package":
            path = _package_path(preset, filename)
            result[role] = WeightState(path, path.is_file(), False)
        else:
            path = _directory_path(preset, filename)
            result[role] = WeightState(path, path.is_file(), False)
    return result
