"""dciodvfy over every file of a DICOM export, with and without SyntheticData (0008,001C).

Prints, per variant, the number of files, the errors and warnings dciodvfy reports (each distinct
message with its count), the first slice's ImageOrientationPatient and where the spinal cord lies in
the middle stored slice. The figures in docs/dicom.md come from:

    PYTHONPATH=$PWD:$PWD/MAISISynth python bench/dicom_validation.py --size 64 64 48
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import tempfile
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from MAISIEngine.io.dicom import export_dicom
from MAISIEngine.io.nifti import Volume
from MAISIEngine.phantom import make_phantom

SPINAL_CORD = 121


def dciodvfy_messages(files: list[Path]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for path in files:
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
        for line in (run.stdout + run.stderr).splitlines():
            line = line.strip()
            if "Error" in line or "Warning" in line:
                counts[line] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(64, 64, 48))
    parser.add_argument("--spacing", type=float, nargs=3, default=(5.0, 5.0, 6.0))
    args = parser.parse_args()
    phantom = make_phantom(size=tuple(args.size), spacing=tuple(args.spacing), region="chest-abdomen", seed=0, supersample=1)
    provenance = {"model": "demo", "seed": 0, "region": ["chest", "abdomen"], "created_utc": "2026-12-05T06:00:00+00:00"}
    print(f"phantom {tuple(args.size)} at {tuple(args.spacing)} mm, RAS affine diagonal {np.diag(phantom.affine)[:3].tolist()}")
    with tempfile.TemporaryDirectory() as folder:
        for flag in (False, True):
            start = time.perf_counter()
            result = export_dicom(Volume(phantom.ct, phantom.affine), phantom.labels, Path(folder) / f"sd_{flag}",
                                  provenance=provenance, synthetic_data_element=flag)
            seconds = time.perf_counter() - start
            files = result.ct_files + [result.seg_file]
            messages = dciodvfy_messages(files)
            errors = sum(n for m, n in messages.items() if "Error" in m)
            warnings = sum(n for m, n in messages.items() if "Warning" in m)
            first = pydicom.dcmread(result.ct_files[0])
            orientation = "\\".join(str(v) for v in first.ImageOrientationPatient)
            middle = pydicom.dcmread(result.ct_files[len(result.ct_files) // 2])
            number = next(n for n, name in result.segments.items() if name == "spinal cord")
            frame = hd.seg.segread(result.seg_file).get_pixels_by_source_instance(
                [middle.SOPInstanceUID], segment_numbers=[number])[0, :, :, 0]
            print(f"\nSyntheticData written: {flag}; {len(files)} files exported in {seconds:.1f} s")
            print(f"  dciodvfy: {errors} errors, {warnings} warnings over {len(files)} files")
            for message, count in sorted(messages.items()):
                print(f"    {count:4d} x {message}")
            print(f"  first slice ImageOrientationPatient {orientation}")
            if frame.any():
                print(f"  middle slice SEG frame: spinal cord centroid at row {np.argwhere(frame)[:, 0].mean():.1f} "
                      f"of {middle.Rows} (0 = top)")

if __name__ == "__main__":
    main()
