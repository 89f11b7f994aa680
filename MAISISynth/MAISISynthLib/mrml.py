"""The bridge between MRML nodes and the engine's files: label maps, volumes, results, exports.

Imports `slicer` (works in the Slicer application and with PyPI `slicer-core`), never Qt and never
torch. Segments are matched to MAISI label ids by name (MAISI names, or TotalSegmentator names), and
label maps are exported through a colour table holding exactly those ids, so "liver, hepatic tumor,
body" become 1, 26 and 200, never 1..N. Files are read and written through Slicer's storage nodes,
which convert between Slicer's RAS and the LPS of ITK-written files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import atomic_path

from . import editing
from .hierarchy import (  # noqa: F401  (part of this module's API)
    PATIENT_ID,
    PATIENT_NAME,
    new_synthetic_study,
    place_in_study,
    remove_nodes_and_empty_parents,
    remove_with_display,
    study_of,
    subject_hierarchy,
    synthetic_patient_item,
)
from .geometry import affine_from_ijk_to_ras, compose, ijk_to_ras_from_affine

COLOR_TABLE_NAME = "MAISI labels"
LABEL_ID_TAG = "MAISI.labelId"
"""Segment tag holding the MAISI id, so a renamed segment keeps its label."""
ATTRIBUTE_PREFIX = "MAISI."
CT_WINDOW_LEVEL = (400.0, 40.0)
"""Soft-tissue window/level of a generated CT; lung and bone windows are added as presets."""
CT_WINDOW_LEVEL_PRESETS = ((400.0, 40.0), (1500.0, -600.0), (1800.0, 400.0))
VOLUME_RENDERING_PRESET = "CT-Chest-Contrast-Enhanced"
DEFAULT_TERMINOLOGY_CONTEXT = "Segmentation category and type - MAISI"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
TERMINOLOGY_PACKAGE, TERMINOLOGY_FILE = "MAISIEngine.data", "maisi_terminology.json"
SLICER_TERMINOLOGY_FILE = Path(__file__).resolve().parents[1] / "Resources" / "maisi.term.json"


def _scene(scene: Any | None) -> Any:
    return scene if scene is not None else slicer.mrmlScene


# ---------------------------------------------------------------------------------------------------
# Geometry


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(array[row, col]))
    return matrix


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_affine(volume_node: Any) -> np.ndarray:
    """The NIfTI (RAS) affine of a volume node."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return affine_from_ijk_to_ras(numpy_matrix(matrix))


def set_node_affine(volume_node: Any, affine: np.ndarray) -> None:
    """Place a volume node's voxels where a NIfTI affine puts them."""
    volume_node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras_from_affine(affine)))


def volume_from_array(
    array_ijk: np.ndarray, affine: np.ndarray, name: str, labelmap: bool = False, scene: Any | None = None
) -> Any:
    """A new volume node holding a nibabel-ordered (i, j, k) array on the grid of `affine`."""
    scene = _scene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.transpose(array_ijk, (2, 1, 0))))
    set_node_affine(node, affine)
    node.CreateDefaultDisplayNodes()
    return node


def array_ijk(volume_node: Any) -> np.ndarray:
    """A volume node's voxels in nibabel's (i, j, k) order (a copy)."""
    return np.ascontiguousarray(np.transpose(slicer.util.arrayFromVolume(volume_node), (2, 1, 0)))


# ---------------------------------------------------------------------------------------------------
# Files (storage nodes: the same readers and writers the application uses)


def read_volume_file(path: str | Path, name: str | None = None, labelmap: bool = False, scene: Any | None = None,
                     keep_storage: bool = False) -> Any:
    """Load a NIfTI (or any ITK-readable) volume into a new node; MaisiError if it cannot be read.

    The files read are a job's outputs in a temporary folder that is removed after the job, so by
    default the node keeps no storage node pointing there: Slicer's Save dialog then writes its data
    instead of referring to a file that no longer exists.
    """
    scene = _scene(scene)
    path = Path(path)
    if not path.is_file():
        raise MaisiError(f"{path} does not exist", "the generation may have been cancelled; run it again")
    node_name = name or path.name.split(".")[0]
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", node_name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise MaisiError(f"cannot read {path.name} as a volume", "the file may be damaged; generate it again")
    if keep_storage:
        node.SetAndObserveStorageNodeID(storage.GetID())
    else:
        scene.RemoveNode(storage)
    node.CreateDefaultDisplayNodes()
    return node


