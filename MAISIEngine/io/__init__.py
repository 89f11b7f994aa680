"""Reading and writing volumes: NIfTI, DICOM, provenance sidecars. Every write is atomic."""
