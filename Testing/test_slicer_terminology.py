"""The MAISI terminology (Resources/maisi.term.json) loads through Slicer's real terminology logic and
holds the codes of every segment the module writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MAISISynth"))
slicer = pytest.importorskip("slicer")

from MAISIEngine import labels as maisi_labels  # noqa: E402
from MAISISynthLib import mrml, terminology  # noqa: E402

CONTEXT = "Segmentation category and type - MAISI"


def loaded_codes(logic, context: str) -> set[tuple[str, str]]:
    """(category code, type code) of every type the logic holds for `context`."""
    codes = set()
    for c in range(logic.GetNumberOfCategoriesInTerminology(context)):
        category = slicer.vtkSlicerTerminologyCategory()
        assert logic.GetNthCategoryInTerminology(context, c, category)
        for t in range(logic.GetNumberOfTypesInTerminologyCategory(context, category)):
            kind = slicer.vtkSlicerTerminologyType()
            assert logic.GetNthTypeInTerminologyCategory(context, category, t, kind)
            codes.add((category.GetCodeValue(), kind.GetCodeValue()))
    return codes


def test_the_terminology_file_registers_with_slicers_logic():
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    assert CONTEXT not in terminology.loaded_terminology_names(logic)
    assert terminology.register_terminology(logic) == CONTEXT == mrml.terminology_context_name()
    assert CONTEXT in terminology.loaded_terminology_names(logic)
    entry = slicer.vtkSlicerTerminologyEntry()
    assert logic.FindTypeInTerminologyBy3dSlicerLabel(CONTEXT, "liver", entry)
    assert (entry.GetTypeObject().GetCodingSchemeDesignator(), entry.GetTypeObject().GetCodeValue(),
            entry.GetTypeObject().GetCodeMeaning()) == ("SCT", "10200004", "Liver")
    assert list(entry.GetTypeObject().GetRecommendedDisplayRGBValue()) == list(maisi_labels.color_of(1))


def test_every_segment_terminology_the_module_writes_is_in_the_loaded_context():
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    terminology.register_terminology(logic)
    codes = loaded_codes(logic, CONTEXT)
    assert len(codes) >= 40
    missing = []
    for label_id in sorted(maisi_labels.valid_ids() - {0}):
        written = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(mrml.terminology_of(label_id).entry_string(), written)
        assert written.GetTerminologyContextName() == CONTEXT
        if (written.GetCategoryObject().GetCodeValue(), written.GetTypeObject().GetCodeValue()) not in codes:
            missing.append(maisi_labels.name_of(label_id))
    assert missing == []


def test_a_missing_or_unreadable_file_is_a_clear_error(tmp_path):
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    with pytest.raises(RuntimeError, match="is missing"):
        terminology.register_terminology(logic, tmp_path / "none.term.json")
    bad = tmp_path / "bad.term.json"
    bad.write_text("{}")
    with pytest.raises(RuntimeError, match="could not read"):
        terminology.register_terminology(logic, bad)
