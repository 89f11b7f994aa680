"""Coded terminology of the MAISI labels, shared by DICOM SEG and 3D Slicer.

`MAISIEngine/data/maisi_terminology.json` gives every MAISI label a SNOMED CT segmented property
category and type (with a laterality modifier, and for lesions the anatomic region). The DICOM SEG
writer reads it here, and `write_slicer_terminology` turns the same data into the terminology-context
JSON that 3D Slicer loads, so a segment exported to DICOM and a segment shown in Slicer carry one code.

Regenerate the Slicer file after editing the data:
    python -m MAISIEngine.io.terminology MAISISynth/Resources/maisi.term.json
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from MAISIEngine.labels import color_of, name_of, valid_ids

SLICER_CONTEXT_NAME = "Segmentation category and type - MAISI"
SLICER_ANATOMIC_CONTEXT_NAME = "Anatomic codes - DICOM master list"
SLICER_SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/segment-context-schema.json#"


@dataclass(frozen=True)
class Code:
    """One coded concept: coding scheme (SCT = SNOMED CT), code value and meaning."""

    scheme: str
    value: str
    meaning: str

    @classmethod
    def from_list(cls, triple: Sequence[str] | None) -> Code | None:
        return None if not triple else cls(str(triple[0]), str(triple[1]), str(triple[2]))

    def key(self) -> tuple[str, str]:
        """Identity of the concept: the meaning is a label, the scheme and value are the code."""
        return (self.scheme.upper(), self.value)

    def as_dict(self) -> dict[str, str]:
        return {"CodingSchemeDesignator": self.scheme, "CodeValue": self.value, "CodeMeaning": self.meaning}


@dataclass(frozen=True)
class LabelTerms:
    """The coded description of one MAISI label."""

    label_id: int
    name: str
    category: Code
    type: Code
    type_modifier: Code | None = None
    anatomic_region: Code | None = None
    anatomic_region_modifier: Code | None = None
    source: str = "dicom"

    def match_key(self) -> tuple:
        """Codes (without meanings) that identify the label when only a SEG's terminology is known."""
        parts = (self.category, self.type, self.type_modifier, self.anatomic_region, self.anatomic_region_modifier)
        return tuple(p.key() if p else None for p in parts)


@lru_cache(maxsize=1)
def terminology_data() -> dict[str, Any]:
    """The raw terminology file."""
    text = resources.files("MAISIEngine.data").joinpath("maisi_terminology.json").read_text()
    return dict(json.loads(text))


def terms_of(label_id: int) -> LabelTerms:
    """Terminology of a MAISI label; labels the file does not code get the generic fallback."""
    label_id = int(label_id)
    data = terminology_data()
    entry = data["labels"].get(str(label_id))
    if entry is None:
        fallback = data["generic_fallback"]
        return LabelTerms(label_id, name_of(label_id), Code.from_list(fallback["category"]),  # type: ignore[arg-type]
                          Code.from_list(fallback["type"]), source="generic")  # type: ignore[arg-type]
    return LabelTerms(
        label_id=label_id,
        name=entry["name"],
        category=Code.from_list(entry["category"]),  # type: ignore[arg-type]
        type=Code.from_list(entry["type"]),  # type: ignore[arg-type]
        type_modifier=Code.from_list(entry.get("type_modifier")),
        anatomic_region=Code.from_list(entry.get("anatomic_region")),
        anatomic_region_modifier=Code.from_list(entry.get("anatomic_region_modifier")),
        source=entry.get("source", "dicom"),
    )


def all_terms() -> list[LabelTerms]:
    """Terminology of every valid MAISI label (background excluded), in id order."""
    return [terms_of(i) for i in sorted(valid_ids()) if i != 0]


@lru_cache(maxsize=1)
def _ids_by_codes() -> dict[tuple, int]:
    """Code combination -> label id, only for combinations that name exactly one label."""
    seen: dict[tuple, list[int]] = {}
    for terms in all_terms():
        seen.setdefault(terms.match_key(), []).append(terms.label_id)
    return {key: ids[0] for key, ids in seen.items() if len(ids) == 1}


