"""The Slicer module's "Generated label map" input on Slicer's real MRML (slicer-core): the sliders' anatomy
sizes become the worker's generate-mask job, the map (drawn by the real worker with a tiny mask model)
opens as an editable segmentation before any CT exists, a tumor is painted into it with the Segment
Editor logic, and the CT is generated from that segmentation. A missing mask model is one message.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from maskgen_fixtures import tiny_mask_dir  # noqa: E402,F401  (fixture)
from slicer_fixtures import WORKER_ENV, random_model_dir, run_worker_job, slicer_scene  # noqa: E402,F401
from test_slicer_painting import editor_on, paint_ball  # noqa: E402

slicer = pytest.importorskip("slicer")

from MAISIEngine import labels as maisi_labels  # noqa: E402
from MAISIEngine.maskgen import anatomy  # noqa: E402
from MAISISynthLib import editing, generated_map, mask_request, mrml, panel, scene_jobs  # noqa: E402
from MAISISynthLib.jobs import JobRunner  # noqa: E402

LIVER, HEPATIC_TUMOR = 1, 26
GRID = ((48, 48, 32), (2.0, 2.0, 3.0))


def panel_settings(mask_dir: Path, **changes) -> SimpleNamespace:
    """The module's parameters (the names of MAISISynthParameterNode) for a generated-map run."""
    values = dict(model="demo", inputKind=panel.INPUT_GENERATED, inputSegmentation=None, inputLabelmap=None,
                  templateRegion="chest-abdomen", region="auto", size=GRID[0], spacing=GRID[1], seed=4, steps=2,
                  device="cpu", maskModel=mask_request.MODEL_FOLDER, maskModelFolder=mask_dir, maskSeed=1)
    values.update(mask_request.settings_values(mask_request.MaskRequest({"liver": 0.8})))
    values.update(changes)
    return SimpleNamespace(**values)


def file_labels_on_node_grid(path: str, node) -> np.ndarray:
    """The labels of a NIfTI file in the voxel order of `node` (the axes may be flipped or permuted)."""
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    file_to_node = np.linalg.inv(mrml.node_affine(node)) @ image.affine  # file ijk -> node ijk
    rotation = np.round(file_to_node[:3, :3]).astype(int)
    assert np.allclose(file_to_node[:3, :3], rotation, atol=1e-4), "the grids are not the same up to axis order"
    out = np.empty(mrml.array_ijk(node).shape, dtype=data.dtype)
    ijk = np.indices(data.shape).reshape(3, -1)
    target = np.round(rotation @ ijk + file_to_node[:3, 3:4]).astype(int)
    out[tuple(target)] = data.reshape(-1)
    return out


@pytest.fixture(scope="module")
def generated(tiny_mask_dir, tmp_path_factory) -> dict:
    """The module's Generate label map: its job from the panel settings, run by the real worker."""
    workdir = tmp_path_factory.mktemp("generate-map")
    job = scene_jobs.mask_job_for(panel_settings(tiny_mask_dir), workdir)
    return {"job": job, "result": run_worker_job(job, workdir)}


def test_the_sliders_become_the_generate_mask_job(generated, tiny_mask_dir):
    job = generated["job"]
    assert job["type"] == "generate-mask" and job["model"] == str(tiny_mask_dir)
    absent = {tumor: -1.0 for tumor in anatomy.TUMORS}  # "no tumor": every tumor kind asked absent
    assert job["anatomy_sizes"] == {"liver": 0.8, **absent}  # unticked organs: from the database
    assert job["size"] == [48, 48, 32] and job["spacing"] == [2.0, 2.0, 3.0] and job["seed"] == 1
    assert job["region"] is None and job["device"] == "cpu"
    provenance = generated["result"]["provenance_data"]
    assert provenance["anatomy_sizes"] == job["anatomy_sizes"] and provenance["target_tumor"] is None
    assert generated["result"]["missing"] == [] and provenance["seed"] == 1  # the liver is in the first draw