def write_volume_file(volume_node: Any, path: str | Path) -> Path:
    """Write a volume node (scalar or label map) to NIfTI atomically: a reader never sees half a file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.unlink()  # the writer creates the file itself
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(tmp))
        storage.SetUseCompression(path.suffix == ".gz")
        if not storage.WriteData(volume_node):
            raise MaisiError(f"cannot write {path}", "check that the folder is writable and the disk not full")
    return path


# ---------------------------------------------------------------------------------------------------
# Terminology (standard codes for the MAISI labels)


@dataclass(frozen=True)
class Code:
    scheme: str
    value: str
    meaning: str

    def text(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


EMPTY_CODE = Code("", "", "")


@dataclass(frozen=True)
class Terminology:
    """The coded category/type (and optional modifier and anatomic region) of one MAISI label."""

    category: Code
    type: Code
    type_modifier: Code = EMPTY_CODE
    region: Code = EMPTY_CODE
    region_modifier: Code = EMPTY_CODE

    def entry_string(self) -> str:
        """Slicer's serialized terminology entry, as `vtkSegment.SetTerminology` takes it."""
        return "~".join([
            terminology_context_name(), self.category.text(), self.type.text(), self.type_modifier.text(),
            ANATOMIC_CONTEXT, self.region.text(), self.region_modifier.text(),
        ])


def _code(raw: Any) -> Code:
    """A code given as [scheme, value, meaning] (the engine's table) or as a DICOM-style mapping."""
    if isinstance(raw, (list, tuple)) and len(raw) == 3:
        return Code(*(str(part) for part in raw))
    if isinstance(raw, dict):
        return Code(str(raw.get("CodingSchemeDesignator", "")), str(raw.get("CodeValue", "")),
                    str(raw.get("CodeMeaning", "")))
    return EMPTY_CODE


def _terminology_from_entry(raw: dict[str, Any]) -> Terminology:
    return Terminology(
        _code(raw.get("category")), _code(raw.get("type")), _code(raw.get("type_modifier")),
        _code(raw.get("anatomic_region")), _code(raw.get("anatomic_region_modifier")),
    )


@lru_cache(maxsize=1)
def maisi_terminology() -> dict[int, Terminology]:
    """Standard codes of every MAISI label, read once from the engine's terminology table.

    Labels the table does not code get its generic fallback, so every segment carries a terminology.
    """
    try:
        text = resources.files(TERMINOLOGY_PACKAGE).joinpath(TERMINOLOGY_FILE).read_text()
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        return {}
    document = json.loads(text)
    table = {int(key): _terminology_from_entry(raw) for key, raw in document.get("labels", {}).items()}
    fallback = document.get("generic_fallback")
    if fallback:
        for label_id in maisi_labels.valid_ids():
            if label_id and label_id not in table:
                table[label_id] = _terminology_from_entry(fallback)
    return table


@lru_cache(maxsize=1)
def terminology_context_name() -> str:
    """The context name of the module's `.term.json`, so Slicer's terminology editor finds the entries."""
    if SLICER_TERMINOLOGY_FILE.is_file():
        name = json.loads(SLICER_TERMINOLOGY_FILE.read_text()).get("SegmentationCategoryTypeContextName")
        if name:
            return str(name)
    return DEFAULT_TERMINOLOGY_CONTEXT


def terminology_of(label_id: int) -> Terminology | None:
    return maisi_terminology().get(int(label_id))


# ---------------------------------------------------------------------------------------------------
# Colour table and segments


