"""The Slicer module's Server mode on a real MRML scene (slicer-core) and a real `maisi serve` on
127.0.0.1: a segmentation becomes the job's label map, the job goes through `execution.start_job` and
`execution.run_to_end` (what `MAISISynthLogic.startJob` / `runJob` call), the result is downloaded and
loaded as CT + segmentation nodes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slicer_fixtures import WORKER_ENV, slicer_scene  # noqa: E402,F401  (fixtures)

slicer = pytest.importorskip("slicer")

from conftest import block_mask  # noqa: E402
from MAISIEngine.errors import MaisiError  # noqa: E402
from MAISIEngine.io.nifti import write_volume  # noqa: E402
from MAISISynthLib import execution, mrml, params  # noqa: E402
from MAISISynthLib.jobs import JobRunner  # noqa: E402
from server_fixtures import TOKEN, running_server  # noqa: E402

AFFINE = np.diag([-4.0, -4.0, 4.0, 1.0])
AFFINE[:3, 3] = (60.0, 70.0, -50.0)


def server_settings(url: str, token_path: Path | str) -> execution.ExecutionSettings:
    """What the Compute section's parameters give (`MAISISynthParameterNode.executionSettings`)."""
    return execution.ExecutionSettings.from_values("Server", url, Path(token_path))


def test_generation_on_the_server_loads_into_nodes(slicer_scene, tiny_model_dir, tmp_path):
    token_path = tmp_path / "maisi.token"
    token_path.write_text(TOKEN + "\n")
    labels = block_mask((32, 32, 32))
    source = write_volume(tmp_path / "drawn.nii.gz", labels, AFFINE, dtype=np.uint8)
    segmentation = mrml.labelmap_file_to_segmentation(source, name="drawn")
    workdir = tmp_path / "work"
    workdir.mkdir()
    # As MAISISynthLogic.generateJob: the segmentation is written as the job's label map.
    mask = mrml.temporary_labelmap_file(segmentation, None, workdir)
    job = params.generate_job(str(tiny_model_dir), workdir / "result", mask=mask, region="abdomen", seed=9, steps=2,
                              device="cpu")
    ticks: list[int] = []
    with running_server(tmp_path / "server-jobs", model_dirs=[tiny_model_dir]) as (url, store):
        running = execution.start_job(job, workdir, server_settings(url, token_path), JobRunner(env=WORKER_ENV))
        assert type(running).__name__ == "RemoteJob"
        execution.run_to_end(running, timeout_s=120, tick=lambda: ticks.append(1))
        assert running.returncode == 0, running.error
        (state,) = store.states.values()
        served_image = store.folder(state.id) / "output" / "image.nii.gz"
        assert state.status == "done" and served_image.is_file()
        server_job = json.loads((store.folder(state.id) / "job.json").read_text())
    assert ticks  # the application's event loop ran while the server worked
    sampling = [e for e in running.events if e["event"] == "progress" and e["stage"] == "sampling"]
    assert [(e["step"], e["total"]) for e in sampling][-1] == (2, 2)
    assert running.progress_fraction == 1.0
    assert server_job["region"] == "abdomen" and server_job["seed"] == 9 and Path(server_job["mask"]).is_relative_to(
        tmp_path / "server-jobs")
    result = running.result
    assert Path(result["image"]) == workdir / "output" / "image.nii.gz"
    assert Path(result["image"]).read_bytes() == served_image.read_bytes()

    nodes = mrml.load_generation_result(result)
    volume = nodes.volume
    assert volume.GetName() == "Synthetic CT seed 9"
    assert volume.GetImageData().GetDimensions() == (32, 32, 32)
    # Generation writes RAS voxel order: the LPS-stored input's grid with i and j reversed, same world positions.
    ras_affine = AFFINE @ np.array([[-1, 0, 0, 31], [0, -1, 0, 31], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_allclose(mrml.node_affine(volume), ras_affine, atol=1e-5)
    np.testing.assert_allclose(np.diag(ras_affine)[:3], (4.0, 4.0, 4.0))
    np.testing.assert_array_equal(mrml.array_ijk(volume), np.asarray(nib.load(result["image"]).dataobj))
    for node in (volume, nodes.segmentation):
        assert node.GetAttribute("MAISI.seed") == "9"
        assert node.GetAttribute("MAISI.model") == "tiny-test"
        assert node.GetAttribute("MAISI.steps") == "2"
        assert node.GetAttribute("MAISI.synthetic") == "true"
        assert node.GetAttribute("MAISI.outputDir") == str(workdir / "output")
    values = mrml.array_ijk(mrml.segmentation_to_labelmap(nodes.segmentation, volume))
    np.testing.assert_array_equal(values, labels[::-1, ::-1, :])  # the drawn labels, at the same world positions
    sh = mrml.subject_hierarchy()
    assert sh.GetItemName(nodes.study_item) == "Synthetic study seed 9, model tiny-test"


def test_server_mode_errors_are_maisi_errors_before_anything_runs(slicer_scene, tmp_path):
    job = params.generate_job("demo", tmp_path / "result", template_region="chest", size=(32, 32, 32),
                              spacing=(8.0, 8.0, 8.0), steps=2, device="cpu")
    wrong = tmp_path / "wrong.token"
    wrong.write_text("this-is-not-the-servers-token")
    with running_server(tmp_path / "server-jobs") as (url, store):
        with pytest.raises(MaisiError) as info:
            execution.start_job(job, tmp_path / "work", server_settings(url, wrong))
        assert (info.value.message, info.value.hint) == ("the MAISI server refused the access token",
                                                          "check the token file you chose")
        with pytest.raises(MaisiError, match="cannot read the token file"):
            execution.start_job(job, tmp_path / "work", server_settings(url, tmp_path / "missing.token"))
        assert store.states == {}
