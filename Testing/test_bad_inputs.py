"""The bad-input table: every row is refused with exit code 2 (or its HTTP status), one line, no
traceback, and nothing left on disk. CLI, worker, weights and server (a real uvicorn on 127.0.0.1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from bad_inputs import make_bad_files, make_bad_models
from server_fixtures import TOKEN, running_server

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_bad_files(tmp_path_factory.mktemp("bad-files"))


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    return make_bad_models(tmp_path_factory.mktemp("bad-models"), tiny_model_dir)


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def fill(arg: str, bad: dict[str, Path], models: dict[str, Path], tiny: Path, out: Path) -> str:
    """`{file:NAME}`, `{model:NAME}`, `{tiny}`, `{out}` in a table row, made concrete."""
    if arg.startswith("{file:"):
        return str(bad[arg[6:-1]])
    if arg.startswith("{model:"):
        return str(models[arg[7:-1]])
    return arg.replace("{tiny}", str(tiny)).replace("{out}", str(out))


G = ["generate", "--model", "{tiny}"]
OK = ["--mask", "{file:ok}"]
CLI_ROWS: list[tuple[str, list[str], str]] = [
    # (id, argv, a phrase the one line must hold)
    ("size-zero", [*G, *OK, "--size", "0", "0", "0"], "--size 0 is out of range"),
    ("size-two-values", [*G, "--size", "32", "32"], "expected 3 arguments"),
    ("size-negative", [*G, *OK, "--size", "-1", "32", "32"], "--size -1 is out of range"),
    ("size-huge", [*G, *OK, "--size", "5000", "32", "32"], "--size 5000 is out of range"),
    ("size-not-a-number", [*G, "--size", "a", "b", "c"], "invalid int value"),
    ("spacing-zero", [*G, "--size", "32", "32", "32", "--spacing", "0", "1", "1"], "--spacing 0.0 is out of range"),
    ("spacing-nan", [*G, "--size", "32", "32", "32", "--spacing", "nan", "1", "1"], "--spacing nan is out of range"),
    ("spacing-inf", [*G, "--size", "32", "32", "32", "--spacing", "inf", "1", "1"], "--spacing inf is out of range"),
    ("spacing-6e30", [*G, "--size", "32", "32", "32", "--spacing", "6e30", "1", "1"], "is out of range"),
    ("spacing-0.006", [*G, "--size", "32", "32", "32", "--spacing", "0.006", "1", "1"], "is out of range"),
    ("seed-overflow", [*G, *OK, "--seed", "1180591620717411303424"], "--seed 1180591620717411303424 is out of range"),
    ("seed-negative", [*G, *OK, "--seed", "-1"], "--seed -1 is out of range"),
    ("seed-2^63", [*G, *OK, "--seed", str(2**63)], "is out of range"),
    ("seed-text", [*G, *OK, "--seed", "abc"], "invalid int value: 'abc'"),
    ("steps-zero", [*G, *OK, "--steps", "0"], "--steps 0 is out of range"),
    ("steps-negative", [*G, *OK, "--steps", "-5"], "--steps -5 is out of range"),
    ("steps-huge", [*G, *OK, "--steps", "100000000"], "is out of range"),
    ("steps-float", [*G, *OK, "--steps", "2.5"], "invalid int value"),
    ("retries-negative", [*G, *OK, "--quality-retries", "-3"], "--quality-retries -3 is out of range"),
    ("retries-huge", [*G, *OK, "--quality-retries", "100000"], "is out of range"),
    ("guidance-nan", [*G, *OK, "--guidance", "nan"], "--guidance nan is out of range"),
    ("guidance-inf", [*G, *OK, "--guidance", "inf"], "--guidance inf is out of range"),
    ("guidance-negative", [*G, *OK, "--guidance", "-1"], "--guidance -1.0 is out of range"),
    ("guidance-text", [*G, *OK, "--guidance", "lots"], "invalid float value"),
    ("memory-text", [*G, *OK, "--max-gpu-memory", "lots"], "cannot read memory size 'lots'"),
    ("memory-inf", [*G, *OK, "--max-gpu-memory", "inf"], "memory size 'inf'"),
    ("memory-nan", [*G, *OK, "--max-gpu-memory", "nanG"], "memory size 'nanG'"),
    ("memory-negative", [*G, *OK, "--max-gpu-memory=-5G"], "memory size '-5G'"),
    ("memory-zero", [*G, *OK, "--max-gpu-memory", "0"], "memory size '0'"),
    ("memory-exabytes", [*G, *OK, "--max-gpu-memory", "1e30T"], "memory size '1e30T'"),
    ("device-unknown", [*G, *OK, "--device", "gpu7"], "--device 'gpu7' is not a device"),
    ("device-negative", [*G, *OK, "--device", "cuda:-1"], "is not a device"),
    ("devices-empty-item", [*G, *OK, "--devices", "cuda:0,,cuda:1"], "is not a device"),
    ("devices-auto", [*G, *OK, "--devices", "auto"], "--devices lists 'auto'"),
    ("precision-unknown", [*G, *OK, "--precision", "fp8"], "invalid choice"),
    ("format-unknown", [*G, *OK, "--format", "png"], "invalid choice"),
    ("output-empty", ["generate", "--model", "{tiny}", *OK, "-o", ""], "-o is empty"),
    ("output-is-a-file", [*G, *OK, "-o", "{file:a_file}"], "is a file, not a folder"),
    ("output-holds-other-files", [*G, *OK, "-o", "{file:occupied}"], "holds other files (notes.txt)"),
    ("model-is-a-nifti", ["generate", "--model", "{file:ok}", *OK], "is not a model preset"),
    ("model-unknown-name", ["generate", "--model", "no-such-model", *OK], "unknown model 'no-such-model'"),
    ("model-preset-not-json", ["generate", "--model", "{model:not_json}", *OK], "is not a model preset"),
    ("model-weights-escape", ["generate", "--model", "{model:escaping}", *OK], "leaves the model folder"),
    ("model-weights-absolute", ["generate", "--model", "{model:absolute}", *OK], "leaves the model folder"),
    ("model-safetensors-2^60", ["generate", "--model", "{model:huge_header}", *OK, "--steps", "1"],
     "not a valid safetensors file (header length 1152921504606846976"),
    ("mask-missing", [*G, "--mask", "/nonexistent/mask.nii.gz"], "does not exist"),
    ("mask-huge-header", [*G, "--mask", "{file:huge_header}"], "is too large: (2048, 2048, 1024)"),
    ("mask-gzip-bomb", [*G, "--mask", "{file:gzip_bomb}"], "decompresses to more than its header declares"),
    ("mask-claims-1gib", [*G, "--mask", "{file:bomb_claims_1gib}"], "is too large: (1024, 1024, 1024)"),
    ("mask-flipped-bytes", [*G, "--mask", "{file:flipped}"], "is a damaged gzip file"),
    ("mask-bad-crc", [*G, "--mask", "{file:bad_crc}"], "CRC check failed"),
    ("mask-bad-length", [*G, "--mask", "{file:bad_length}"], "is a damaged gzip file"),
    ("mask-truncated-gz", [*G, "--mask", "{file:truncated}"], "is a damaged gzip file"),
    ("mask-truncated-nii", [*G, "--mask", "{file:truncated_plain}"], "holds 2000 bytes, its header needs"),
    ("mask-complex", [*G, "--mask", "{file:complex}"], "holds complex voxels"),
    ("mask-float-labels", [*G, "--mask", "{file:float_labels}"], "holds non-integer values"),
    ("mask-nan-labels", [*G, "--mask", "{file:nan_labels}"], "holds non-integer values"),
    ("mask-spacing-0.006", [*G, "--mask", "{file:tiny_spacing}"], "has a voxel spacing of (0.006"),
    ("mask-spacing-6e30", [*G, "--mask", "{file:huge_spacing}"], "has a voxel spacing of"),
    ("mask-singular-affine", [*G, "--mask", "{file:singular}"], "has an invalid affine"),
    ("mask-nan-affine", [*G, "--mask", "{file:nan_affine}"], "has an invalid affine"),
    ("mask-4d", [*G, "--mask", "{file:four_d}"], "has 4 dimensions"),
    ("mask-2d", [*G, "--mask", "{file:two_d}"], "has 2 dimensions"),
    ("mask-rgb", [*G, "--mask", "{file:rgb}"], "voxels (give integer label ids)"),
    ("mask-text", [*G, "--mask", "{file:text}"], "cannot read mask text.nii.gz as NIfTI"),
    ("mask-empty-file", [*G, "--mask", "{file:empty}"], "cannot read mask empty.nii.gz as NIfTI"),
    ("mask-random-dcm", [*G, "--mask", "{file:random_dcm}"], "is not a readable DICOM object"),
    ("mask-folder-without-seg", [*G, "--mask", "{file:no_seg}"], "no DICOM SEG file found"),
    ("mask-unknown-ids", [*G, "--mask", "{file:unknown_ids}", "--steps", "1"], "label ids MAISI does not know: 250"),
    ("region-unknown", [*G, "--size", "32", "32", "32", "--spacing", "4", "4", "4", "--region", "elbow"], "elbow"),
    ("inpaint-seed", ["inpaint", "--image", "{file:ok}", "--labels", "{file:ok}", "--type", "liver", "--seed", "-2"],
     "--seed -2 is out of range"),
    ("inpaint-steps", ["inpaint", "--image", "{file:ok}", "--labels", "{file:ok}", "--type", "liver", "--steps", "0"],
     "--steps 0 is out of range"),
    ("inpaint-margin-nan", ["inpaint", "--image", "{file:ok}", "--labels", "{file:ok}", "--type", "liver",
                            "--margin-mm", "nan"], "--margin-mm nan is out of range"),
    ("inpaint-device", ["inpaint", "--image", "{file:ok}", "--labels", "{file:ok}", "--type", "liver",
                        "--device", "tpu"], "is not a device"),
    ("inpaint-type", ["inpaint", "--image", "{file:ok}", "--labels", "{file:ok}", "--type", "brain"], "invalid choice"),
    ("inpaint-output-empty", ["inpaint", "--image", "{file:ok}", "--labels", "{file:ok}", "--type", "liver", "-o", ""],
     "-o is empty"),
    ("inpaint-image-huge", ["inpaint", "--model", "{tiny}", "--image", "{file:huge_header}", "--labels", "{file:ok}",
                            "--type", "liver"], "is too large"),
    ("inpaint-labels-complex", ["inpaint", "--model", "{tiny}", "--image", "{file:ok}", "--labels", "{file:complex}",
                                "--type", "liver"], "holds complex voxels"),
    ("serve-port", ["serve", "--port", "70000"], "--port 70000 is out of range"),
    ("serve-queue-zero", ["serve", "--max-queued", "0"], "--max-queued 0 is out of range"),
    ("serve-uploads-zero", ["serve", "--max-parallel-uploads", "0"], "is out of range"),
    ("serve-upload-mb-nan", ["serve", "--max-upload-mb", "nan"], "--max-upload-mb nan is out of range"),
    ("serve-short-token", ["serve", "--token-file", "{file:short_token}"], "shorter than 16 characters"),
    ("serve-missing-token", ["serve", "--token-file", "/nonexistent/token"], "cannot read token file"),
    ("serve-public-without-token", ["serve", "--host", "0.0.0.0"], "refusing to serve on 0.0.0.0 without a token"),
    ("serve-model-dir-not-a-model", ["serve", "--model-dir", "{file:no_seg}"], "unknown model"),
    ("unknown-command", ["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("row", CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_cli_refuses(row, bad, bad_models, tiny_model_dir, tmp_path, monkeypatch, capsys) -> None:
    from MAISIEngine.cli import main

    _, argv, phrase = row
    out = tmp_path / "out" / "run"
    argv = [fill(a, bad, bad_models, tiny_model_dir, out) for a in argv]
    if argv[0] in ("generate", "inpaint") and "-o" not in argv:
        argv += ["-o", str(out)]
    monkeypatch.chdir(tmp_path)
    before_bad = tree(bad["ok"].parent)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert phrase in err, err
    assert not (tmp_path / "out").exists() and sorted(tmp_path.iterdir()) == []
    assert tree(bad["ok"].parent) == before_bad  # nothing written beside the inputs either


WORKER_ROWS: list[tuple[str, object, str]] = [
    ("not-json", "{not json", "is not valid JSON"),
    ("a-list", [], "must hold one JSON object"),
    ("null", None, "must hold one JSON object"),
    ("unknown-type", {"type": "format-disk"}, "unknown job type"),
    ("unknown-key", {"type": "generate", "output_dir": "{out}", "sneed": 1}, "unknown keys: sneed"),
    ("no-output-dir", {"type": "generate"}, "lacks output_dir"),
    ("seed-text", {"type": "generate", "output_dir": "{out}", "seed": "abc"}, "'seed' must be a whole number"),
    ("seed-overflow", {"type": "generate", "output_dir": "{out}", "seed": 2**70}, "'seed' 1180591620717411303424"),
    ("seed-bool", {"type": "generate", "output_dir": "{out}", "seed": True}, "'seed' must be a whole number"),
    ("steps-zero", {"type": "generate", "output_dir": "{out}", "steps": 0}, "'steps' 0 is out of range"),
    ("guidance-nan", {"type": "generate", "output_dir": "{out}", "guidance_scale": float("nan")}, "out of range"),
    ("size-zero", {"type": "generate", "output_dir": "{out}", "size": [0, 0, 0]}, "'size' 0 is out of range"),
    ("size-text", {"type": "generate", "output_dir": "{out}", "size": "big"}, "needs three voxel counts"),
    ("spacing-inf", {"type": "generate", "output_dir": "{out}", "spacing": [1, 1, 1e309]}, "out of range"),
    ("retries-negative", {"type": "generate", "output_dir": "{out}", "quality_retries": -3}, "out of range"),
    ("device-unknown", {"type": "generate", "output_dir": "{out}", "device": "tpu"}, "is not a device"),
    ("memory-text", {"type": "generate", "output_dir": "{out}", "max_gpu_memory": "lots"}, "cannot read memory size"),
    ("output-empty", {"type": "generate", "output_dir": ""}, "lacks output_dir"),
    ("model-etc", {"type": "generate", "output_dir": "{out}", "model": "/etc"}, "unknown model '/etc'"),
    ("model-not-text", {"type": "generate", "output_dir": "{out}", "model": 7}, "'model' must be a name"),
    ("mask-not-text", {"type": "generate", "output_dir": "{out}", "mask": ["a"]}, "'mask' must be a file path"),
    ("mask-huge-header", {"type": "generate", "output_dir": "{out}", "mask": "{file:huge_header}"}, "is too large"),
    ("mask-gzip-bomb", {"type": "generate", "output_dir": "{out}", "mask": "{file:gzip_bomb}"}, "decompresses to more"),
    ("mask-bad-crc", {"type": "generate", "output_dir": "{out}", "mask": "{file:bad_crc}"}, "CRC check failed"),
    ("mask-complex", {"type": "generate", "output_dir": "{out}", "mask": "{file:complex}"}, "holds complex voxels"),
    ("inpaint-margin", {"type": "inpaint", "output_dir": "{out}", "image": "x", "labels": "y", "margin_mm": -1},
     "'margin_mm' -1 is out of range"),
    ("phantom-size-zero", {"type": "phantom", "output_dir": "{out}", "size": [0, 0, 0]}, "out of range"),
    ("phantom-size-small", {"type": "phantom", "output_dir": "{out}", "size": [4, 4, 4]}, "too small for a phantom"),
]


def _fill_job(value, bad: dict[str, Path], out: Path):
    if isinstance(value, str):
        return str(bad[value[6:-1]]) if value.startswith("{file:") else value.replace("{out}", str(out))
    if isinstance(value, dict):
        return {k: _fill_job(v, bad, out) for k, v in value.items()}
    return value


@pytest.mark.parametrize("row", WORKER_ROWS, ids=[r[0] for r in WORKER_ROWS])
def test_worker_refuses(row, bad, tmp_path, capsys) -> None:
    from MAISIEngine.worker import main

    _, job, phrase = row
    out = tmp_path / "out"
    job_file = tmp_path / "job.json"
    job_file.write_text(job if isinstance(job, str) else json.dumps(_fill_job(job, bad, out)))
    code = main([str(job_file)])
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    assert code == 2 and events[-1]["event"] == "error", lines
    assert len([e for e in events if e["event"] == "error"]) == 1 and phrase in events[-1]["message"], events
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json"]


def _tiny_file(folder: Path) -> Path:
    (folder / "autoencoder_v1.pt").write_bytes(os.urandom(1800))
    return folder


def _link_out(folder: Path) -> Path:
    (folder / "autoencoder_v1.pt").symlink_to("/etc/passwd")
    return folder


def _zero_filled(folder: Path) -> Path:
    with open(folder / "autoencoder_v1.pt", "wb") as handle:
        handle.truncate(60_000_000)  # the right size, but no checkpoint inside
    return folder


def _bad_json(folder: Path) -> Path:
    (folder / "candidate_masks_flexible_size_and_spacing_4000.json").write_text("{not json")
    return folder


def _small_zip(folder: Path) -> Path:
    (folder / "all_masks_flexible_size_and_spacing_4000.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return folder


def _pickle(folder: Path) -> Path:
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch /tmp/maisi-pwned",))

    data = pickle.dumps({"state_dict": Boom()})
    with open(folder / "autoencoder_v1.pt", "wb") as handle:
        handle.write(data)
        handle.truncate(60_000_000)
    return folder


WEIGHT_ROWS = [
    ("import-1.8kB-named-official", ["import", "{src}"], _tiny_file, "the official autoencoder_v1.pt is about"),
    ("import-symlink-to-etc-passwd", ["import", "{src}"], _link_out, "is a link to a file outside"),
    ("import-zero-filled", ["import", "{src}"], _zero_filled, "is not a valid autoencoder_v1.pt"),
    ("import-pickle-with-code", ["import", "{src}"], _pickle, "is not a valid autoencoder_v1.pt"),
    ("import-bad-json", ["import", "{src}"], _bad_json, "is not a valid candidate_masks"),
    ("import-zip-far-too-small", ["import", "{src}"], _small_zip, "the official all_masks"),
    ("import-missing-folder", ["import", "/nonexistent/usb"], None, "does not exist"),
    ("import-empty-folder", ["import", "{src}"], lambda f: f, "no official MAISI file found"),
    ("download-unknown", ["download", "nonsense"], None, "unknown weight file or model 'nonsense'"),
    ("path-not-cached", ["path", "autoencoder_v1.pt"], None, "is not in the cache"),
]


@pytest.mark.parametrize("row", WEIGHT_ROWS, ids=[r[0] for r in WEIGHT_ROWS])
def test_weights_refuse(row, tmp_path, private_maisi_home, capsys) -> None:
    from MAISIEngine.weights.cli import main

    _, argv, make, phrase = row
    source = tmp_path / "usb"
    source.mkdir()
    if make is not None:
        make(source)
    code = main([a.replace("{src}", str(source)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert phrase in err, err
    cached = [p for p in (private_maisi_home / "weights").rglob("*") if p.is_file() and ".locks" not in p.parts] \
        if (private_maisi_home / "weights").exists() else []
    assert [p.name for p in cached if p.name != "registry.json"] == []
    assert not Path("/tmp/maisi-pwned").exists()


def test_verify_reports_a_cached_file_that_is_no_checkpoint(tmp_path, capsys) -> None:
    from MAISIEngine.weights import cache
    from MAISIEngine.weights.cli import main
    from MAISIEngine.weights.manifest import entry_by_name

    entry = entry_by_name("autoencoder_v1.pt")
    path = cache.cache_path(entry)
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(1800))
    cache.record_file(entry, cache.file_sha256(path), "test", None)
    assert main(["verify"]) == 2
    out = capsys.readouterr()
    assert "corrupt" in out.out and "about 84000000 bytes" in out.out


# --- server ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    jobs = tmp_path_factory.mktemp("bad-jobs")
    with running_server(jobs, max_upload_bytes=1 << 20, model_dirs=[tiny_model_dir]) as (url, store):
        yield url, jobs


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    jobs = tmp_path_factory.mktemp("open-jobs")
    with running_server(jobs, token=None) as (url, store):
        yield url, jobs


def _post(url: str, job=None, files=None, headers=AUTH, raw: bytes | None = None, content_type: str | None = None):
    if raw is not None:
        hdrs = {**headers, **({"Content-Type": content_type} if content_type else {})}
        return requests.post(f"{url}/jobs", data=raw, headers=hdrs, timeout=30)
    data = {} if job is None else {"job": job if isinstance(job, str) else json.dumps(job)}
    return requests.post(f"{url}/jobs", data=data, files=files or {}, headers=headers, timeout=30)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


MASK = ("mask.nii.gz", b"\x1f\x8b not really", "application/gzip")
GEN = {"type": "generate", "model": "demo", "size": [32, 32, 32], "spacing": [4, 4, 4]}
SERVER_ROWS = [
    ("no-token", dict(job={"type": "phantom"}, headers={}), 401),
    ("wrong-token", dict(job={"type": "phantom"}, headers={"Authorization": "Bearer nope"}), 401),
    ("seed-text", dict(job={**GEN, "seed": "abc"}), 422),
    ("seed-overflow", dict(job={**GEN, "seed": 2**70}), 422),
    ("steps-zero", dict(job={**GEN, "steps": 0}), 422),
    ("guidance-nan", dict(job=json.dumps(GEN)[:-1] + ', "guidance_scale": NaN}'), 422),
    ("size-zero", dict(job={**GEN, "size": [0, 0, 0]}), 422),
    ("spacing-huge", dict(job={**GEN, "spacing": [6e30, 1, 1]}), 422),
    ("retries-negative", dict(job={**GEN, "quality_retries": -3}), 422),
    ("memory-text", dict(job={**GEN, "max_gpu_memory": "lots"}), 422),
    ("device-unknown", dict(job={**GEN, "device": "/dev/sda"}), 422),
    ("format-unknown", dict(job={**GEN, "format": "exe"}), 422),
    ("job-list", dict(job=[]), 422),
    ("job-null", dict(job="null"), 422),
    ("job-deep-nesting", dict(job=_deep(8_000)), 400),
    ("job-100k-deep-nesting", dict(job=_deep(100_000)), 413),
    ("job-not-json", dict(job="{nope"), 400),
    ("job-missing", dict(job=None, files={"mask": MASK}), 422),
    ("job-unknown-type", dict(job={"type": "shell"}), 422),
    ("job-unknown-field", dict(job={**GEN, "command": "rm -rf /"}), 422),
    ("mask-as-path", dict(job={**GEN, "mask": "/etc/passwd"}), 422),
    ("mask-as-folder", dict(job={**GEN, "mask": "/usr"}), 422),
    ("image-as-path", dict(job={"type": "inpaint", "image": "/etc/shadow", "labels": "/etc/passwd"}), 422),
    ("model-as-path", dict(job={**GEN, "model": "/etc"}), 422),
    ("model-traversal", dict(job={**GEN, "model": "../../etc"}), 422),
    ("model-unknown", dict(job={**GEN, "model": "not-offered"}), 422),
    ("download-local-model", dict(job={"type": "download", "model": "tiny-model0"}), 422),
    ("phantom-with-upload", dict(job={"type": "phantom"}, files={"mask": MASK}), 422),
    ("inpaint-without-image", dict(job={"type": "inpaint"}, files={"labels": MASK}), 422),
    ("unexpected-file-part", dict(job=GEN, files={"evil": MASK}), 422),
    ("file-part-twice", dict(job=GEN, files=[("mask", MASK), ("mask", MASK)]), 400),
    ("unsafe-file-name", dict(job=GEN, files={"mask": (".hidden", b"x", "text/plain")}), 400),
    ("template-kind", dict(job={**GEN, "template": {"kind": "shell"}}), 422),
    ("generate-nothing", dict(job={"type": "generate"}), 422),
    ("json-body", dict(raw=json.dumps(GEN).encode(), content_type="application/json"), 415),
    ("no-content-type", dict(raw=b"{}"), 415),
    ("form-field-twice", dict(raw=b"job=1&job=2", content_type="application/x-www-form-urlencoded"), 400),
    ("multipart-no-boundary", dict(raw=b"--x\r\n", content_type="multipart/form-data"), 400),
    ("multipart-truncated", dict(raw=b'--xyz\r\nContent-Disposition: form-data; name="job"\r\n\r\n{"ty',
                                 content_type="multipart/form-data; boundary=xyz"), 400),
    ("multipart-garbage", dict(raw=os.urandom(2000), content_type="multipart/form-data; boundary=xyz"), 400),
    ("upload-over-limit", dict(job=GEN, files={"mask": ("mask.nii.gz", b"\0" * (2 << 20), "application/gzip")}), 413),
    ("too-many-parts", dict(job=GEN, files=[(f"f{i}", MASK) for i in range(12)]), 422),
]


def _check_nothing_left(jobs: Path) -> None:
    assert sorted(p.name for p in jobs.iterdir()) == []


@pytest.mark.parametrize("row", SERVER_ROWS, ids=[r[0] for r in SERVER_ROWS])
def test_server_refuses(row, server) -> None:
    url, jobs = server
    _, kwargs, status = row
    response = _post(url, **kwargs)
    assert response.status_code == status, response.text
    if status not in (401,):
        detail = response.json()["detail"]
        message = detail["message"] if isinstance(detail, dict) else str(detail)
        assert message and "\n" not in message and str(jobs) not in response.text
    _check_nothing_left(jobs)


def _chunked(url: str, size: int) -> int:
    """An upload without Content-Length (chunked): the limit must hold while streaming."""
    boundary = "b0undary"

    def body():
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="job"\r\n\r\n{json.dumps(GEN)}\r\n'
               f'--{boundary}\r\nContent-Disposition: form-data; name="mask"; filename="m.nii.gz"\r\n\r\n').encode()
        for _ in range(size // 65536):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    return requests.post(f"{url}/jobs", data=body(), timeout=30,
                         headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}).status_code


def test_server_refuses_a_chunked_upload_over_the_limit(server) -> None:
    url, jobs = server
    assert _chunked(url, 3 << 20) == 413
    _check_nothing_left(jobs)


OPEN_ROWS = [
    ("host-evil", {"Host": "evil.example"}, 403),
    ("host-rebinding", {"Host": "127.0.0.1.nip.io:8765"}, 403),
    ("origin-cross-site-form", {"Origin": "http://evil.example"}, 403),
    ("origin-null", {"Origin": "null"}, 403),
    ("sec-fetch-cross-site", {"Sec-Fetch-Site": "cross-site"}, 403),
    ("sec-fetch-same-site", {"Sec-Fetch-Site": "same-site"}, 403),
]


@pytest.mark.parametrize("row", OPEN_ROWS, ids=[r[0] for r in OPEN_ROWS])
def test_server_without_token_refuses_web_pages_and_foreign_hosts(row, open_server) -> None:
    url, jobs = open_server
    _, headers, status = row
    form = requests.post(f"{url}/jobs", data={"job": json.dumps({"type": "phantom", "size": [16, 16, 16]})},
                         headers=headers, timeout=30)
    assert form.status_code == status, form.text
    assert requests.get(f"{url}/health", headers=headers, timeout=10).status_code == status
    _check_nothing_left(jobs)


def test_table_has_at_least_100_rows() -> None:
    rows = len(CLI_ROWS) + len(WORKER_ROWS) + len(WEIGHT_ROWS) + len(SERVER_ROWS) + len(OPEN_ROWS) + 2
    assert rows >= 100, rows
