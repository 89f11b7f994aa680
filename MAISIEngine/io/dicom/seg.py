"""The DICOM Segmentation of an export: one segment per MAISI label present, on the CT series' grid.

Built with highdicom as a BINARY segmentation (the type every current validator and viewer reads),
referencing the CT slices it was derived from. Segment numbers run 1..N in MAISI id order; each
segment's label is the MAISI name and its codes come from the shared MAISI terminology, so a reader
can map a segment back to its MAISI id by either.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes

from MAISIEngine import __version__
from MAISIEngine.io.dicom.identity import MANUFACTURER, MODEL_NAME, SyntheticIdentity, set_character_set
from MAISIEngine.io.terminology import Code, terms_of
from MAISIEngine.labels import color_of

SEG_SERIES_NUMBER = 2


def _coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def segment_description(segment_number: int, label_id: int) -> hd.seg.SegmentDescription:
    """Segment `segment_number` describing MAISI label `label_id`: name, codes and display colour."""
    terms = terms_of(label_id)
    description = hd.seg.SegmentDescription(
        segment_number=segment_number,
        segment_label=terms.name,
        segmented_property_category=_coded(terms.category),
        segmented_property_type=_coded(terms.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="MAISISynth label map", family=codes.cid7162.ArtificialIntelligence, version=__version__,
        ),
        anatomic_regions=[_coded(terms.anatomic_region)] if terms.anatomic_region else None,
        display_color=hd.color.CIELabColor.from_rgb(*color_of(label_id)),
    )
    # highdicom has no argument for the modifiers; they nest inside the coded items per PS3.3 C.8.20.2.
    if terms.type_modifier is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = DicomSequence(
            [_coded(terms.type_modifier)])
    if terms.anatomic_region_modifier is not None and terms.anatomic_region is not None:
        description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = DicomSequence(
            [_coded(terms.anatomic_region_modifier)])
    return description


def label_ids_present(labels: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(labels) if v != 0]


def build_segmentation(ct_slices: Sequence[Dataset], labels: np.ndarray, identity: SyntheticIdentity) -> hd.seg.Segmentation:
    """A BINARY SEG of an (i, j, k) MAISI label map over the CT slices written from the same grid."""
    ids = label_ids_present(labels)
    numbers = np.zeros(max(ids) + 1 if ids else 1, dtype=np.uint8)
    for number, label_id in enumerate(ids, start=1):
        numbers[label_id] = number
    # (i, j, k) -> frames (k, rows = j, columns = i), values = segment numbers 1..N.
    frames = numbers[np.transpose(labels, (2, 1, 0))]
    seg = hd.seg.Segmentation(
        source_images=list(ct_slices),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(n, i) for n, i in enumerate(ids, start=1)],
        series_instance_uid=identity.seg_series_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=f"MAISIEngine {__version__}",
        device_serial_number="SYNTHETIC",
        content_description="SYNTHETIC MAISI label map",
        content_label="MAISI_LABELS",
        content_creator_name="SYNTHETIC^MAISI",
    )
    seg.SeriesDescription = identity.series_description("SEG")
    identity.apply_markers(seg)  # patient, study and frame of reference come from the CT slices
    for keyword in ("SeriesDate", "SeriesTime", "BodyPartExamined"):
        if keyword in ct_slices[0]:
            setattr(seg, keyword, ct_slices[0].data_element(keyword).value)
    set_character_set(seg)
    return seg
