"""Weights cache and downloads, against a real HTTP server on 127.0.0.1 that behaves like Hugging Face.

The server supports Range requests, publishes the sha256 in `X-Linked-Etag`, can redirect like the
Hub does (the header on the redirect only), can cut a connection after N bytes, can ignore Range, and
can publish a wrong hash (a tampered file).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from MAISIEngine.errors import MaisiError, WeightsMissingError
from MAISIEngine.presets import load_preset, preset_from_dict
from MAISIEngine.weights import (
    CORRUPT,
    MANIFEST,
    MISSING,
    PRESENT,
    VERIFIED,
    cache_path,
    cached_file,
    download_file,
    download_model,
    download_weights,
    entries_for_name,
    entry_by_name,
    import_files,
    load_registry,
    recorded_sha256,
    registry_path,
    resolve_weight_path,
    status_of,
    verify_cache,
    weights_dir,
    weights_home,
    weights_status,
)
from MAISIEngine.weights.cli import main as weights_main

REPO = Path(__file__).resolve().parents[1]
AE = entry_by_name("autoencoder_v1.pt")
CONTROLNET = entry_by_name("controlnet_3d_rflow-ct.pt")


def payload(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def checkpoint_payload(size: int, seed: int) -> bytes:
    """A real tensor checkpoint of about `size` bytes: import and verify load files structurally and
    refuse sizes far from the published one (autoencoder_v1.pt: 84 MB, so 43 MB passes)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.from_numpy(np.frombuffer(payload(size, seed), np.uint8).copy())}}, buffer)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FakeHub:
    """What the server serves and how it misbehaves; it also records every request it gets."""

    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> bytes
    published: dict[str, str | None] = field(default_factory=dict)  # URL path -> X-Linked-Etag override
    cut_after: dict[str, int] = field(default_factory=dict)  # URL path -> cut the next GET after N bytes
    ignore_range: bool = False
    redirect: bool = False  # answer 302 (with the etag) to a CDN path, like the Hub does
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def add(self, entry, data: bytes, published: str | None = "auto") -> None:
        path = f"/{entry.repo}/resolve/main/{entry.path}"
        self.files[path] = data
        self.published[path] = f'"{sha(data)}"' if published == "auto" else published

    def gets(self, suffix: str) -> list[dict[str, str]]:
        return [headers for method, path, headers in self.requests if method == "GET" and path.endswith(suffix)]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _serve(self, body: bool) -> None:
            hub.requests.append((self.command, self.path, dict(self.headers)))
            path = self.path
            if path.startswith("/cdn/"):
                path = path[len("/cdn"):]
                etag = None
            else:
                etag = hub.published.get(path)
            if path not in hub.files:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if hub.redirect and not self.path.startswith("/cdn/"):
                self.send_response(302)
                self.send_header("Location", "/cdn" + path)
                if etag:
                    self.send_header("X-Linked-Etag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = hub.files[path]
            start = 0
            wanted = self.headers.get("Range")
            if wanted and not hub.ignore_range:
                start = int(wanted.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if etag:
                self.send_header("X-Linked-Etag", etag)
            self.end_headers()
            if not body:
                return
            cut = hub.cut_after.pop(path, None)
            if cut is not None:
                self.wfile.write(data[start:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data[start:])

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

    return Handler


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    state = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MAISI_HF_ENDPOINT", state.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield state
    server.shutdown()
    server.server_close()


def cache_files() -> list[str]:
    """Everything in the cache except the registry and lock files."""
    root = weights_dir()
    if not root.exists():
        return []
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and p.name != "registry.json" and ".locks" not in p.parts
    )


# --- manifest and cache location ------------------------------------------------------------------


def test_manifest_lists_the_official_files_and_covers_the_official_presets():
    assert {e.path for e in MANIFEST} == {
        "models/autoencoder_v1.pt", "models/diff_unet_3d_rflow-ct.pt", "models/controlnet_3d_rflow-ct.pt",
        "models/diff_unet_3d_ddpm-ct.pt", "models/controlnet_3d_ddpm-ct.pt",
        "models/mask_generation_autoencoder.pt", "models/mask_generation_diffusion_unet.pt",
        "datasets/all_anatomy_size_conditions.json",
        "datasets/all_masks_flexible_size_and_spacing_4000.zip",
        "datasets/candidate_masks_flexible_size_and_spacing_4000.json",
        "RadImageNet-ResNet50_notop.pth",
    }
    assert {e.name: e.repo for e in MANIFEST if e.repo != "nvidia/NV-Generate-CT"} == {
        "radimagenet-resnet50": "MONAI/checkpoints"}  # the FID feature network, not NVIDIA's
    assert len({e.name for e in MANIFEST}) == len(MANIFEST)
    for name in ("rflow-ct", "ddpm-ct"):
        preset = load_preset(name)
        files = entries_for_name(name)
        assert sorted(e.filename for e in files) == sorted(preset.weights.values())
        for role, filename in preset.weights.items():
            entry = entry_by_name(filename)
            assert entry.role == role and name in entry.presets
    assert [e.filename for e in entries_for_name("masks")] == [
        "all_masks_flexible_size_and_spacing_4000.zip", "candidate_masks_flexible_size_and_spacing_4000.json"]
    assert [e.filename for e in entries_for_name("mask-generation")] == [
        "mask_generation_autoencoder.pt", "mask_generation_diffusion_unet.pt", "all_anatomy_size_conditions.json"]
    assert entries_for_name("demo") == []  # shipped with the engine: nothing to download
    with pytest.raises(MaisiError, match="unknown weight file or model 'nonsense'"):
        entries_for_name("nonsense")


def test_weights_home_follows_maisi_home_then_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MAISI_HOME", str(tmp_path / "mine"))
    assert weights_home() == tmp_path / "mine"
    assert cache_path(AE) == tmp_path / "mine" / "weights/nvidia/NV-Generate-CT/models/autoencoder_v1.pt"
    monkeypatch.delenv("MAISI_HOME")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert weights_home() == tmp_path / "xdg" / "maisi"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert weights_home() == Path.home() / ".cache" / "maisi"


# --- download -------------------------------------------------------------------------------------


def test_full_download_is_hashed_checked_and_recorded(hub):
    data = payload(300_000, seed=1)
    hub.add(AE, data)
    calls: list[tuple[int, int | None]] = []
    path = download_file(AE, show_bar=False, progress=lambda done, total: calls.append((done, total)))

    assert path == cache_path(AE) and path.read_bytes() == data
    record = json.loads(registry_path().read_text())["files"]["nvidia/NV-Generate-CT/models/autoencoder_v1.pt"]
    assert record["sha256"] == sha(data) and record["size"] == 300_000
    assert record["checked_against"] == "x-linked-etag"
    assert record["source"] == f"{hub.url}/nvidia/NV-Generate-CT/resolve/main/models/autoencoder_v1.pt"
    assert status_of(AE).status == VERIFIED
    assert calls[0] == (0, 300_000) and calls[-1] == (300_000, 300_000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert hub.gets("autoencoder_v1.pt")[0]["Accept-Encoding"] == "identity"
    assert cache_files() == ["nvidia/NV-Generate-CT/models/autoencoder_v1.pt"]
    assert recorded_sha256(path) == sha(data)

    download_file(AE, show_bar=False)  # cached and intact: no second request
    assert len(hub.gets("autoencoder_v1.pt")) == 1


def test_interrupted_download_resumes_where_it_stopped_on_the_next_call(hub):
    data = payload(400_000, seed=2)
    hub.add(AE, data)
    hub.cut_after[f"/{AE.repo}/resolve/main/{AE.path}"] = 123_456

    with pytest.raises(MaisiError, match="interrupted after 123456 of 400000 bytes") as info:
        download_file(AE, show_bar=False, attempts=1)
    assert "maisi weights download autoencoder-v1" in info.value.hint
    part = cache_path(AE).with_name("autoencoder_v1.pt.part")
    assert part.stat().st_size == 123_456 and part.read_bytes() == data[:123_456]
    assert not cache_path(AE).exists() and status_of(AE).status == MISSING

    path = download_file(AE, show_bar=False, attempts=1)
    first, second = hub.gets("autoencoder_v1.pt")
    assert "Range" not in first
    assert second["Range"] == "bytes=123456-"
    assert path.read_bytes() == data
    assert load_registry()[AE.key]["sha256"] == sha(data)  # hashed over the kept part and the rest
    assert status_of(AE).status == VERIFIED
    assert not part.exists()


def test_interrupted_download_retries_with_range_within_one_call(hub):
    data = payload(250_000, seed=3)
    hub.add(CONTROLNET, data)
    hub.cut_after[f"/{CONTROLNET.repo}/resolve/main/{CONTROLNET.path}"] = 70_000
    path = download_file(CONTROLNET, show_bar=False, attempts=2, retry_wait_s=0.0)
    assert path.read_bytes() == data
    assert [h.get("Range") for h in hub.gets(CONTROLNET.filename)] == [None, "bytes=70000-"]


def test_server_ignoring_range_makes_the_download_start_over(hub):
    data = payload(200_000, seed=4)
    hub.add(AE, data)
    hub.ignore_range = True
    part = cache_path(AE).with_name("autoencoder_v1.pt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 50_000)  # a stale part with other bytes: would corrupt an append

    path = download_file(AE, show_bar=False)
    assert hub.gets("autoencoder_v1.pt")[0]["Range"] == "bytes=50000-"
    assert path.read_bytes() == data and load_registry()[AE.key]["sha256"] == sha(data)


def test_a_complete_part_left_before_the_rename_is_fetched_again(hub):
    data = payload(90_000, seed=9)
    hub.add(AE, data)
    part = cache_path(AE).with_name("autoencoder_v1.pt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data)  # the server answers 416 to `bytes=90000-`
    path = download_file(AE, show_bar=False, retry_wait_s=0.0)
    assert [h.get("Range") for h in hub.gets(AE.filename)] == ["bytes=90000-", None]
    assert path.read_bytes() == data and status_of(AE).status == VERIFIED


def test_a_second_download_of_the_same_file_is_refused_while_one_runs(hub):
    from filelock import FileLock

    hub.add(AE, payload(10_000, seed=10))
    held = FileLock(str(weights_dir() / ".locks" / "download-autoencoder-v1.lock"))
    (weights_dir() / ".locks").mkdir(parents=True)
    with held:
        result: list[BaseException] = []
        worker = threading.Thread(target=lambda: _capture(result, lambda: download_file(AE, show_bar=False)))
        worker.start()
        worker.join(30)
    assert isinstance(result[0], MaisiError) and "another process is downloading autoencoder_v1.pt" in str(result[0])
    assert hub.requests == []


def _capture(sink: list, call) -> None:
    try:
        call()
    except BaseException as exc:  # handed to the test thread
        sink.append(exc)


def test_hub_style_redirect_with_the_hash_on_the_redirect_only(hub):
    data = payload(150_000, seed=5)
    hub.add(AE, data)
    hub.redirect = True
    path = download_file(AE, show_bar=False)
    assert path.read_bytes() == data
    assert status_of(AE).status == VERIFIED
    hub_path = "/nvidia/NV-Generate-CT/resolve/main/models/autoencoder_v1.pt"
    assert [p for m, p, _ in hub.requests] == [hub_path, "/cdn" + hub_path]


def test_tampered_file_is_rejected_and_nothing_stays_in_the_cache(hub):
    data = payload(300_000, seed=6)
    hub.add(AE, data, published=f'"{sha(b"the genuine file")}"')
    with pytest.raises(MaisiError, match="autoencoder_v1.pt was rejected: its sha256") as info:
        download_file(AE, show_bar=False)
    assert "deleted" in info.value.hint
    assert cache_files() == []
    assert not cache_path(AE).exists() and not cache_path(AE).with_name("autoencoder_v1.pt.part").exists()
    assert AE.key not in load_registry()


def test_caller_sha256_is_checked_when_the_server_publishes_none(hub):
    data = payload(120_000, seed=7)
    hub.add(AE, data, published=None)
    with pytest.raises(MaisiError, match="differs from the expected sha256"):
        download_file(AE, show_bar=False, expected_sha256="0" * 64)
    assert cache_files() == []
    path = download_file(AE, show_bar=False, expected_sha256=sha(data).upper())
    assert path.read_bytes() == data
    assert load_registry()[AE.key]["checked_against"] == "caller"


def test_download_without_published_hash_is_present_not_verified(hub):
    data = payload(100_000, seed=8)
    hub.add(AE, data, published='"0123456789abcdef0123456789abcdef01234567"')  # a git sha1: not a sha256
    download_file(AE, show_bar=False)
    assert status_of(AE).status == PRESENT
    assert load_registry()[AE.key]["checked_against"] is None


def test_unreachable_server_gives_one_clear_error_with_the_offline_hint(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MAISI_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(MaisiError, match=f"cannot reach 127.0.0.1:{port}") as info:
        download_file(AE, show_bar=False)
    assert "maisi weights import DIR" in info.value.hint
    assert cache_files() == []


def test_missing_file_on_the_server_is_a_clear_error(hub):
    with pytest.raises(MaisiError, match=r"autoencoder_v1.pt was not found at .* \(HTTP 404\)"):
        download_file(AE, show_bar=False)


def test_download_weights_expands_a_model_name_and_reports_progress_per_file(hub):
    preset = load_preset("rflow-ct")
    blobs = {}
    for i, filename in enumerate(preset.weights.values()):
        blobs[filename] = payload(60_000 + i, seed=10 + i)
        hub.add(entry_by_name(filename), blobs[filename])
    finals: dict[str, tuple[int, int | None]] = {}
    paths = download_weights(
        ["rflow-ct"], show_bar=False, progress=lambda e, d, t: finals.__setitem__(e.filename, (d, t)))
    assert sorted(p.name for p in paths) == sorted(blobs)
    assert finals == {name: (len(data), len(data)) for name, data in blobs.items()}
    status = weights_status(preset)
    assert {role: (s.present, s.verified) for role, s in status.items()} == dict.fromkeys(preset.weights, (True, True))
    for role, filename in preset.weights.items():
        assert resolve_weight_path(preset, role).read_bytes() == blobs[filename]


def test_download_model_reports_bytes_over_all_files_of_the_model(hub, tiny_preset_dict, tmp_path):
    preset = load_preset("ddpm-ct")
    blobs = {f: payload(40_000 * (i + 1), seed=40 + i) for i, f in enumerate(preset.weights.values())}
    for filename, data in blobs.items():
        hub.add(entry_by_name(filename), data)
    download_file(entry_by_name("autoencoder_v1.pt"), show_bar=False)  # one file is already cached
    calls: list[tuple[int, int]] = []
    paths = download_model("ddpm-ct", progress=lambda done, total: calls.append((done, total)))
    total = sum(len(d) for d in blobs.values())
    assert sorted(p.name for p in paths) == sorted(blobs)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(hub.gets("autoencoder_v1.pt")) == 1  # not fetched twice

    model = tmp_path / "trained"
    model.mkdir()
    (model / "preset.json").write_text(json.dumps(tiny_preset_dict))
    for filename in tiny_preset_dict["weights"].values():
        (model / filename).write_bytes(b"w")
    assert download_model(str(model)) == [model / f for f in tiny_preset_dict["weights"].values()]


# --- import, verify, resolve ----------------------------------------------------------------------


def test_import_dir_copies_recognised_files_and_records_their_hashes(tmp_path):
    copied = tmp_path / "usb" / "NV-Generate-CT"
    (copied / "models").mkdir(parents=True)
    (copied / "datasets").mkdir()
    ae, candidates = checkpoint_payload(43_000_000, seed=20), b'{"candidates": []}'
    (copied / "models" / "autoencoder_v1.pt").write_bytes(ae)
    (copied / "datasets" / "candidate_masks_flexible_size_and_spacing_4000.json").write_bytes(candidates)
    (copied / "README.md").write_text("not a weight file")

    imported = import_files([tmp_path / "usb"], show_bar=False)
    assert [i.entry.name for i in imported] == ["autoencoder-v1", "mask-candidates"]
    assert cache_path(AE).read_bytes() == ae
    registry = load_registry()
    assert registry[AE.key]["sha256"] == sha(ae) and registry[AE.key]["size"] == len(ae)
    assert registry[AE.key]["source"] == f"import:{(copied / 'models' / 'autoencoder_v1.pt').resolve()}"
    assert registry[entry_by_name("mask-candidates").key]["sha256"] == sha(candidates)
    assert status_of(AE).status == PRESENT  # recorded, but no published hash confirmed it
    assert cached_file("mask-candidates").read_bytes() == candidates
    with pytest.raises(WeightsMissingError, match="all_masks_flexible_size_and_spacing_4000.zip is not in the cache") as info:
        cached_file("all_masks_flexible_size_and_spacing_4000.zip")
    assert info.value.hint == "run `maisi weights download mask-database`"
    assert len(cache_files()) == 2

    (tmp_path / "usb" / "copy2").mkdir()
    (tmp_path / "usb" / "copy2" / "autoencoder_v1.pt").write_bytes(ae)
    with pytest.raises(MaisiError, match="2 copies of autoencoder_v1.pt"):
        import_files([tmp_path / "usb"], show_bar=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MaisiError, match="no official MAISI file found"):
        import_files([tmp_path / "empty"], show_bar=False)


def test_verify_detects_corruption_and_download_replaces_the_damaged_file(hub):
    data = checkpoint_payload(43_000_000, seed=21)
    hub.add(AE, data)
    path = download_file(AE, show_bar=False)
    assert [r.outcome for r in verify_cache(show_bar=False)] == ["ok"]

    damaged = bytearray(data)
    damaged[1000] ^= 0xFF  # same size: only a re-hash finds it
    path.write_bytes(bytes(damaged))
    results = verify_cache(show_bar=False)
    assert [(r.entry.name, r.outcome) for r in results] == [("autoencoder-v1", "corrupt")]
    assert status_of(AE).status == CORRUPT
    with pytest.raises(MaisiError, match="damaged"):
        resolve_weight_path(load_preset("rflow-ct"), "autoencoder")
    assert weights_main(["verify"]) == 2

    download_file(AE, show_bar=False)
    assert path.read_bytes() == data and status_of(AE).status == VERIFIED
    assert weights_main(["verify", "autoencoder-v1"]) == 0


def test_verify_remote_confirms_an_imported_file(hub, tmp_path):
    data = checkpoint_payload(43_000_000, seed=22)
    hub.add(AE, data)
    (tmp_path / "autoencoder_v1.pt").write_bytes(data)
    import_files([tmp_path], show_bar=False)
    assert status_of(AE).status == PRESENT
    [result] = verify_cache(remote=True, show_bar=False)
    assert result.outcome == "ok" and status_of(AE).status == VERIFIED
    assert [m for m, _, _ in hub.requests] == ["HEAD"]


def test_missing_official_weights_name_the_download_command():
    preset = load_preset("rflow-ct")
    with pytest.raises(WeightsMissingError) as info:
        resolve_weight_path(preset, "controlnet")
    assert "controlnet_3d_rflow-ct.pt" in info.value.message
    assert "`maisi weights download rflow-ct`" in info.value.hint
    assert {role: (s.present, s.verified) for role, s in weights_status(preset).items()} == {
        "autoencoder": (False, False), "diffusion_unet": (False, False), "controlnet": (False, False)}


def test_package_and_directory_weights_resolve_beside_their_preset(tmp_path, tiny_preset_dict):
    demo = load_preset("demo")
    assert weights_status(demo)["autoencoder"].path == REPO / "MAISIEngine/assets/demo/autoencoder.safetensors"

    model = tmp_path / "my-model"
    model.mkdir()
    (model / "preset.json").write_text(json.dumps(tiny_preset_dict))
    (model / "autoencoder.pt").write_bytes(b"weights")
    preset = load_preset(model)
    assert resolve_weight_path(preset, "autoencoder") == model / "autoencoder.pt"
    with pytest.raises(WeightsMissingError, match=r"my-model/controlnet.pt does not exist"):
        resolve_weight_path(preset, "controlnet")
    status = weights_status(preset)
    assert (status["autoencoder"].present, status["controlnet"].present) == (True, False)
    with pytest.raises(MaisiError, match="was not loaded from one"):
        resolve_weight_path(preset_from_dict(tiny_preset_dict), "autoencoder")


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_exit_codes_and_one_line_errors(hub, capsys):
    data = payload(64_000, seed=30)
    hub.add(CONTROLNET, data)

    assert weights_main(["path", "controlnet_3d_rflow-ct.pt"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: controlnet_3d_rflow-ct.pt is not in the cache "
                   "(run `maisi weights download rflow-ct-controlnet`)\n")

    assert weights_main(["download", "nonsense"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown weight file or model 'nonsense' (")

    assert weights_main(["download", "--quiet", "rflow-ct-controlnet"]) == 0
    out = capsys.readouterr().out
    assert f"controlnet_3d_rflow-ct.pt: verified (sha256 {sha(data)})" in out

    assert weights_main(["path", "rflow-ct-controlnet"]) == 0
    assert capsys.readouterr().out.strip() == str(cache_path(CONTROLNET))

    assert weights_main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["files"]}
    assert rows["rflow-ct-controlnet"]["status"] == "verified" and rows["rflow-ct-controlnet"]["size"] == 64_000
    assert rows["autoencoder-v1"]["status"] == "missing" and rows["autoencoder-v1"]["size"] is None

    assert weights_main(["list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "FILE", "USED", "BY", "SIZE", "STATUS"]
    assert [line.split()[-1] for line in table[1:4]] == ["missing", "missing", "verified"]


def test_cli_runs_as_a_module_in_a_fresh_process(hub, tmp_path):
    hub.add(AE, payload(50_000, seed=31))
    env = {**os.environ, "MAISI_HOME": str(tmp_path / "home"), "MAISI_HF_ENDPOINT": hub.url}
    ok = subprocess.run([sys.executable, "-m", "MAISIEngine.weights.cli", "download", "autoencoder_v1.pt"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    cached = tmp_path / "home/weights/nvidia/NV-Generate-CT/models/autoencoder_v1.pt"
    assert cached.read_bytes() == hub.files["/nvidia/NV-Generate-CT/resolve/main/models/autoencoder_v1.pt"]
    bad = subprocess.run([sys.executable, "-m", "MAISIEngine.weights.cli", "import", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_plausible_size_allows_a_checkpoint_of_the_network_alone_and_refuses_far_sizes(tmp_path) -> None:
    """The rflow-ct U-Net's reported 2.2 GB holds more than its 722 MB of float32 parameters: a file of
    the parameters alone passes, a file far below them or far above the report does not."""
    from MAISIEngine.errors import MaisiError
    from MAISIEngine.weights.local import check_plausible_size
    from MAISIEngine.weights.manifest import entry_by_name

    unet = entry_by_name("diff_unet_3d_rflow-ct.pt")
    check_plausible_size(unet, 722_152_583, tmp_path / unet.filename)
    check_plausible_size(unet, 2_200_000_000, tmp_path / unet.filename)
    for size in (1_800, 600_000_000, 4_500_000_000):
        with pytest.raises(MaisiError, match="the official diff_unet_3d_rflow-ct.pt is about"):
            check_plausible_size(unet, size, tmp_path / unet.filename)
    autoencoder = entry_by_name("autoencoder_v1.pt")
    check_plausible_size(autoencoder, 43_000_000, tmp_path / autoencoder.filename)
    with pytest.raises(MaisiError):
        check_plausible_size(autoencoder, 41_000_000, tmp_path / autoencoder.filename)