def label_id_for_codes(category: Code, type_: Code, type_modifier: Code | None = None,
                       anatomic_region: Code | None = None, anatomic_region_modifier: Code | None = None) -> int | None:
    """The MAISI label these codes describe, or None when none or several labels share them."""
    parts = (category, type_, type_modifier, anatomic_region, anatomic_region_modifier)
    return _ids_by_codes().get(tuple(p.key() if p else None for p in parts))


def slicer_terminology_entry(label_id: int) -> str:
    """Slicer's serialised terminology entry for a label (what a segment's terminology tag holds)."""
    terms = terms_of(label_id)

    def code(c: Code | None) -> str:
        return f"{c.scheme}^{c.value}^{c.meaning}" if c else "^^"

    anatomic_context = SLICER_ANATOMIC_CONTEXT_NAME if terms.anatomic_region else ""
    return "~".join([
        SLICER_CONTEXT_NAME, code(terms.category), code(terms.type), code(terms.type_modifier),
        anatomic_context, code(terms.anatomic_region), code(terms.anatomic_region_modifier),
    ])


def _slicer_item(code: Code, rgb: tuple[int, int, int], label: str | None) -> dict[str, Any]:
    item: dict[str, Any] = code.as_dict()
    item["recommendedDisplayRGBValue"] = list(rgb)
    if label:
        item["3dSlicerLabel"] = label
    return item


def slicer_terminology() -> dict[str, Any]:
    """The terminology as a 3D Slicer terminology context (category -> type -> modifier).

    A type (or type + modifier) shared by several labels (the twelve left ribs, tumors of different
    organs) appears once, without a 3dSlicerLabel; the segment name tells those labels apart.
    """
    terms = all_terms()
    users: dict[tuple, list[LabelTerms]] = {}
    for t in terms:
        users.setdefault((t.category.key(), t.type.key(), t.type_modifier.key() if t.type_modifier else None), []).append(t)

    def unique_name(key: tuple) -> str | None:
        labels = users[key]
        return labels[0].name if len(labels) == 1 else None

    categories: dict[tuple, dict[str, Any]] = {}
    types: dict[tuple, dict[str, Any]] = {}
    for t in terms:
        cat_key = t.category.key()
        category = categories.setdefault(cat_key, {**t.category.as_dict(), "showAnatomy": False, "Type": []})
        if t.anatomic_region is not None:
            category["showAnatomy"] = True
        type_key = (cat_key, t.type.key())
        if type_key not in types:
            plain_key = (cat_key, t.type.key(), None)
            name = unique_name(plain_key) if plain_key in users else None
            types[type_key] = _slicer_item(t.type, color_of(t.label_id), name)
            category["Type"].append(types[type_key])
        if t.type_modifier is not None:
            modifiers = types[type_key].setdefault("Modifier", [])
            mod_key = (cat_key, t.type.key(), t.type_modifier.key())
            if all((m["CodingSchemeDesignator"].upper(), m["CodeValue"]) != t.type_modifier.key() for m in modifiers):
                modifiers.append(_slicer_item(t.type_modifier, color_of(t.label_id), unique_name(mod_key)))
    return {
        "SegmentationCategoryTypeContextName": SLICER_CONTEXT_NAME,
        "@schema": SLICER_SCHEMA,
        "SegmentationCodes": {"Category": list(categories.values())},
    }


def write_slicer_terminology(path: str | Path) -> Path:
    """Write the Slicer terminology JSON (atomically)."""
    from MAISIEngine.io.atomic import write_text_atomic

    path = Path(path)
    text = json.dumps(slicer_terminology(), indent=2)
    text = re.sub(r"\[\s+(\d+),\s+(\d+),\s+(\d+)\s+\]", r"[\1, \2, \3]", text)  # one colour per line
    write_text_atomic(path, text + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    target = Path(args[0]) if args else Path("MAISISynth/Resources/maisi.term.json")
    print(write_slicer_terminology(target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
