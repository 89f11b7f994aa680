"""Tumor intensity of both inpainting routes on held-out phantoms (issue 6's tumor line), on the CPU.

For each phantom, a 20 mm ball at the deepest point of the liver (the tumor `Testing/test_inpaint_demo.py`
paints) is inpainted as a liver tumor with `controlnet-repaint` and with `inpaint-controlnet`; the
median HU inside it is compared with the phantom's hepatic-tumor tissue value (within 40 HU passes).

    python bench/inpaint_tumors.py [--model demo] [--cases 12:96,5:128,3:96,7:128]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "Testing"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

TOLERANCE_HU = 40.0
METHODS = ("controlnet-repaint", "inpaint-controlnet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo (shipped) or a model directory")
    parser.add_argument("--cases", default="12:96,5:128,3:96,7:128", help="phantom seed:size pairs (abdomen, 3 mm)")
    args = parser.parse_args(argv)

    from test_inpaint_demo import MARGIN_MM, SPACING, tumor_in_liver

    from MAISIEngine.inpaint import InpaintRequest, inpaint
    from MAISIEngine.io.nifti import Volume
    from MAISIEngine.phantom import make_phantom
    from MAISIEngine.phantom.tissue import HU, T

    tissue_hu = float(HU[T["hepatic tumor"]])
    hits = {method: 0 for method in METHODS}
    cases = [tuple(int(v) for v in case.split(":")) for case in args.cases.split(",")]
    for seed, size in cases:
        phantom = make_phantom(size=(size,) * 3, spacing=SPACING, region="abdomen", seed=seed)
        tumor = tumor_in_liver(phantom.labels)
        for method in METHODS:
            request = InpaintRequest(image=Volume(phantom.ct.copy(), phantom.affine),
                                     labels=Volume(phantom.labels.copy(), phantom.affine), tumor=tumor,
                                     tumor_type="liver", model=args.model, method=method, margin_mm=MARGIN_MM,
                                     seed=0, device="cpu")
            median = float(np.median(inpaint(request)[0].array[tumor]))
            ok = abs(median - tissue_hu) <= TOLERANCE_HU
            hits[method] += ok
            print(f"phantom {seed} {size}^3 {method}: tumor median {median:.0f} HU "
                  f"(tissue {tissue_hu:.0f}) {'ok' if ok else 'MISS'}", flush=True)
    for method in METHODS:
        print(f"{method}: {hits[method]}/{len(cases)} within {TOLERANCE_HU:.0f} HU")
    return 0 if all(h == len(cases) for h in hits.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
