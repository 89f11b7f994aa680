"""The subject hierarchy of results: the synthetic patient, one study per generation, and cleaning up.

Every generated CT sits under the patient SYNTHETIC^MAISI in a study of its own; an inpainted CT sits
in its input's study. Temporary nodes are removed with their display and storage nodes and with the
subject-hierarchy items they leave empty, so the Data module shows only what the user made.
"""

from __future__ import annotations

from typing import Any

import slicer
import vtk

PATIENT_NAME = "SYNTHETIC^MAISI"
PATIENT_ID = "MAISI-SYNTHETIC"


def _scene(scene: Any | None) -> Any:
    return scene if scene is not None else slicer.mrmlScene


def subject_hierarchy(scene: Any | None = None) -> Any:
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(_scene(scene))


def synthetic_patient_item(scene: Any | None = None) -> int:
    """The subject-hierarchy patient that holds every synthetic study (created once)."""
    sh = subject_hierarchy(scene)
    patient_level = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelPatient()
    children = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), children)
    for index in range(children.GetNumberOfIds()):
        item = children.GetId(index)
        if sh.GetItemName(item) == PATIENT_NAME and sh.GetItemLevel(item) == patient_level:
            return item
    item = sh.CreateSubjectItem(sh.GetSceneItemID(), PATIENT_NAME)
    constants = slicer.vtkMRMLSubjectHierarchyConstants
    sh.SetItemAttribute(item, constants.GetDICOMPatientNameAttributeName(), PATIENT_NAME)
    sh.SetItemAttribute(item, constants.GetDICOMPatientIDAttributeName(), PATIENT_ID)
    sh.SetItemAttribute(item, "MAISI.synthetic", "true")
    return item


def new_synthetic_study(seed: int, model: str, scene: Any | None = None) -> int:
    """A new study under the synthetic patient; every generation gets its own."""
    sh = subject_hierarchy(scene)
    patient = synthetic_patient_item(scene)
    name = f"Synthetic study seed {seed}, model {model}"
    study = sh.CreateStudyItem(patient, name)
    sh.SetItemAttribute(study, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMStudyDescriptionAttributeName(), name)
    sh.SetItemAttribute(study, "MAISI.synthetic", "true")
    return study


def place_in_study(node: Any, study_item: int, scene: Any | None = None) -> None:
    """Move a node under a study (creating its item where no subject-hierarchy plugin made one)."""
    sh = subject_hierarchy(scene)
    item = sh.GetItemByDataNode(node)
    if item:
        sh.SetItemParent(item, study_item)
    else:
        sh.CreateItem(study_item, node)


def study_of(node: Any, scene: Any | None = None) -> int | None:
    """The subject-hierarchy study a node sits in (its parent, or grandparent under a folder), else None."""
    sh = subject_hierarchy(scene)
    item = sh.GetItemParent(sh.GetItemByDataNode(node)) if sh.GetItemByDataNode(node) else 0
    study_level = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
    while item and item != sh.GetSceneItemID():
        if sh.GetItemLevel(item) == study_level:
            return item
        item = sh.GetItemParent(item)
    return None


def remove_with_display(node: Any) -> None:
    """Remove a temporary node with its display and storage nodes, leaving no orphans in the scene."""
    scene = node.GetScene()
    if scene is None:
        return
    attached = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())] + [node.GetStorageNode()]
    scene.RemoveNode(node)
    for other in attached:
        if other is not None:
            scene.RemoveNode(other)


def remove_nodes_and_empty_parents(nodes: list[Any], scene: Any | None = None) -> None:
    """Remove temporary nodes, then every folder, study or patient item they leave empty.

    Reading an exported series back (DICOM SEG must reference its instances) makes a patient and a
    study item for it; removing only the volume would leave them in the Data module.
    """
    scene = _scene(scene)
    sh = subject_hierarchy(scene)
    parents: list[int] = []
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        item = sh.GetItemByDataNode(node)
        parent = sh.GetItemParent(item) if item else 0
        while parent and parent != sh.GetSceneItemID():
            if parent not in parents:
                parents.append(parent)
            parent = sh.GetItemParent(parent)
        if item:
            sh.RemoveItem(item, False, False)  # the node's own item, whether or not a plugin removes it
        remove_with_display(node)
    # Innermost first (a study is emptied before its patient is looked at); an item holding a node stays.
    for item in sorted(parents, key=lambda i: -_depth(sh, i)):
        if sh.GetItemDataNode(item) is None and sh.GetNumberOfItemChildren(item) == 0:
            sh.RemoveItem(item)


def _depth(sh: Any, item: int) -> int:
    depth = 0
    while item and item != sh.GetSceneItemID():
        item = sh.GetItemParent(item)
        depth += 1
    return depth
