"""DICOM export and import: a synthetic CT series with a DICOM SEG of its MAISI labels, and back.

Needs the `dicom` extra (pydicom, highdicom). Every exported object is marked synthetic by
construction (see `identity`); `export_dicom` writes all files or none.
"""

from MAISIEngine.io.dicom.reader import read_dicom_ct, read_dicom_mask
from MAISIEngine.io.dicom.writer import ExportResult, export_dicom

__all__ = ["ExportResult", "export_dicom", "read_dicom_ct", "read_dicom_mask"]