def maisi_color_node(scene: Any | None = None) -> Any:
    """The scene's colour table of MAISI labels (created once): index = MAISI id, name, colour, codes."""
    scene = _scene(scene)
    existing = scene.GetFirstNodeByName(COLOR_TABLE_NAME)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_TABLE_NAME)
    node.SetTypeToUser()
    node.SetAttribute("Category", "MAISI")
    table = maisi_labels.color_table()
    node.SetNumberOfColors(max(table) + 1)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for label_id in range(1, max(table) + 1):
        if label_id not in table:
            node.SetColor(label_id, "", 0.0, 0.0, 0.0, 0.0)
            continue
        name, rgb = table[label_id]
        node.SetColor(label_id, name, rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0, 1.0)
        codes = terminology_of(label_id)
        if codes is not None:
            node.SetTerminology(
                label_id, codes.category.scheme, codes.category.value, codes.category.meaning,
                codes.type.scheme, codes.type.value, codes.type.meaning,
                codes.type_modifier.scheme, codes.type_modifier.value, codes.type_modifier.meaning,
                codes.region.scheme, codes.region.value, codes.region.meaning,
                codes.region_modifier.scheme, codes.region_modifier.value, codes.region_modifier.meaning,
            )
    return node


@lru_cache(maxsize=1)
def _totalsegmentator_names() -> dict[str, int]:
    """TotalSegmentator class names (v1 and v2) -> MAISI ids, for segmentations made with it."""
    from MAISIEngine.masktools.totalseg import mapping_table

    out: dict[str, int] = {}
    for version in ("v1", "v2"):
        for entry in mapping_table(version).values():
            if entry.maisi_id is not None:
                out.setdefault(entry.name.lower(), int(entry.maisi_id))
    return out


def label_id_of_name(name: str) -> int | None:
    """The MAISI id a segment name stands for (MAISI or TotalSegmentator naming), or None."""
    text = name.strip()
    try:
        label_id = maisi_labels.id_of(text)
    except KeyError:
        label_id = _totalsegmentator_names().get(text.lower().replace(" ", "_"))
    if label_id is None or label_id not in maisi_labels.valid_ids() or label_id == 0:
        return None
    return int(label_id)


def segment_label_id(segment: Any) -> int | None:
    """A segment's MAISI id: from its name first, else from the id tag it was created with."""
    by_name = label_id_of_name(segment.GetName())
    if by_name is not None:
        return by_name
    tag = vtk.reference("")
    if segment.GetTag(LABEL_ID_TAG, tag):
        try:
            value = int(str(tag))
        except ValueError:
            return None
        return value if value in maisi_labels.valid_ids() and value != 0 else None
    return None


def describe_segment(segment: Any, label_id: int) -> None:
    """Give a segment the MAISI name's colour, id tag, label value and standard terminology."""
    rgb = maisi_labels.color_of(label_id)
    segment.SetColor(rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)
    segment.SetLabelValue(int(label_id))
    segment.SetTag(LABEL_ID_TAG, str(int(label_id)))
    codes = terminology_of(label_id)
    if codes is not None:
        segment.SetTerminology(codes.entry_string())


def segment_ids(segmentation_node: Any) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


# ---------------------------------------------------------------------------------------------------
# Segmentation <-> MAISI label map


