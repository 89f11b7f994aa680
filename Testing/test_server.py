"""`maisi serve` on 127.0.0.1: queue, cancel, auth, upload limits, safe names, reconnecting clients."""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import block_mask
from MAISIEngine.io.nifti import write_volume
from server_fixtures import TOKEN, running_server, wait_for_status

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def submit(url: str, job: dict, mask: Path, filename: str | None = None, headers=AUTH) -> requests.Response:
    with open(mask, "rb") as handle:
        return requests.post(f"{url}/jobs", headers=headers, data={"job": json.dumps(job)},
                             files={"mask": (filename or mask.name, handle, "application/gzip")}, timeout=30)


def wait_final(url: str, job_id: str, timeout: float = 120) -> dict:
    return wait_for_status(url, job_id, timeout=timeout, poll_s=0.2)


@pytest.fixture
def mask(tmp_path: Path) -> Path:
    return write_volume(tmp_path / "mask.nii.gz", block_mask((32, 32, 32)), np.diag([4, 4, 4, 1]), dtype=np.uint8)


def generate_job(model_dir: Path, steps: int = 3, seed: int = 0) -> dict:
    return {"type": "generate", "model": model_dir.name, "steps": steps, "seed": seed, "device": "cpu"}


def test_second_job_queues_then_both_complete_and_results_download(tiny_model_dir, mask, tmp_path) -> None:
    with running_server(tmp_path / "jobs", model_dirs=[tiny_model_dir]) as (url, _):
        first = submit(url, generate_job(tiny_model_dir, steps=60), mask)
        second = submit(url, generate_job(tiny_model_dir, steps=3, seed=1), mask)
        assert first.status_code == 201 and second.status_code == 201
        second_id = second.json()["id"]
        time.sleep(0.5)
        waiting = requests.get(f"{url}/jobs/{second_id}", headers=AUTH, timeout=10).json()
        assert waiting["status"] == "queued" and waiting["queue_position"] == 0
        assert wait_final(url, first.json()["id"])["status"] == "done"
        done = wait_final(url, second_id)
        assert done["status"] == "done" and done["provenance"]["seed"] == 1
        assert {"image.nii.gz", "labels.nii.gz", "provenance.json"} <= set(done["result_files"])
        # A client that went away reconnects later with only the job id and fetches its result.
        fetched = requests.get(f"{url}/jobs/{second_id}/files/labels.nii.gz", headers=AUTH, timeout=10)
        assert fetched.status_code == 200
        stored = tmp_path / "jobs" / second_id / "output" / "labels.nii.gz"
        assert fetched.content == stored.read_bytes()
        stream = requests.get(f"{url}/jobs/{second_id}/events", headers=AUTH, timeout=30).text
        events = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: {\"event\"")]
        assert [e["event"] for e in events][-1] == "result"
        assert any(e.get("stage") == "sampling" for e in events)


def test_cancel_stops_the_job_and_leaves_no_output(tiny_model_dir, tmp_path) -> None:
    big = write_volume(tmp_path / "big.nii.gz", block_mask((64, 64, 64)), np.diag([2, 2, 2, 1]), dtype=np.uint8)
    with running_server(tmp_path / "jobs", model_dirs=[tiny_model_dir]) as (url, _):
        job_id = submit(url, generate_job(tiny_model_dir, steps=500), big).json()["id"]
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/jobs/{job_id}", headers=AUTH, timeout=10).json().get("progress", {}) in (None, {}) \
                or requests.get(f"{url}/jobs/{job_id}", headers=AUTH, timeout=10).json()["progress"]["stage"] != "sampling":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert requests.post(f"{url}/jobs/{job_id}/cancel", headers=AUTH, timeout=10).status_code == 200
        assert wait_final(url, job_id, timeout=30)["status"] == "cancelled"
        output = tmp_path / "jobs" / job_id / "output"
        assert not output.exists() or not any(output.iterdir())


def test_wrong_or_missing_token_gets_401(mask, tmp_path) -> None:
    with running_server(tmp_path / "jobs") as (url, _):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"},
                        {"Authorization": f"Bearer {TOKEN[:-1]}"}):
            assert submit(url, {"type": "phantom"}, mask, headers=headers).status_code == 401
            assert requests.get(f"{url}/jobs/{'0' * 32}", headers=headers, timeout=10).status_code == 401
    from MAISIEngine.server import app as server_app

    source = inspect.getsource(server_app.create_app)
    assert "hmac.compare_digest(token_digest(presented), expected)" in source


def test_upload_over_the_limit_gets_413(tmp_path) -> None:
    big = tmp_path / "big.nii.gz"
    big.write_bytes(np.random.default_rng(0).bytes(5 << 20))
    with running_server(tmp_path / "jobs", max_upload_bytes=1 << 20) as (url, _):
        assert submit(url, {"type": "phantom"}, big).status_code == 413
    assert not any((tmp_path / "jobs").glob("*/inputs/*"))


def test_file_name_cannot_escape_the_job_folder(tiny_model_dir, mask, tmp_path) -> None:
    with running_server(tmp_path / "jobs", model_dirs=[tiny_model_dir]) as (url, _):
        response = submit(url, generate_job(tiny_model_dir), mask, filename="../../escape.nii.gz")
        if response.status_code == 201:
            job_id = response.json()["id"]
            inputs = list((tmp_path / "jobs" / job_id / "inputs").iterdir())
            assert [p.name for p in inputs] == ["mask-escape.nii.gz"]
        else:
            assert response.status_code == 400
    assert not (tmp_path / "escape.nii.gz").exists() and not (tmp_path / "jobs" / "escape.nii.gz").exists()


def test_non_loopback_without_token_is_refused(capsys) -> None:
    from MAISIEngine.cli import main

    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0 without a token" in capsys.readouterr().err


def test_front_end_server_mode_runs_a_generation(tiny_model_dir, mask, tmp_path) -> None:
    import nibabel as nib

    from MAISISynthLib.remote import RemoteJobRunner

    with running_server(tmp_path / "jobs", model_dirs=[tiny_model_dir]) as (url, _):
        runner = RemoteJobRunner(url, TOKEN)
        assert runner.check()["status"] == "ok"
        job = {"type": "generate", "model": str(tiny_model_dir), "mask": str(mask), "seed": 3, "steps": 2,
               "device": "cpu", "output_dir": str(tmp_path / "ignored")}
        remote = runner.start(job, tmp_path / "client")
        assert remote.wait(timeout=120) == 0
        events = remote.poll()
        assert [e["event"] for e in events][-1] == "result" and remote.progress_fraction == 1.0
        assert any(e.get("stage") == "sampling" for e in events)
        local = Path(remote.result["labels"])
        assert local.parent == tmp_path / "client" / "output"
        np.testing.assert_array_equal(np.asarray(nib.load(str(local)).dataobj), block_mask((32, 32, 32)))
        assert remote.result["provenance_data"]["seed"] == 3
        with pytest.raises(Exception, match="refused the access token"):
            RemoteJobRunner(url, "wrong-token-wrong-token").start(job, tmp_path / "client2")
