"""Tumor intensity of both inpainting routes on held-out phantoms (issue 6's tumor line), on the CPU.

For each phantom (by default four from the training pool's seed range, then the six held-out phantoms
that `Testing/test_inpaint_demo.py` checks), a 20 mm ball at the deepest point of the liver is inpainted
as a liver tumor with `controlnet-repaint` and with `inpaint-controlnet`; the median HU inside it is
compared with the phantom's hepatic-tumor tissue value (within 40 HU passes).

    python bench/inpaint_tumors.py [--model demo] [--cases 12:96,5:128,...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "Testing"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


def main(argv: list[str] | None = None) -> int:
    from test_inpaint_demo import (
        HELD_OUT_CASES,
        METHODS,
        TUMOR_TOLERANCE_HU,
        inpainted_tumor_median,
    )

    from MAISIEngine.phantom.tissue import HU, T

    default_cases = ",".join(f"{seed}:{size}" for seed, size in ((12, 96), (5, 128), (3, 96), (7, 128)) + HELD_OUT_CASES)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo (shipped) or a model directory")
    parser.add_argument("--cases", default=default_cases, help="phantom seed:size pairs (abdomen, 3 mm)")
    args = parser.parse_args(argv)

    tissue_hu = float(HU[T["hepatic tumor"]])
    hits = {method: 0 for method in METHODS}
    cases = [tuple(int(v) for v in case.split(":")) for case in args.cases.split(",")]
    for seed, size in cases:
        for method in METHODS:
            median = inpainted_tumor_median(seed, size, method, args.model)
            ok = abs(median - tissue_hu) <= TUMOR_TOLERANCE_HU
            hits[method] += ok
            print(f"phantom {seed} {size}^3 {method}: tumor median {median:.0f} HU "
                  f"(tissue {tissue_hu:.0f}) {'ok' if ok else 'MISS'}", flush=True)
    for method in METHODS:
        print(f"{method}: {hits[method]}/{len(cases)} within {TUMOR_TOLERANCE_HU:.0f} HU")
    return 0 if all(h == len(cases) for h in hits.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