def segmentation_to_labelmap(
    segmentation_node: Any,
    reference_volume: Any | None = None,
    name: str | None = None,
    exclude_segment_ids: tuple[str, ...] = (),
    scene: Any | None = None,
) -> Any:
    """A label map volume whose values are the MAISI ids the segments are named after.

    Uses the reference volume's grid when given, else the segmentation's own reference geometry.
    Segments whose names are no MAISI label are refused, listed by name, before anything is written.
    """
    scene = _scene(scene)
    segmentation = segmentation_node.GetSegmentation()
    ids = [sid for sid in segment_ids(segmentation_node) if sid not in exclude_segment_ids]
    if not ids:
        raise MaisiError(
            f"segmentation '{segmentation_node.GetName()}' has no segments",
            "add segments named after MAISI labels (e.g. liver, body), or start from a template",
        )
    table: dict[int, str] = {}
    unknown: list[str] = []
    duplicates: list[str] = []
    for sid in ids:
        segment = segmentation.GetSegment(sid)
        label_id = segment_label_id(segment)
        if label_id is None:
            unknown.append(segment.GetName())
        elif label_id in table:
            duplicates.append(f"{table[label_id]} / {segment.GetName()}")
        else:
            table[label_id] = segment.GetName()
    if unknown:
        raise MaisiError(
            f"segments without a MAISI label name: {', '.join(repr(n) for n in unknown)}",
            "rename them to MAISI labels (e.g. 'liver', 'hepatic tumor', 'body'; see the label list) or delete them",
        )
    if duplicates:
        raise MaisiError(
            f"several segments stand for the same MAISI label: {', '.join(duplicates)}",
            "merge them into one segment (Segment Editor > Logical operators > Add)",
        )
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "MAISI export table")
    try:
        colors.SetTypeToUser()
        colors.SetNumberOfColors(max(table) + 1)
        for value in range(max(table) + 1):
            colors.SetColor(value, "", 0.0, 0.0, 0.0, 0.0)
        for label_id, segment_name in table.items():
            rgb = maisi_labels.color_of(label_id)
            colors.SetColor(label_id, segment_name, rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0, 1.0)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name or f"{segmentation_node.GetName()} MAISI labels")
        string_ids = vtk.vtkStringArray()
        for sid in ids:
            string_ids.InsertNextValue(sid)
        extent = slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        logic = slicer.modules.segmentations.logic()
        if not logic.ExportSegmentsToLabelmapNode(segmentation_node, string_ids, labelmap, reference_volume, extent, colors):
            remove_with_display(labelmap)
            raise MaisiError(
                f"could not turn segmentation '{segmentation_node.GetName()}' into a label map",
                "set its geometry (Segment Editor > Specify geometry) or choose a reference volume",
            )
    finally:
        scene.RemoveNode(colors)
    if labelmap.GetDisplayNode() is None:
        labelmap.CreateDefaultDisplayNodes()
    labelmap.GetDisplayNode().SetAndObserveColorNodeID(maisi_color_node(scene).GetID())
    return labelmap


def labelmap_to_segmentation(
    labelmap_node: Any, segmentation_node: Any | None = None, name: str | None = None, scene: Any | None = None
) -> Any:
    """Segments for the MAISI ids in a label map, with MAISI names, colours, label values and codes."""
    scene = _scene(scene)
    values = np.unique(slicer.util.arrayFromVolume(labelmap_node))
    unknown = sorted(int(v) for v in values if int(v) not in maisi_labels.valid_ids())
    if unknown:
        raise MaisiError(
            f"label map '{labelmap_node.GetName()}' holds ids that are no MAISI label: {unknown[:10]}",
            "use MAISI label ids (1..132 and body = 200), e.g. convert TotalSegmentator output with `maisi masks import-totalseg`",
        )
    if labelmap_node.GetDisplayNode() is None:
        labelmap_node.CreateDefaultDisplayNodes()
    previous_colors = labelmap_node.GetDisplayNode().GetColorNodeID()
    labelmap_node.GetDisplayNode().SetAndObserveColorNodeID(maisi_color_node(scene).GetID())
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or labelmap_node.GetName())
        segmentation_node.CreateDefaultDisplayNodes()
    before = set(segment_ids(segmentation_node))
    ok = slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap_node, segmentation_node)
    if previous_colors:
        labelmap_node.GetDisplayNode().SetAndObserveColorNodeID(previous_colors)
    if not ok:
        raise MaisiError(f"could not import label map '{labelmap_node.GetName()}'", "check that it is a 3D label map")
    segmentation = segmentation_node.GetSegmentation()
    for sid in segment_ids(segmentation_node):
        if sid in before:
            continue
        segment = segmentation.GetSegment(sid)
        label_id = int(segment.GetLabelValue())
        segment.SetName(maisi_labels.name_of(label_id))
        describe_segment(segment, label_id)
    return segmentation_node


def labelmap_file_to_segmentation(path: str | Path, name: str, scene: Any | None = None) -> Any:
    """Load a MAISI label map file as a segmentation node (the temporary label map node is removed)."""
    scene = _scene(scene)
    labelmap = read_volume_file(path, name=f"{name} (label map)", labelmap=True, scene=scene)
    try:
        segmentation = labelmap_to_segmentation(labelmap, name=name, scene=scene)
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(labelmap)
    finally:
        remove_with_display(labelmap)
    return segmentation


