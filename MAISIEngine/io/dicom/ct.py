"""The CT Image Storage series of an export: one int16 slice per k, HU through a rescale intercept.

HU are rounded to whole units (CT's own resolution). The stored value is HU - intercept with slope
1; the intercept is the usual -1024 when the image fits above it, else the image minimum, and an
image spanning more than 2^15 HU cannot be stored in int16 and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from MAISIEngine import __version__
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.dicom.geometry import SliceGeometry, ds, ds_list
from MAISIEngine.io.dicom.identity import PATIENT_POSITION, SyntheticIdentity, set_character_set

INT16_MAX = 32767
DEFAULT_INTERCEPT = -1024
CT_SERIES_NUMBER = 1


@dataclass(frozen=True)
class StoredPixels:
    """Integer pixel values and the intercept that turns them back into HU (slope is 1)."""

    values: np.ndarray  # int16, (i, j, k)
    intercept: int


def to_stored_pixels(hu: np.ndarray) -> StoredPixels:
    """Round HU and choose an intercept so every value fits int16; refuse what cannot fit."""
    hu = np.asarray(hu)
    if hu.size == 0:
        raise MaisiError("the image is empty", "export a volume with at least one voxel")
    if np.issubdtype(hu.dtype, np.floating) and not np.all(np.isfinite(hu)):
        raise MaisiError("the image holds NaN or infinite values", "replace them with valid HU before exporting")
    rounded = np.rint(hu.astype(np.float64)) if np.issubdtype(hu.dtype, np.floating) else hu.astype(np.int64)
    low, high = int(rounded.min()), int(rounded.max())
    if high - low > INT16_MAX:
        raise MaisiError(
            f"the image spans {low}..{high} HU, a range of {high - low} HU; DICOM CT int16 pixels hold at most {INT16_MAX}",
            "clip the image to a CT range (e.g. -1024..3071 HU) before exporting",
        )
    intercept = DEFAULT_INTERCEPT if low >= DEFAULT_INTERCEPT and high - DEFAULT_INTERCEPT <= INT16_MAX else low
    return StoredPixels((rounded - intercept).astype(np.int16), intercept)


def _file_meta(sop_instance_uid: str, sop_class_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MAISISYNTH_{__version__}"[:16]
    return meta


def ct_slices(hu: np.ndarray, geometry: SliceGeometry, identity: SyntheticIdentity) -> list[Dataset]:
    """One CT Image Storage dataset per slice k, in k order (InstanceNumber k + 1)."""
    pixels = to_stored_pixels(hu)
    columns, rows, n_slices = pixels.values.shape
    normal = geometry.normal
    slices = []
    for k in range(n_slices):
        sop_uid = generate_uid()
        d = Dataset()
        d.file_meta = _file_meta(sop_uid, CTImageStorage)
        d.SOPClassUID = CTImageStorage
        d.SOPInstanceUID = sop_uid
        identity.apply_common(d)
        d.Modality = "CT"
        d.SeriesInstanceUID = identity.ct_series_uid
        d.SeriesNumber = CT_SERIES_NUMBER
        d.SeriesDescription = identity.series_description("CT")
        d.PatientPosition = PATIENT_POSITION
        d.ImageLaterality = "B"  # a body volume spans both sides; also settles Laterality's condition
        d.InstanceNumber = k + 1
        d.AcquisitionNumber = ""
        d.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        d.BurnedInAnnotation = "NO"
        d.RecognizableVisualFeatures = "NO"
        d.LossyImageCompression = "00"
        d.KVP = ""
        d.ImageOrientationPatient = ds_list(geometry.orientation)
        d.ImagePositionPatient = ds_list(geometry.positions[k])
        d.SliceLocation = ds(float(geometry.positions[k] @ normal))
        d.PixelSpacing = ds_list(geometry.pixel_spacing)
        d.SliceThickness = ds(geometry.slice_spacing)
        d.SpacingBetweenSlices = ds(geometry.slice_spacing)
        d.SamplesPerPixel = 1
        d.PhotometricInterpretation = "MONOCHROME2"
        d.Rows = rows
        d.Columns = columns
        d.BitsAllocated = 16
        d.BitsStored = 16
        d.HighBit = 15
        d.PixelRepresentation = 1
        d.RescaleIntercept = ds(pixels.intercept)
        d.RescaleSlope = "1"
        d.RescaleType = "HU"
        d.WindowCenter = "40"
        d.WindowWidth = "400"
        d.WindowCenterWidthExplanation = "SOFT TISSUE"
        d.PixelData = np.ascontiguousarray(pixels.values[:, :, k].T).astype("<i2").tobytes()
        set_character_set(d)
        slices.append(d)
    return slices
