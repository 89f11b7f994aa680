"""A generated label map in the scene: an editable segmentation, before any CT exists.

The worker's generate-mask job writes `labels.nii.gz`. It becomes a segmentation whose segments carry
MAISI names, colours, label values and terminology (as every label map the module loads), with an
air-filled volume on the map's grid as the Segment Editor's source volume (painting needs one, and no
CT exists yet). The user paints a tumor into it, then Generate makes the CT from the segmentation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from MAISIEngine.errors import MaisiError

from . import mrml

AIR_HU = -1000


@dataclass
class GeneratedMapNodes:
    segmentation: Any
    grid: Any
    """Scalar volume (air) on the map's grid: the Segment Editor's source volume."""


def map_name(provenance: dict[str, Any]) -> str:
    return f"MAISI generated label map seed {provenance.get('seed', '?')}"


def load_generated_map(result: dict[str, Any], scene: Any | None = None) -> GeneratedMapNodes:
    """Load a generate-mask result (labels file + provenance) as segmentation and grid volume."""
    labels_path = result.get("labels")
    if not labels_path or not Path(str(labels_path)).is_file():
        raise MaisiError("the label map generation finished without a labels file", "see the log of the run")
    provenance = dict(result.get("provenance_data") or {})
    name = map_name(provenance)
    labelmap = mrml.read_volume_file(labels_path, name=f"{name} (label map)", labelmap=True, scene=scene)
    try:
        shape = mrml.array_ijk(labelmap).shape
        grid = mrml.volume_from_array(np.full(shape, AIR_HU, dtype=np.int16), mrml.node_affine(labelmap),
                                      f"{name} grid", scene=scene)
        try:
            segmentation = mrml.labelmap_to_segmentation(labelmap, name=name, scene=scene)
        except MaisiError:
            mrml.remove_with_display(grid)
            raise
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(labelmap)
    finally:
        mrml.remove_with_display(labelmap)
    attributes = mrml.provenance_attributes(provenance)
    attributes[mrml.ATTRIBUTE_PREFIX + "anatomySizes"] = json.dumps(provenance.get("anatomy_sizes", {}), sort_keys=True)
    for key, value in attributes.items():
        segmentation.SetAttribute(key, value)
    missing = result.get("missing") or provenance.get("missing") or []
    segmentation.SetAttribute(mrml.ATTRIBUTE_PREFIX + "missingStructures", json.dumps(list(missing)))
    return GeneratedMapNodes(segmentation, grid)