def add_tumor_segment(segmentation_node: Any, tumor_type: str) -> str:
    """Add (or find) the empty segment of a tumor type, ready to be painted; returns its segment id."""
    key = tumor_type.strip().lower()
    if key not in maisi_labels.TUMOR_TYPES:
        raise MaisiError(f"unknown tumor type '{tumor_type}'", f"use one of {', '.join(maisi_labels.TUMOR_TYPES)}")
    label_id = maisi_labels.TUMOR_TYPES[key]
    segmentation = segmentation_node.GetSegmentation()
    for sid in segment_ids(segmentation_node):
        if segment_label_id(segmentation.GetSegment(sid)) == label_id:
            return sid
    name = maisi_labels.name_of(label_id)
    rgb = maisi_labels.color_of(label_id)
    sid = segmentation.AddEmptySegment("", name, [c / 255.0 for c in rgb])
    describe_segment(segmentation.GetSegment(sid), label_id)
    return sid


def tumor_segment_ids(segmentation_node: Any) -> list[str]:
    """Segments that stand for one of the MAISI tumor labels."""
    tumor_ids = set(maisi_labels.TUMOR_TYPES.values())
    segmentation = segmentation_node.GetSegmentation()
    return [sid for sid in segment_ids(segmentation_node) if segment_label_id(segmentation.GetSegment(sid)) in tumor_ids]


def segment_mask_to_file(segmentation_node: Any, segment_id: str, reference_volume: Any, path: str | Path,
                         scene: Any | None = None) -> Path:
    """Write one segment as a 0/1 mask on the reference volume's grid (the tumor mask of inpainting)."""
    scene = _scene(scene)
    if slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference_volume).max() == 0:
        name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
        raise MaisiError(f"segment '{name}' is empty", "paint the tumor with the Segment Editor first")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference_volume)
    node = volume_from_array(np.transpose(mask, (2, 1, 0)).astype(np.uint8), node_affine(reference_volume),
                             "tumor mask", labelmap=True, scene=scene)
    try:
        return write_volume_file(node, path)
    finally:
        scene.RemoveNode(node)


def write_inpaint_inputs(volume_node: Any, segmentation_node: Any, tumor_type: str, folder: str | Path,
                         scene: Any | None = None) -> dict[str, Path]:
    """The files of an inpaint job, all on the CT's grid: image, labels without the tumor, tumor mask.

    Under the tumor the labels hold the organ that was there (`editing.fill_under_tumor`), also where
    a Paint stroke in Slicer's default overwrite mode erased it from the organ's segment.
    """
    scene = _scene(scene)
    key = tumor_type.strip().lower()
    if key not in maisi_labels.TUMOR_TYPES:
        raise MaisiError(f"unknown tumor type '{tumor_type}'", f"use one of {', '.join(maisi_labels.TUMOR_TYPES)}")
    wanted = maisi_labels.TUMOR_TYPES[key]
    segmentation = segmentation_node.GetSegmentation()
    tumors = [sid for sid in tumor_segment_ids(segmentation_node)
              if segment_label_id(segmentation.GetSegment(sid)) == wanted]
    if not tumors:
        raise MaisiError(f"the segmentation has no '{maisi_labels.name_of(wanted)}' segment",
                         "click 'Add tumor segment' and paint the tumor")
    folder = Path(folder)
    tumor_path = segment_mask_to_file(segmentation_node, tumors[0], volume_node, folder / "tumor.nii.gz", scene=scene)
    tumor = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, tumors[0], volume_node).astype(bool)
    labelmap = segmentation_to_labelmap(segmentation_node, volume_node, exclude_segment_ids=tuple(tumors), scene=scene)
    try:
        values = slicer.util.arrayFromVolume(labelmap)
        values[...] = editing.fill_under_tumor(values, tumor)
        slicer.util.arrayFromVolumeModified(labelmap)
        labels = write_volume_file(labelmap, folder / "labels.nii.gz")
    finally:
        remove_with_display(labelmap)
    return {"image": write_volume_file(volume_node, folder / "image.nii.gz"), "labels": labels, "tumor": tumor_path}


