"""`maisi batch`: torchrun ranks give the same files as one process, reruns resume, bad specs are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import block_mask
from MAISIEngine.batch.runner import derive_seed
from MAISIEngine.cli import main
from MAISIEngine.io.nifti import write_volume

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def spec_file(tiny_model_dir: Path, tmp_path: Path) -> Path:
    masks = tmp_path / "masks"
    masks.mkdir()
    for k, shape in enumerate([(32, 32, 32), (48, 48, 32), (32, 32, 48)]):
        write_volume(masks / f"case{k}.nii.gz", block_mask(shape), np.diag([4, 4, 4, 1]), dtype=np.uint8)
    spec = {"model": str(tiny_model_dir), "samples": 6, "base_seed": 42, "steps": 2, "device": "cpu",
            "masks": [{"folder": str(masks)}], "datalist": {"folds": 3}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_maisi(args: list[str], nproc: int = 1, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAISI_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", **(extra_env or {})}
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                   "-m", "MAISIEngine.cli", *args]
    else:
        command = [sys.executable, "-m", "MAISIEngine.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_two_ranks_equal_one_process(spec_file: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    first = run_maisi(["batch", str(spec_file), "-o", str(one)])
    assert first.returncode == 0, first.stderr
    second = run_maisi(["batch", str(spec_file), "-o", str(two)], nproc=2)
    assert second.returncode == 0, second.stderr
    a, b = manifest(one), manifest(two)
    assert [r["index"] for r in a] == list(range(6)) == [r["index"] for r in b]
    assert [r["seed"] for r in a] == [derive_seed(42, i) for i in range(6)] == [r["seed"] for r in b]
    assert {r["rank"] for r in b} == {0, 1}
    for ra, rb in zip(a, b):
        assert ra["sha256"]["labels.nii.gz"] == rb["sha256"]["labels.nii.gz"]
        assert ra["mask_source"] == rb["mask_source"]
        import nibabel as nib

        va = np.asarray(nib.load(str(one / ra["image"])).dataobj)
        vb = np.asarray(nib.load(str(two / rb["image"])).dataobj)
        np.testing.assert_array_equal(va, vb)
    report = json.loads((one / "report.json").read_text())
    assert report["samples_written"] == 6 and report["complete"] and report["missing"] == []
    datalist = json.loads((one / "datalist.json").read_text())
    assert datalist["numTraining"] == 6 and [e["fold"] for e in datalist["training"]] == [0, 1, 2, 0, 1, 2]
    assert datalist["training"][0]["image"] == "samples/sample_00000/image.nii.gz"


def test_interrupted_batch_resumes_without_redoing(spec_file: Path, tmp_path: Path) -> None:
    from MAISIEngine.batch.runner import run_batch
    from MAISIEngine.batch.spec import read_spec

    out = tmp_path / "out"
    spec = read_spec(spec_file)
    partial = run_batch(spec, out, log=lambda m: None, stop_after=3)
    assert partial is not None and partial["samples_written"] == 3 and not partial["complete"]
    assert partial["missing"] == [3, 4, 5]
    done_before = {i: (out / "samples" / f"sample_{i:05d}" / "sample.json").stat().st_mtime_ns for i in range(3)}
    # a half-written sample left by a kill, and a finished one whose file was damaged, are redone
    (out / "samples" / ".sample_00004.abc.partial").mkdir()
    damaged = out / "samples" / "sample_00002" / "image.nii.gz"
    damaged.write_bytes(b"broken")
    messages: list[str] = []
    report = run_batch(spec, out, log=messages.append)
    assert report is not None and report["complete"] and report["samples_written"] == 6
    assert "2 of 6 samples already done" in messages[0]
    for i in (0, 1):
        assert (out / "samples" / f"sample_{i:05d}" / "sample.json").stat().st_mtime_ns == done_before[i]
    assert not list((out / "samples").glob(".*partial"))
    assert len(manifest(out)) == 6


@pytest.mark.parametrize("change,expected", [
    ({"sampels": 3}, "unknown keys in the batch spec: sampels"),
    ({"samples": 0}, "at least one sample is needed"),
])
def test_bad_specs_are_refused(spec_file: Path, tmp_path: Path, capsys, change: dict, expected: str) -> None:
    spec = yaml.safe_load(spec_file.read_text())
    spec.update(change)
    spec_file.write_text(yaml.safe_dump(spec))
    assert main(["batch", str(spec_file), "-o", str(tmp_path / "o")]) == 2
    assert expected in capsys.readouterr().err


def test_empty_mask_folder_and_foreign_output_dir(spec_file: Path, tmp_path: Path, capsys) -> None:
    spec = yaml.safe_load(spec_file.read_text())
    empty = tmp_path / "empty"
    empty.mkdir()
    spec["masks"] = [{"folder": str(empty)}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    assert main(["batch", str(bad), "-o", str(tmp_path / "o1")]) == 2
    assert "holds no NIfTI files" in capsys.readouterr().err
    out = tmp_path / "o2"
    assert main(["batch", str(spec_file), "-o", str(out)]) == 0
    capsys.readouterr()
    spec = yaml.safe_load(spec_file.read_text())
    spec["base_seed"] = 7
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(spec))
    assert main(["batch", str(other), "-o", str(out)]) == 2
    assert "holds the outputs of another batch spec" in capsys.readouterr().err


def test_datalist_mixes_real_cases_at_the_ratio(spec_file: Path, tmp_path: Path) -> None:
    from MAISIEngine.batch.datalist import write_datalist
    from MAISIEngine.batch.runner import run_batch
    from MAISIEngine.batch.spec import read_spec

    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = {"training": [{"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"} for i in range(4)]}
    (real_dir / "datalist.json").write_text(json.dumps(real))
    spec = read_spec(spec_file)
    out = tmp_path / "out"
    assert run_batch(spec, out, log=lambda m: None)["complete"]
    spec.datalist = {"folds": 2, "real": str(real_dir / "datalist.json"), "ratio": "1:0.5"}
    data = json.loads(write_datalist(out, spec).read_text())
    entries = data["training"]
    assert [e["synthetic"] for e in entries] == [False] * 4 + [True] * 2
    assert entries[0]["image"] == str((real_dir / "img0.nii.gz").resolve())
    assert [e["fold"] for e in entries] == [0, 1, 0, 1, 0, 1]
    assert data["numTraining"] == 6
