"""Tools that make the label maps which drive generation.

- `tumors`: tumor shapes from a point and a size inside their host organ, and the tumor mask
  augmentation (move, scale, erode/dilate, elastic).
- `totalseg`: TotalSegmentator label maps to MAISI ids, with a report of what MAISI cannot express.
- `body`: the body envelope (label 200) from a CT, with the scanner table removed.
- `maskdb`: the official mask database (candidate JSON + zip of masks): find, extract safely, resample.
- `cli`: the `maisi masks ...` sub-commands.
"""