def body_outline_segmentation(
    size: tuple[int, int, int], spacing: tuple[float, float, float], name: str = "MAISI template", scene: Any | None = None
) -> tuple[Any, Any]:
    """A segmentation with an elliptic 'body' to draw organs into, and an air-filled grid volume.

    The volume (-1000 HU everywhere) is the Segment Editor's source volume: painting needs one. The grid
    is centred on the origin in scanner (LPS-like) orientation: i runs right to left, j anterior to
    posterior, k inferior to superior, as in an axial CT series.
    """
    scene = _scene(scene)
    size = tuple(int(v) for v in size)  # type: ignore[assignment]
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    directions = np.diag([-1.0, -1.0, 1.0])
    centre = (np.asarray(size) - 1) / 2.0
    origin = -(directions @ (centre * spacing_arr))
    affine = compose(origin, spacing_arr, directions)
    i, j = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing="ij")
    inside = ((i - centre[0]) / (0.42 * size[0])) ** 2 + ((j - centre[1]) / (0.32 * size[1])) ** 2 <= 1.0
    body = np.zeros(size, dtype=np.uint8)
    body[inside, :] = maisi_labels.BODY
    grid = volume_from_array(np.full(size, -1000, dtype=np.int16), affine, f"{name} grid", scene=scene)
    labelmap = volume_from_array(body, affine, f"{name} (label map)", labelmap=True, scene=scene)
    try:
        segmentation = labelmap_to_segmentation(labelmap, name=name, scene=scene)
    finally:
        remove_with_display(labelmap)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(grid)
    return segmentation, grid


# ---------------------------------------------------------------------------------------------------
# Results: nodes, display, subject hierarchy, provenance


@dataclass
class GenerationNodes:
    volume: Any
    segmentation: Any
    study_item: int
    patient_item: int


def provenance_attributes(provenance: dict[str, Any]) -> dict[str, str]:
    """The node attributes that record how a result was made (every value a string)."""
    weights = provenance.get("weights") or {}
    hashes = {role: info.get("sha256", "") for role, info in weights.items() if isinstance(info, dict)}
    attributes = {
        "synthetic": "true",
        "seed": str(provenance.get("seed", "")),
        "model": str(provenance.get("model", "")),
        "steps": str(provenance.get("steps", "")),
        "weights_sha256": json.dumps(hashes, sort_keys=True),
        "engine_version": str(provenance.get("engine_version", "")),
        "device": str(provenance.get("device", "")),
        "size": json.dumps(provenance.get("size", [])),
        "spacing": json.dumps(provenance.get("spacing", [])),
        "created_utc": str(provenance.get("created_utc", "")),
        "provenance": json.dumps(provenance, sort_keys=True, default=str),
    }
    return {ATTRIBUTE_PREFIX + key: value for key, value in attributes.items()}


def show_as_ct(volume_node: Any) -> None:
    """Soft-tissue window/level with lung and bone presets; the volume-rendering preset name is recorded."""
    display = volume_node.GetDisplayNode()
    if display is None:
        volume_node.CreateDefaultDisplayNodes()
        display = volume_node.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    for window, level in CT_WINDOW_LEVEL_PRESETS:
        display.AddWindowLevelPreset(window, level)
    display.SetWindowLevel(*CT_WINDOW_LEVEL)
    volume_node.SetAttribute(ATTRIBUTE_PREFIX + "volumeRenderingPreset", VOLUME_RENDERING_PRESET)


