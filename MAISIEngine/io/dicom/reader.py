"""Reading DICOM back: a CT series as an (i, j, k) array with its RAS affine, and a DICOM SEG as a
MAISI label map, so `maisi generate --mask` accepts what hospital systems hold.

Segments map to MAISI ids by their label (a MAISI name), else by their coded terminology when it
names exactly one MAISI label. A folder must hold the CT series the SEG references; a SEG file alone
is placed on that series when it lies beside the file, else on the SEG's own frame geometry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import SegmentationStorage

from MAISIEngine.errors import MaisiError
from MAISIEngine.io.dicom.geometry import RAS_TO_LPS, affine_from_slices
from MAISIEngine.io.terminology import Code, label_id_for_codes
from MAISIEngine.labels import id_of

POSITION_TOLERANCE_MM = 1e-2
SEG_SOP_CLASSES = frozenset({
    str(SegmentationStorage),
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage (DICOM 2024)
})


@dataclass(frozen=True)
class _Header:
    path: Path
    dataset: Dataset  # read without pixel data


def _read_header(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - pydicom raises many types for random bytes after a DICM preamble
        return None


def _scan(folder: Path, recursive: bool = True) -> list[_Header]:
    """Every DICOM file in `folder` (and its subfolders), headers only; other files are skipped."""
    headers = []
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    for path in sorted(p for p in candidates if p.is_file() and not p.name.startswith(".")):
        ds = _read_header(path)
        if ds is not None and "SOPClassUID" in ds:
            headers.append(_Header(path, ds))
    return headers


def _is_image_slice(ds: Dataset) -> bool:
    return all(k in ds for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows"))


def _image_series(headers: Iterable[_Header]) -> dict[str, list[_Header]]:
    series: dict[str, list[_Header]] = {}
    for h in headers:
        if str(h.dataset.SOPClassUID) not in SEG_SOP_CLASSES and _is_image_slice(h.dataset):
            series.setdefault(str(h.dataset.SeriesInstanceUID), []).append(h)
    return series


def _sorted_slices(slices: Sequence[_Header]) -> tuple[list[_Header], np.ndarray]:
    """Slices in stacking order (instance order when it is monotonic in position, else ascending
    along the slice normal) and their positions; a gap, a duplicate or a tilt is refused."""
    first = slices[0].dataset
    orientation = np.asarray([float(v) for v in first.ImageOrientationPatient])
    for h in slices:
        same = np.allclose([float(v) for v in h.dataset.ImageOrientationPatient], orientation, atol=1e-4)
        if not same or h.dataset.Rows != first.Rows or h.dataset.Columns != first.Columns:
            raise MaisiError(f"series {first.SeriesInstanceUID} mixes slice orientations or sizes",
                             "export a single, regular CT series")
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.asarray([[float(v) for v in h.dataset.ImagePositionPatient] for h in slices])
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    instance = [int(getattr(h.dataset, "InstanceNumber", 0) or 0) for h in slices]
    by_instance = np.argsort(instance, kind="stable")
    steps = np.diff(distance[by_instance])
    if len(set(instance)) == len(instance) and len(steps) and (np.all(steps > 0) or np.all(steps < 0)):
        order = by_instance
    ordered = [slices[i] for i in order]
    positions = positions[order]
    if len(ordered) > 1:
        gaps = np.diff(positions, axis=0)
        if np.any(np.linalg.norm(gaps, axis=1) < POSITION_TOLERANCE_MM):
            raise MaisiError(f"series {first.SeriesInstanceUID} has two slices at one position",
                             "remove duplicate slices from the folder")
        if not np.allclose(gaps, gaps[0], atol=max(POSITION_TOLERANCE_MM, 1e-3 * np.linalg.norm(gaps[0]))):
            raise MaisiError(f"series {first.SeriesInstanceUID} has unevenly spaced slices (missing slices?)",
                             "give a complete series with regular slice spacing")
    return ordered, positions


def _series_affine(ordered: Sequence[_Header], positions: np.ndarray) -> np.ndarray:
    first = ordered[0].dataset
    affine = affine_from_slices([float(v) for v in first.ImageOrientationPatient],
                                [float(v) for v in first.PixelSpacing], positions)
    if len(ordered) == 1:
        thickness = float(getattr(first, "SpacingBetweenSlices", 0) or getattr(first, "SliceThickness", 0) or 1.0)
        affine[:3, 2] *= thickness
    return affine


def _pick_series(series: dict[str, list[_Header]], folder: Path, series_uid: str | None) -> list[_Header]:
    if series_uid is not None:
        if series_uid not in series:
            raise MaisiError(f"series {series_uid} is not in {folder}", "check the folder and the series UID")
        return series[series_uid]
    if not series:
        raise MaisiError(f"no DICOM image series found in {folder}", "give a folder holding a CT series")
    if len(series) > 1:
        described = ", ".join(f"{uid} ({len(s)} slices)" for uid, s in series.items())
        raise MaisiError(f"{folder} holds several image series: {described}", "give a folder with one series")
    return next(iter(series.values()))


def _load_series(slices: Sequence[_Header]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    ordered, positions = _sorted_slices(slices)
    first = ordered[0].dataset
    shape = (int(first.Columns), int(first.Rows), len(ordered))
    _check_series_budget(shape)
    volume = np.empty(shape, dtype=np.float64)
    for k, h in enumerate(ordered):
        ds = pydicom.dcmread(h.path)
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        volume[:, :, k] = (ds.pixel_array.astype(np.float64) * slope + intercept).T
    if np.array_equal(volume, np.round(volume)) and volume.min() >= -32768 and volume.max() <= 32767:
        array = volume.astype(np.int16)
    else:
        array = volume.astype(np.float32)
    uids = [str(h.dataset.SOPInstanceUID) for h in ordered]
    return array, _series_affine(ordered, positions), uids


def read_dicom_ct(folder: str | Path, series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A CT series from a folder as (HU array in (i, j, k), 4x4 RAS affine), slices sorted by position."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MaisiError(f"{folder} is not a folder", "give the folder holding the CT series")
    array, affine, _ = _load_series(_pick_series(_image_series(_scan(folder)), folder, series_uid))
    return array, affine


def _segment_label_ids(seg: Dataset, source: Path) -> dict[int, int]:
    """Segment number -> MAISI id, by segment label, else by a terminology naming exactly one label."""
    mapping: dict[int, int] = {}
    unmapped = []
    for item in seg.SegmentSequence:
        number, label = int(item.SegmentNumber), str(getattr(item, "SegmentLabel", ""))
        try:
            mapping[number] = id_of(label)
            continue
        except KeyError:
            pass
        label_id = label_id_for_codes(*_segment_codes(item))
        if label_id is None:
            unmapped.append(f"{number} '{label}'")
        else:
            mapping[number] = label_id
    if unmapped:
        raise MaisiError(f"segments of {source.name} match no MAISI label: {', '.join(unmapped[:8])}",
                         "name the segments with MAISI label names, e.g. 'liver' or 'left kidney'")
    return mapping


def _code(item: Dataset | None) -> Code | None:
    if item is None:
        return None
    return Code(str(item.CodingSchemeDesignator), str(item.CodeValue), str(getattr(item, "CodeMeaning", "")))


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    seq = getattr(ds, keyword, None)
    return seq[0] if seq else None


def _segment_codes(item: Dataset) -> tuple[Code, Code, Code | None, Code | None, Code | None]:
    category = _first(item, "SegmentedPropertyCategoryCodeSequence")
    type_ = _first(item, "SegmentedPropertyTypeCodeSequence")
    region = _first(item, "AnatomicRegionSequence")
    return (
        _code(category),  # type: ignore[return-value]
        _code(type_),  # type: ignore[return-value]
        _code(_first(type_, "SegmentedPropertyTypeModifierCodeSequence")) if type_ is not None else None,
        _code(region),
        _code(_first(region, "AnatomicRegionModifierSequence")) if region is not None else None,
    )


def _check_series_budget(shape: tuple[int, int, int]) -> None:
    """Refuse a series whose headers promise more voxels than any volume we read, before allocating it."""
    from MAISIEngine.io.nifti import MAX_INPUT_VOXELS

    if min(shape) < 1 or shape[0] * shape[1] * shape[2] > MAX_INPUT_VOXELS // 4:  # read as float64
        raise MaisiError(f"the DICOM series is {shape[0]}x{shape[1]}x{shape[2]} voxels, too large to read",
                         f"at most {MAX_INPUT_VOXELS // 4} voxels; crop or resample it")


def _check_frame_budget(header: Dataset, path: Path) -> None:
    """Refuse a SEG whose header promises more voxels than any volume we read, before its pixels are."""
    from MAISIEngine.io.nifti import MAX_INPUT_VOXELS

    try:
        rows, columns = int(header.Rows), int(header.Columns)
        frames = int(getattr(header, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise MaisiError(f"{path.name} lacks valid Rows / Columns / NumberOfFrames",
                         "give a DICOM SEG written by a DICOM tool") from None
    if min(rows, columns, frames) < 1 or rows * columns * frames > MAX_INPUT_VOXELS:
        raise MaisiError(f"{path.name} declares {frames} frames of {rows}x{columns} pixels",
                         f"a SEG may hold at most {MAX_INPUT_VOXELS} voxels; export a smaller one")


def _read_seg(path: Path):
    import highdicom as hd

    header = _read_header(path)
    if header is None:
        raise MaisiError(f"{path} is not a readable DICOM file", "give a DICOM SEG file or a folder with CT + SEG")
    if "SOPClassUID" not in header:
        raise MaisiError(f"{path.name} is not a readable DICOM object (it names no SOP class)",
                         "give a DICOM SEG file or a folder with CT + SEG")
    if str(header.SOPClassUID) not in SEG_SOP_CLASSES:
        raise MaisiError(f"{path.name} is not a DICOM Segmentation (SOP class {header.SOPClassUID})",
                         "give a DICOM SEG file, or a folder holding a CT series and its SEG")
    _check_frame_budget(header, path)
    try:
        return hd.seg.segread(path)
    except Exception as exc:  # highdicom raises several types for malformed SEGs
        raise MaisiError(f"cannot read the DICOM SEG {path.name} ({exc})", "check the file with dciodvfy") from None


def _referenced_series(seg: Dataset) -> str | None:
    item = _first(seg, "ReferencedSeriesSequence")
    return str(item.SeriesInstanceUID) if item is not None else None


def _labels_on_series(seg, mapping: dict[int, int], sop_uids: Sequence[str], shape: tuple[int, int, int]) -> np.ndarray:
    """The SEG's segments painted onto the referenced series' (i, j, k) grid as MAISI ids."""
    lut = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for number, label_id in mapping.items():
        lut[number] = label_id
    try:
        numbers = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(sop_uids), combine_segments=True,
                                                    relabel=False, dtype=np.uint16)
    except ValueError:
        # Overlapping segments: paint them in segment order, a later segment winning where they overlap.
        numbers = np.zeros((len(sop_uids), shape[1], shape[0]), dtype=np.uint16)
        for number in mapping:
            mask = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(sop_uids),
                                                     segment_numbers=[number], dtype=np.uint8)[..., 0]
            numbers[mask > 0] = number
    labels = lut[numbers]  # (k, rows = j, columns = i)
    return np.ascontiguousarray(np.transpose(labels, (2, 1, 0)))


def _labels_from_seg_geometry(seg, mapping: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A SEG without its CT: the grid spanned by the SEG's own frames."""
    try:
        volume = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint16)
    except Exception as exc:
        raise MaisiError(f"the DICOM SEG's frames do not form a regular volume ({exc})",
                         "give the folder holding the SEG together with the CT series it references") from None
    lut = np.zeros(max(max(mapping) + 1, int(volume.array.max()) + 1), dtype=np.uint8)
    for number, label_id in mapping.items():
        lut[number] = label_id
    labels = np.transpose(lut[np.asarray(volume.array)], (2, 1, 0))  # (slice, row, column) -> (i, j, k)
    affine = RAS_TO_LPS @ np.asarray(volume.affine, dtype=np.float64)[:, [2, 1, 0, 3]]
    if np.linalg.det(affine[:3, :3]) < 0:
        # Stack slices along row x column, as the CT series of an export does, not against it.
        labels = labels[:, :, ::-1]
        flip = np.eye(4)
        flip[2, 2], flip[2, 3] = -1.0, labels.shape[2] - 1
        affine = affine @ flip
    return np.ascontiguousarray(labels), affine