def test_the_generated_map_opens_as_an_editable_segmentation_matching_the_file(slicer_scene, generated):
    result = generated["result"]
    nodes = generated_map.load_generated_map(result)
    segmentation, grid = nodes.segmentation, nodes.grid
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 1
    assert segmentation.GetName() == "MAISI generated label map seed 1"
    assert segmentation.GetAttribute("MAISI.synthetic") == "true" and segmentation.GetAttribute("MAISI.seed") == "1"
    # No temporary label map node is left; the grid volume (air) is the Segment Editor's source volume.
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0
    assert set(np.unique(mrml.array_ijk(grid)).tolist()) == {generated_map.AIR_HU}
    written = file_labels_on_node_grid(result["labels"], grid)
    present = sorted(int(v) for v in np.unique(written) if v != 0)
    assert LIVER in present and len(present) > 5
    # One segment per MAISI id: its label value, name, colour and terminology.
    table = segmentation.GetSegmentation()
    by_value = {table.GetSegment(sid).GetLabelValue(): table.GetSegment(sid) for sid in mrml.segment_ids(segmentation)}
    assert sorted(by_value) == present
    for label_id, segment in by_value.items():
        assert segment.GetName() == maisi_labels.name_of(label_id)
        assert mrml.segment_label_id(segment) == label_id
        expected = [c / 255.0 for c in maisi_labels.color_of(label_id)]
        assert np.allclose(segment.GetColor(), expected, atol=1e-6), label_id
    assert "Liver" in by_value[LIVER].GetTerminology() or "10200004" in by_value[LIVER].GetTerminology()
    # Voxel for voxel: the segmentation exported on the grid is the file the worker wrote.
    exported = mrml.segmentation_to_labelmap(segmentation, grid)
    np.testing.assert_array_equal(mrml.array_ijk(exported), written)
    assert np.allclose(mrml.node_affine(exported), mrml.node_affine(grid))


def test_a_tumor_painted_into_the_generated_map_goes_into_the_ct_job(slicer_scene, generated, random_model_dir,
                                                                      tiny_mask_dir, tmp_path):
    from scipy.ndimage import distance_transform_edt

    nodes = generated_map.load_generated_map(generated["result"])
    segmentation, grid = nodes.segmentation, nodes.grid
    labels = file_labels_on_node_grid(generated["result"]["labels"], grid)
    depth = distance_transform_edt(np.pad(labels == LIVER, 1))[1:-1, 1:-1, 1:-1]
    depth[:3], depth[-3:], depth[:, :3], depth[:, -3:], depth[:, :, :3], depth[:, :, -3:] = 0, 0, 0, 0, 0, 0
    centre = tuple(int(v) for v in np.unravel_index(np.argmax(depth), labels.shape))
    radius = 1 if depth[centre] < 3 else 2
    # The module's Add tumor segment + Paint: overwrite none, so the liver keeps every voxel.
    node = editing.segment_editor_node()
    tumor = mrml.add_tumor_segment(segmentation, "liver")
    editing.prepare_tumor_painting(node, segmentation, grid, tumor)
    ball = paint_ball(editor_on(slicer_scene, node), node, centre, radius)
    assert ball.sum() >= 7
    tumor_voxels = np.transpose(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, tumor, grid), (2, 1, 0))
    np.testing.assert_array_equal(tumor_voxels.astype(bool), ball)

    # Generate (the CT) with the generated map as input: the job's label map holds the painted tumor.
    settings = panel_settings(tiny_mask_dir, inputSegmentation=segmentation, model=str(random_model_dir))
    state = panel.panel_state(panel.PanelInputs(str(random_model_dir), input_kind=panel.INPUT_GENERATED,
                                                has_input_segmentation=True, size=GRID[0], spacing=GRID[1],
                                                mask_model=mask_request.MODEL_FOLDER,
                                                mask_model_folder=str(tiny_mask_dir)))
    assert state.generate_enabled and state.generate_map_enabled and state.show_input_segmentation
    workdir = tmp_path / "ct"
    job = scene_jobs.generate_job_for(settings, workdir)
    sent = file_labels_on_node_grid(job["mask"], grid)
    expected = labels.copy()
    expected[ball] = HEPATIC_TUMOR
    np.testing.assert_array_equal(sent, expected)
    result = run_worker_job(job, workdir)
    ct_nodes = mrml.load_generation_result(result, surfaces=False)
    assert ct_nodes.volume.GetImageData().GetDimensions()[2] > 0
    out = mrml.array_ijk(mrml.segmentation_to_labelmap(ct_nodes.segmentation, ct_nodes.volume))
    assert (out == HEPATIC_TUMOR).any() and (out == LIVER).any()


def test_panel_settings_round_trip_through_the_job_and_the_maps_provenance(generated, tiny_mask_dir):
    settings = panel_settings(tiny_mask_dir, maskTumor="hepatic tumor", maskTumorSize=0.35,
                              maskUseColon=True, maskSizeColon=0.1)
    request = mask_request.MaskRequest.from_settings(settings)
    job = mask_request.generate_mask_job("out", request, model="mask-ct", size=(256, 256, 128),
                                         spacing=(1.5, 1.5, 2.0), region="lower-body", seed=9)
    assert job["anatomy_sizes"]["hepatic tumor"] == 0.35 and job["anatomy_sizes"]["lung tumor"] == -1.0
    assert job["region"] == "pelvis"
    back = mask_request.settings_values(mask_request.MaskRequest.from_anatomy_sizes(job["anatomy_sizes"]))
    assert back == {name: getattr(settings, name) for name in back}
    # The map's provenance gives back the settings it was drawn with.
    provenance = generated["result"]["provenance_data"]["anatomy_sizes"]
    restored = mask_request.settings_values(mask_request.MaskRequest.from_anatomy_sizes(provenance))
    assert restored["maskUseLiver"] and restored["maskSizeLiver"] == 0.8
    assert not restored["maskUseStomach"] and not restored["maskUseColon"] and restored["maskTumor"] == mask_request.NO_TUMOR


