"""Painting tumors with Slicer's Segment Editor without damaging the organ that hosts them.

Slicer's default "Modify other segments" mode is *overwrite all*: a Paint stroke in the tumor segment
removes the same voxels from the liver. The liver then has a hole exactly where the tumor is, the
label map given to inpainting holds 0 there, and the engine refuses the job ("tumor voxels in
background"). Two things prevent that, each enough on its own:
  - `prepare_tumor_painting` sets the module's editor node to *overwrite none*, so painting the tumor
    leaves every other segment as it was (the tumor is drawn *over* the liver);
  - `fill_under_tumor` rebuilds what a stroke erased from the other segments anyway (a tumor painted
    in the main Segment Editor, an older scene): each emptied tumor voxel gets the label of the nearest
    voxel outside the tumor, i.e. the host organ's id for a tumor painted inside it.
The editor node is made with `CreateNodeByClass`, so the defaults a user set for segment editor nodes
(scene default node) apply to it, as they do to Slicer's own Segment Editor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

import slicer

EDITOR_NODE_TAG = "MAISISynth"
"""Singleton tag of the module's own segment editor node (separate from the Segment Editor module's)."""


def segment_editor_node(scene: Any | None = None, tag: str = EDITOR_NODE_TAG) -> Any:
    """The module's segment editor node, created once per scene with the user's default settings."""
    scene = scene if scene is not None else slicer.mrmlScene
    node = scene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
    if node is not None:
        return node
    node = scene.CreateNodeByClass("vtkMRMLSegmentEditorNode")  # applies the scene's default node
    node.UnRegister(None)  # CreateNodeByClass returns a new reference; the scene keeps its own
    node.SetSingletonTag(tag)
    return scene.AddNode(node)


def prepare_tumor_painting(editor_node: Any, segmentation_node: Any, source_volume: Any, tumor_segment_id: str) -> None:
    """Select the tumor segment for painting over `source_volume`, leaving the other segments intact."""
    editor_node.SetAndObserveSegmentationNode(segmentation_node)
    editor_node.SetAndObserveSourceVolumeNode(source_volume)
    editor_node.SetSelectedSegmentID(tumor_segment_id)
    editor_node.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)
    editor_node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)


def fill_under_tumor(labels: np.ndarray, tumor: np.ndarray) -> np.ndarray:
    """A copy of `labels` in which tumor voxels labelled 0 take the label of the nearest non-tumor voxel.

    Voxels that still carry a label (painted in overwrite-none mode) keep it, so a stroke that spills
    over the organ's edge stays visible to the engine, which trims small spills and refuses large ones.
    """
    labels = np.asarray(labels)
    tumor = np.asarray(tumor).astype(bool)
    if labels.shape != tumor.shape:
        raise ValueError(f"labels {labels.shape} and tumor {tumor.shape} are on different grids")
    emptied = tumor & (labels == 0)
    if not emptied.any() or tumor.all():
        return labels.copy()
    nearest = ndimage.distance_transform_edt(tumor, return_distances=False, return_indices=True)
    out = labels.copy()
    out[emptied] = labels[tuple(index[emptied] for index in nearest)]
    return out


def editor_selection_changes(editor_node: Any, segmentation_node: Any | None, volume_node: Any | None) -> dict[str, Any]:
    """What the module's tumor selectors must take over from the embedded editor's own selectors.

    The embedded Segment Editor has its own segmentation and source-volume selectors, which write to
    its editor node. Whatever the user picks there becomes the module's choice too, so Inpaint uses
    the nodes being painted. Returns {"tumorSegmentation": node, "tumorVolume": node} for what differs;
    an editor selector left empty changes nothing.
    """
    changes: dict[str, Any] = {}
    painted = editor_node.GetSegmentationNode()
    if painted is not None and painted is not segmentation_node:
        changes["tumorSegmentation"] = painted
    source = editor_node.GetSourceVolumeNode()
    if source is not None and source is not volume_node:
        changes["tumorVolume"] = source
    return changes