def load_generation_result(result: dict[str, Any], scene: Any | None = None, study_item: int | None = None,
                           surfaces: bool = True) -> GenerationNodes:
    """Load a worker result (image, labels, provenance) as CT + segmentation under a new synthetic study.

    `study_item` puts them in an existing study instead. `surfaces=False` leaves the closed surfaces
    to be built when the user asks (the "Show 3D" button): with 100+ segments at 512^3 building them
    takes long, on the GUI thread.
    """
    scene = _scene(scene)
    provenance = dict(result.get("provenance_data") or {})
    if not provenance and result.get("provenance") and Path(result["provenance"]).is_file():
        provenance = json.loads(Path(result["provenance"]).read_text())
    seed, model = provenance.get("seed", "?"), provenance.get("model", "?")
    base = f"Synthetic CT seed {seed}"
    volume = read_volume_file(result["image"], name=base, scene=scene)
    try:
        segmentation = labelmap_file_to_segmentation(result["labels"], name=f"{base} labels", scene=scene)
    except MaisiError:
        scene.RemoveNode(volume)
        raise
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    if surfaces:
        segmentation.CreateClosedSurfaceRepresentation()
    segmentation.GetDisplayNode().SetVisibility3D(True)
    show_as_ct(volume)
    attributes = provenance_attributes(provenance)
    attributes[ATTRIBUTE_PREFIX + "outputDir"] = str(result.get("output_dir", ""))
    for node in (volume, segmentation):
        for key, value in attributes.items():
            node.SetAttribute(key, value)
    segmentation.SetNodeReferenceID("referenceImageGeometryRef", volume.GetID())
    study = study_item if study_item else new_synthetic_study(seed, model, scene)
    place_in_study(volume, study, scene)
    place_in_study(segmentation, study, scene)
    sh = subject_hierarchy(scene)
    return GenerationNodes(volume, segmentation, study, sh.GetItemParent(study))


def load_inpaint_result(result: dict[str, Any], source_volume: Any, scene: Any | None = None,
                        surfaces: bool = True) -> GenerationNodes:
    """The inpainted CT as a new volume beside its source, in the source's study (the source is never modified).

    A source outside any study (a file loaded by hand) gets a new synthetic study, as a generation does.
    """
    nodes = load_generation_result(result, scene, study_item=study_of(source_volume, scene), surfaces=surfaces)
    seed = nodes.volume.GetAttribute(ATTRIBUTE_PREFIX + "seed")
    nodes.volume.SetName(f"{source_volume.GetName()} inpainted seed {seed}")
    nodes.segmentation.SetName(f"{source_volume.GetName()} inpainted seed {seed} labels")
    for node in (nodes.volume, nodes.segmentation):
        node.SetAttribute(ATTRIBUTE_PREFIX + "inpaintedFrom", source_volume.GetID())
    return nodes


# ---------------------------------------------------------------------------------------------------
# Export


def export_nifti(volume_node: Any, segmentation_node: Any | None, out_dir: str | Path, stem: str | None = None) -> dict[str, Path]:
    """Write the CT and (if given) its MAISI label map on the CT's grid, plus the provenance JSON."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or _safe_stem(volume_node.GetName())
    paths = {"image": write_volume_file(volume_node, out_dir / f"{stem}.nii.gz")}
    if segmentation_node is not None:
        labelmap = segmentation_to_labelmap(segmentation_node, reference_volume=volume_node)
        try:
            paths["labels"] = write_volume_file(labelmap, out_dir / f"{stem}_labels.nii.gz")
        finally:
            remove_with_display(labelmap)
    provenance = volume_node.GetAttribute(ATTRIBUTE_PREFIX + "provenance")
    if provenance:
        target = out_dir / f"{stem}_provenance.json"
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(json.loads(provenance), indent=2, sort_keys=True))
        paths["provenance"] = target
    return paths


def _safe_stem(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return cleaned or "maisi"


def temporary_labelmap_file(segmentation_node: Any, reference_volume: Any | None, folder: str | Path) -> Path:
    """Write a segmentation as the MAISI label map file a generate job reads."""
    labelmap = segmentation_to_labelmap(segmentation_node, reference_volume=reference_volume)
    try:
        return write_volume_file(labelmap, Path(folder) / "input_labels.nii.gz")
    finally:
        remove_with_display(labelmap)


def labelmap_volume_file(labelmap_node: Any, folder: str | Path) -> Path:
    """Write a label map volume the user chose as input (its values must already be MAISI ids)."""
    values = np.unique(slicer.util.arrayFromVolume(labelmap_node))
    unknown = sorted(int(v) for v in values if int(v) not in maisi_labels.valid_ids())
    if unknown:
        raise MaisiError(
            f"label map '{labelmap_node.GetName()}' holds ids that are no MAISI label: {unknown[:10]}",
            "convert it to a segmentation and name the segments after MAISI labels",
        )
    return write_volume_file(labelmap_node, Path(folder) / "input_labels.nii.gz")


