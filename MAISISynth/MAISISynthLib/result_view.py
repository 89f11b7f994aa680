"""Showing a generation or inpainting result in Slicer's views: the four-up layout with the CT in the
slice views, the 3D view reset on it, and volume rendering with the preset the result asks for."""

from __future__ import annotations

import slicer

from . import mrml


def show_volume_rendering(volume, visible: bool) -> None:
    """Volume rendering on or off; made (with the volume's MAISI preset) only when first turned on."""
    logic = slicer.modules.volumerendering.logic()
    displayNode = logic.GetFirstVolumeRenderingDisplayNode(volume)
    if displayNode is None:
        if not visible:
            return
        displayNode = logic.CreateDefaultVolumeRenderingNodes(volume)
        preset = logic.GetPresetByName(volume.GetAttribute("MAISI.volumeRenderingPreset") or mrml.VOLUME_RENDERING_PRESET)
        if preset is not None:
            displayNode.GetVolumePropertyNode().Copy(preset)
    displayNode.SetVisibility(visible)


def show_result(nodes: mrml.GenerationNodes, volume_rendering: bool = False) -> None:
    """Four-up layout: the CT with its segments in the slice views, 3D surfaces, optional rendering."""
    layoutManager = slicer.app.layoutManager()
    if layoutManager is None:
        return
    layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    slicer.util.setSliceViewerLayers(background=nodes.volume, foreground=None, label=None, fit=True)
    show_volume_rendering(nodes.volume, volume_rendering)
    threeDView = layoutManager.threeDWidget(0).threeDView()
    threeDView.resetFocalPoint()
    threeDView.resetCamera()
