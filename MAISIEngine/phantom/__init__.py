"""Procedural torso phantoms labelled with MAISI ids, with a matching CT (demo data and tests).

`make_phantom(size, spacing, region, seed, tumors)` builds one; `write_phantom(phantom, folder)`
writes `mask.nii.gz` and `ct.nii.gz`. Anatomy is analytic and defined in millimetres, so a seed is a
person: the same seed gives the same anatomy at every size, spacing and region.
"""

from MAISIEngine.phantom.make import REGION_CENTERS, Phantom, PlacedTumor, make_phantom, write_phantom
from MAISIEngine.phantom.tissue import TISSUES

REGIONS = tuple(REGION_CENTERS)

__all__ = ["Phantom", "PlacedTumor", "REGIONS", "TISSUES", "make_phantom", "write_phantom"]