def test_the_generated_input_asks_for_a_map_before_the_ct_and_for_a_model_folder(tiny_mask_dir):
    def state(**changes):
        values = dict(model="demo", input_kind=panel.INPUT_GENERATED, size=(64, 64, 64), spacing=(5.0, 5.0, 5.0),
                      mask_model=mask_request.MODEL_FOLDER, mask_model_folder=str(tiny_mask_dir))
        values.update(changes)
        return panel.panel_state(panel.PanelInputs(**values))

    before = state()
    assert before.show_generated_map and before.generate_map_enabled and not before.generate_enabled
    assert before.generate_tooltip.startswith("Click 'Generate label map' first")
    assert state(has_input_segmentation=True).generate_enabled
    assert not state(busy=True).generate_map_enabled
    no_folder = state(mask_model_folder="")
    assert not no_folder.generate_map_enabled and "choose the mask model's folder" in no_folder.generate_map_tooltip
    assert no_folder.show_mask_model_folder and not state(mask_model="mask-ct").show_mask_model_folder
    # The mask model's own grid rule, in the engine's words; its weights are checked by the worker.
    refused = state(mask_model="mask-ct")
    assert not refused.generate_map_enabled and refused.generate_map_tooltip.startswith(
        "the grid (size 64x64x64, spacing 5x5x5 mm) is not one the mask model accepts (mask model 'mask-ct' takes")
    assert state(mask_model="mask-ct", size=(256, 256, 128), spacing=(1.5, 1.5, 2.0)).generate_map_enabled
    other = state(input_kind=panel.INPUT_TEMPLATE)
    assert not other.show_generated_map and not other.generate_map_enabled


def test_a_missing_mask_model_is_one_clear_message(slicer_scene, tiny_mask_dir, tmp_path):
    """mask-ct without its weights, and a folder without its networks: the worker's one line, no traceback."""
    empty = tmp_path / "untrained"
    empty.mkdir()
    (empty / "mask_preset.json").write_text((Path(tiny_mask_dir) / "mask_preset.json").read_text())
    cases = [("mask-ct", (256, 256, 128), (1.5, 1.5, 2.0), "mask_generation_autoencoder.pt is not downloaded",
              "maisi weights download mask-generation"),
             (str(empty), GRID[0], GRID[1], "file of mask model 'tiny-mask' is missing", "maisi train mask-vae")]
    for n, (model, size, spacing, message, hint) in enumerate(cases):
        workdir = tmp_path / f"job{n}"
        job = mask_request.generate_mask_job(workdir / "map", mask_request.MaskRequest({"liver": 0.5}), model=model,
                                             size=size, spacing=spacing, seed=0, device="cpu")
        running = JobRunner(env=WORKER_ENV).start(job, workdir)
        assert running.wait(timeout=300) == 2
        running.poll()
        error = running.error
        assert error["kind"] == "WeightsMissingError" and message in error["message"]
        text = mask_request.error_text(error)
        assert hint in text and "Traceback" not in text and len(error["message"].splitlines()) == 1
        assert not (workdir / "map").exists()


def test_the_shipped_demo_mask_model_fills_the_panel_s_default_grid(slicer_scene, tmp_path):
    """mask-demo from the panel: the worker draws a chest-abdomen map that opens with every checked organ."""
    job = mask_request.generate_mask_job(tmp_path / "map", mask_request.MaskRequest({"liver": 0.9}), model="mask-demo",
                                         size=(64, 64, 64), spacing=(6.0, 6.0, 6.0), seed=0, device="cpu")
    result = run_worker_job(job, tmp_path)
    assert result["missing"] == [] and result["provenance_data"]["model"] == "mask-demo"
    nodes = generated_map.load_generated_map(result)
    values = {int(v) for v in np.unique(file_labels_on_node_grid(result["labels"], nodes.grid))}
    assert {1, 3, 4, 5, 14} <= values  # liver, spleen, pancreas, kidneys and values & set(range(33, 57)) and values & {28, 29, 30, 31, 32}
