"""DICOM export inside Slicer: the CT series through Slicer's exporter, then a DICOM SEG referencing it.

Needs the application's DICOM module (imported when called). The CT is placed under the synthetic
patient first; the written series is read back so the SEG can reference its instances, and that
read-back leaves nothing in the scene (`mrml.remove_nodes_and_empty_parents`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import slicer

from MAISIEngine.errors import MaisiError

from . import mrml


def export_dicom(volume: Any, segmentation: Any | None, directory: str | Path) -> list[Path]:
    """CT series through Slicer's DICOM exporter, then DICOM SEG referencing it, under a synthetic patient.

    A CT outside a synthetic study (an inpainted real CT sits in its input's study) is exported under
    a synthetic study, never as part of a real one; afterwards it goes back where it was.
    """
    if volume is None:
        raise MaisiError("no CT volume selected", "choose the volume to export")
    moved = place_under_synthetic_study(volume, segmentation)
    try:
        return _export(volume, segmentation, Path(directory))
    finally:
        restore_places(moved)


def _export(volume: Any, segmentation: Any | None, directory: Path) -> list[Path]:
    try:
        import DICOMScalarVolumePlugin
        import DICOMSegmentationPlugin
        from DICOMLib import DICOMUtils
    except ImportError:
        raise MaisiError("DICOM export needs Slicer's DICOM module",
                         "enable the DICOM module in Application Settings > Modules, or export NIfTI") from None
    ctDirectory, segDirectory = directory / "CT", directory / "SEG"
    sh = mrml.subject_hierarchy()
    seed, model = volume.GetAttribute("MAISI.seed") or "?", volume.GetAttribute("MAISI.model") or "?"
    constants = slicer.vtkMRMLSubjectHierarchyConstants
    exporter = DICOMScalarVolumePlugin.DICOMScalarVolumePluginClass()
    exportables = exporter.examineForExport(sh.GetItemByDataNode(volume))
    for exportable in exportables:
        exportable.directory = str(ctDirectory)
        exportable.setTag(constants.GetDICOMPatientNameTagName(), mrml.PATIENT_NAME)
        exportable.setTag(constants.GetDICOMPatientIDTagName(), mrml.PATIENT_ID)
        exportable.setTag(constants.GetDICOMStudyDescriptionTagName(), sh.GetItemName(sh.GetItemParent(sh.GetItemByDataNode(volume))))
        exportable.setTag("SeriesDescription", f"SYNTHETIC CT MAISI {model} seed {seed}")
        exportable.setTag("Manufacturer", "MAISISynth (synthetic image)")
        exportable.setTag("Model", f"MAISI {model}")
    ctDirectory.mkdir(parents=True, exist_ok=True)
    error = exporter.export(exportables)
    if error:
        raise MaisiError(f"DICOM export of the CT failed: {error}", "check the folder")
    written = sorted(ctDirectory.rglob("*.dcm"))
    if segmentation is None:
        return written
    # DICOM SEG references the CT instances by UID: load the series just written and refer to it.
    with DICOMUtils.TemporaryDICOMDatabase() as database:
        DICOMUtils.importDicom(str(ctDirectory), database)
        seriesUids = [database.fileValue(str(f), "0020,000E") for f in written[:1]]
        loaded = DICOMUtils.loadSeriesByUID(seriesUids)
        referenceVolume = slicer.mrmlScene.GetNodeByID(loaded[0]) if loaded else None
        if referenceVolume is None:
            raise MaisiError("the exported CT series could not be read back", "check the folder")
        export = None
        try:
            export = segmentation_for_dicom(segmentation, referenceVolume)
            segItem = sh.GetItemByDataNode(export)
            sh.SetItemParent(segItem, sh.GetItemParent(sh.GetItemByDataNode(referenceVolume)))
            sh.SetItemAttribute(segItem, "DICOM.ReferencedInstanceUIDs",
                                referenceVolume.GetAttribute("DICOM.instanceUIDs") or "")
            segExporter = DICOMSegmentationPlugin.DICOMSegmentationPluginClass()
            segExportables = segExporter.examineForExport(segItem)
            segDirectory.mkdir(parents=True, exist_ok=True)
            for exportable in segExportables:
                exportable.directory = str(segDirectory)
                exportable.setTag("SeriesDescription", f"SYNTHETIC SEG MAISI {model} seed {seed}")
            error = segExporter.export(segExportables) if segExportables else "no exportable segmentation"
            if error:
                raise MaisiError(f"DICOM SEG export failed: {error}",
                                 "check that every segment has a terminology")
        finally:  # the read-back series' patient and study items go too
            mrml.remove_nodes_and_empty_parents([export, referenceVolume])
    return written + sorted(segDirectory.rglob("*.dcm"))


def segmentation_for_dicom(segmentation: Any, referenceVolume: Any) -> Any:
    """A copy of the segmentation on the geometry of the DICOM-loaded CT (the original stays as it is)."""
    copy = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", segmentation.GetName())
    copy.GetSegmentation().DeepCopy(segmentation.GetSegmentation())
    copy.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
    copy.SetNodeReferenceID(copy.GetReferenceImageGeometryReferenceRole(), referenceVolume.GetID())
    return copy


def place_under_synthetic_study(volume: Any, segmentation: Any | None) -> list[tuple[Any, int]]:
    """Put the CT (and segmentation) under a new synthetic study unless already in one.

    Returns (node, former parent item) for each node moved, for `restore_places`.
    """
    sh = mrml.subject_hierarchy()
    parent = sh.GetItemParent(sh.GetItemByDataNode(volume))
    if sh.GetItemLevel(parent) == "Study" and sh.GetItemAttribute(parent, "MAISI.synthetic") == "true":
        return []
    study = mrml.new_synthetic_study(volume.GetAttribute("MAISI.seed") or "?",
                                     volume.GetAttribute("MAISI.model") or "?")
    moved = []
    for node in (volume, segmentation):
        if node is not None:
            item = sh.GetItemByDataNode(node)
            moved.append((node, sh.GetItemParent(item) if item else sh.GetSceneItemID()))
            mrml.place_in_study(node, study)
    return moved


def restore_places(moved: list[tuple[Any, int]]) -> None:
    """Move nodes back under their former parents; the synthetic study and patient go if left empty."""
    if not moved:
        return
    sh = mrml.subject_hierarchy()
    study = sh.GetItemParent(sh.GetItemByDataNode(moved[0][0]))
    for node, parent in moved:
        sh.SetItemParent(sh.GetItemByDataNode(node), parent)
    patient = sh.GetItemParent(study)
    for item in (study, patient):
        if item and item != sh.GetSceneItemID() and sh.GetNumberOfItemChildren(item) == 0:
            sh.RemoveItem(item)