def _check_references(seg, series: Sequence[_Header], seg_path: Path) -> None:
    present = {str(h.dataset.SOPInstanceUID) for h in series}
    wanted = set()
    for series_item in getattr(seg, "ReferencedSeriesSequence", []):
        for instance in getattr(series_item, "ReferencedInstanceSequence", []):
            wanted.add(str(instance.ReferencedSOPInstanceUID))
    missing = wanted - present
    if missing:
        raise MaisiError(f"{len(missing)} CT slices referenced by {seg_path.name} are missing from the series",
                         "copy the complete CT series next to the SEG")
    seg_frame = str(getattr(seg, "FrameOfReferenceUID", ""))
    ct_frame = str(getattr(series[0].dataset, "FrameOfReferenceUID", ""))
    if seg_frame and ct_frame and seg_frame != ct_frame:
        raise MaisiError(f"{seg_path.name} and its CT series have different frames of reference",
                         "give the CT series the SEG was made on")


def read_dicom_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A MAISI label map (uint8 ids in (i, j, k)) and its RAS affine from a DICOM SEG or a CT + SEG folder."""
    path = Path(path)
    if path.is_dir():
        headers = _scan(path)
        segs = [h for h in headers if str(h.dataset.SOPClassUID) in SEG_SOP_CLASSES]
        if not segs:
            raise MaisiError(f"no DICOM SEG file found in {path}", "give a folder holding a CT series and its SEG")
        if len(segs) > 1:
            raise MaisiError(f"{path} holds {len(segs)} DICOM SEG files", "give the SEG file itself instead of the folder")
        seg_path, require_series = segs[0].path, True
    elif path.is_file():
        headers, seg_path, require_series = None, path, False
    else:
        raise MaisiError(f"{path} does not exist", "give a DICOM SEG file or a folder with CT + SEG")
    seg = _read_seg(seg_path)
    mapping = _segment_label_ids(seg, seg_path)
    series_uid = _referenced_series(seg)
    if headers is None:
        headers = _scan(seg_path.parent, recursive=False)
    series = _image_series(headers).get(series_uid or "")
    if series is None:
        if require_series:
            raise MaisiError(f"the CT series {series_uid} that {seg_path.name} references is not in {path}",
                             "put the referenced CT series in the same folder as the SEG")
        return _labels_from_seg_geometry(seg, mapping)
    _check_references(seg, series, seg_path)
    ordered, positions = _sorted_slices(series)
    first = ordered[0].dataset
    shape = (int(first.Columns), int(first.Rows), len(ordered))
    labels = _labels_on_series(seg, mapping, [str(h.dataset.SOPInstanceUID) for h in ordered], shape)
    return labels, _series_affine(ordered, positions)
