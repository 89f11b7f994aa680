"""Fetch official files into the cache: streamed, resumable, hashed on the fly, checked, renamed atomically.

A download writes `<target>.part`; an interruption keeps it, and the next attempt (in the same call, or
the next call) asks only for the missing bytes with an HTTP Range request. A server that ignores Range
(answers 200) makes the download start over. The sha256 is computed while the bytes arrive (the kept
part is hashed first on a resume) and compared with the sha256 Hugging Face publishes in the
`X-Linked-Etag` header, and with one the caller gives; a mismatch deletes the part and leaves nothing in
the cache. The base URL can point at a mirror with `$MAISI_HF_ENDPOINT` (or the usual `$HF_ENDPOINT`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import urllib3
from tqdm import tqdm

from MAISIEngine.errors import MaisiError
from MAISIEngine.weights import cache
from MAISIEngine.weights.manifest import WeightFile, entries_for_names

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 60.0
CHUNK_BYTES = 1024 * 1024
PROGRESS_INTERVAL_S = 0.25
DISK_MARGIN_BYTES = 64 * 1024 * 1024

OFFLINE_HINT = (
    "check the network connection or proxy (HTTPS_PROXY); on a machine without internet, copy the files "
    "from a machine that has them and run `maisi weights import DIR`"
)

Progress = Callable[[int, "int | None"], None]

BROKEN_CONNECTION = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)
"""What a transfer that stops half-way raises (kept part, resumable), as opposed to a local write error."""


class _Interrupted(Exception):
    """The transfer stopped before the last byte; the part file is kept for a resume."""

    def __init__(self, done: int, total: int | None, reason: str) -> None:
        super().__init__(reason)
        self.done, self.total, self.reason = done, total, reason


@dataclass(frozen=True)
class _Fetched:
    sha256: str
    size: int
    published_sha256: str | None


def endpoint() -> str:
    return (os.environ.get("MAISI_HF_ENDPOINT") or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def file_url(entry: WeightFile, revision: str = "main") -> str:
    """`<endpoint>/<repo>/resolve/<revision>/<path>`, the form Hugging Face serves raw files under."""
    return f"{endpoint()}/{entry.repo}/resolve/{quote(revision)}/{quote(entry.path)}"


def _headers() -> dict[str, str]:
    # identity: byte offsets in Range and Content-Length must refer to the file itself, not a gzip stream
    headers = {"Accept-Encoding": "identity", "User-Agent": "maisi-engine"}
    token = os.environ.get("HF_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def published_sha256_of(response: requests.Response) -> str | None:
    """The sha256 the server publishes for the file, from `X-Linked-Etag` on the answer or a redirect before it."""
    for answer in [response, *reversed(response.history)]:
        value = cache.normalise_sha256(answer.headers.get("X-Linked-Etag"))
        if value:
            return value
    return None


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _http_error(entry: WeightFile, url: str, status: int) -> MaisiError:
    if status == 404:
        return MaisiError(
            f"{entry.filename} was not found at {url} (HTTP 404)",
            "check $MAISI_HF_ENDPOINT, or import the file with `maisi weights import DIR`",
        )
    if status in (401, 403):
        return MaisiError(
            f"{_host(url)} refused access to {entry.filename} (HTTP {status})",
            "accept the model's licence on its Hugging Face page and set HF_TOKEN to an access token",
        )
    return MaisiError(f"downloading {entry.filename} from {_host(url)} failed with HTTP {status}", "try again later")


def _content_range_start(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a `Content-Range: bytes a-b/n` header."""
    if not value or not value.startswith("bytes "):
        return None, None
    try:
        span, _, total = value[len("bytes "):].partition("/")
        start = int(span.split("-")[0])
        return start, (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None, None


def _check_disk_space(folder: Path, needed: int, entry: WeightFile) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_MARGIN_BYTES:
        raise MaisiError(
            f"not enough disk space for {entry.filename}: "
            f"{needed / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free in {folder}",
            "free some space, or set MAISI_HOME to a folder on a larger disk",
        )


def _hash_existing(part: Path, digest: Any) -> int:
    with open(part, "rb") as stream:
        return cache.hash_stream(stream, digest)[1]


def _body_chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives, undecoded; bytes already received are never lost when the connection breaks."""
    raw = response.raw
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if hasattr(raw, "read1") and encoding in ("", "identity"):
        while chunk := raw.read1(CHUNK_BYTES, decode_content=False):
            yield chunk
    else:  # older urllib3, or a server that compressed anyway: let requests decode, in small pieces
        yield from response.iter_content(chunk_size=64 * 1024)


def _fetch_into_part(
    entry: WeightFile, url: str, part: Path, session: requests.Session, progress: Progress | None, show_bar: bool
) -> _Fetched:
    """One HTTP request: start or resume `part`; returns its hash when the whole file has arrived."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = _headers()
    if offset:
        headers["Range"] = f"bytes={offset}-"
    unreachable = f"cannot reach {_host(url)} to download {entry.filename}"
    try:
        response = session.get(url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    except requests.exceptions.ConnectionError as exc:
        raise MaisiError(f"{unreachable}: {type(exc).__name__}", OFFLINE_HINT) from exc
    except requests.exceptions.Timeout as exc:
        raise MaisiError(f"{unreachable}: no answer within {CONNECT_TIMEOUT_S:.0f} s", OFFLINE_HINT) from exc

    with response:
        digest = hashlib.sha256()
        if response.status_code == 416 and offset:
            part.unlink()  # the kept part is longer than the file: it belongs to another version
            raise _Interrupted(0, None, "the partial file did not match the server's file; starting over")
        if response.status_code == 206 and offset:
            start, total = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Interrupted(0, total, "the server resumed at the wrong offset; starting over")
            mode = "ab"
            _hash_existing(part, digest)
        elif response.status_code == 200:
            offset, mode = 0, "wb"  # a fresh start, or a server that ignores Range: start over
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise _http_error(entry, url, response.status_code)
        published = published_sha256_of(response)
        if total is not None:
            _check_disk_space(part.parent, total - offset, entry)

        done = offset
        last_report = 0.0
        bar = tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.filename,
            disable=cache.bar_disabled(show_bar), file=sys.stderr, leave=True,
        )
        try:
            with bar, open(part, mode) as sink:
                if progress:
                    progress(done, total)
                try:
                    for chunk in _body_chunks(response):
                        sink.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        bar.update(len(chunk))
                        now = time.monotonic()
                        if progress and now - last_report >= PROGRESS_INTERVAL_S:
                            progress(done, total)
                            last_report = now
                except BROKEN_CONNECTION as exc:
                    raise _Interrupted(done, total, f"the connection broke ({type(exc).__name__})") from exc
                except OSError as exc:
                    raise MaisiError(
                        f"cannot write {part}: {exc}", "check that the cache folder is writable and the disk not full"
                    ) from exc
        finally:
            if progress:
                progress(done, total)
        if total is not None and done != total:
            raise _Interrupted(done, total, "the connection closed early")
        return _Fetched(digest.hexdigest(), done, published)


def download_file(
    entry: WeightFile,
    *,
    expected_sha256: str | None = None,
    progress: Progress | None = None,
    show_bar: bool = True,
    force: bool = False,
    attempts: int = 3,
    retry_wait_s: float = 2.0,
    session: requests.Session | None = None,
) -> Path:
    """Bring one official file into the cache and return its path.

    Skips the transfer when the file is already recorded intact (and matches `expected_sha256` when
    given), unless `force`. Resumes a part left by an earlier interruption. `progress(done, total)` is
    called as bytes arrive (total is None when the server does not say). Raises `MaisiError` when the
    server cannot be reached, refuses, or sends bytes whose sha256 differs from the published one.
    """
    expected = cache.normalise_sha256(expected_sha256) if expected_sha256 else None
    if expected_sha256 and expected is None:
        raise MaisiError(f"'{expected_sha256}' is not a sha256", "give 64 hexadecimal digits")
    target = cache.cache_path(entry)
    current = cache.status_of(entry)
    if not force and current.status in (cache.PRESENT, cache.VERIFIED) and current.record:
        if expected is None or current.record.get("sha256") == expected:
            return target

    url = file_url(entry)
    part = cache.part_path(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    own_session = session is None
    session = session or requests.Session()
    busy = f"another process is downloading {entry.filename} into {target.parent}"
    try:
        with cache.exclusive(f"download-{entry.name}", wait_s=0.5, busy_message=busy):
            fetched = _fetch_with_retries(entry, url, part, session, progress, show_bar, attempts, retry_wait_s)
            checked_against = _check_hash(entry, part, fetched, expected)
            os.replace(part, target)
            cache.record_file(entry, fetched.sha256, url, checked_against)
    finally:
        if own_session:
            session.close()
    return target


def _fetch_with_retries(
    entry: WeightFile, url: str, part: Path, session: requests.Session, progress: Progress | None,
    show_bar: bool, attempts: int, retry_wait_s: float,
) -> _Fetched:
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return _fetch_into_part(entry, url, part, session, progress, show_bar)
        except _Interrupted as stop:
            if attempt >= attempts:
                got = f"{stop.done} of {stop.total} bytes" if stop.total else f"{stop.done} bytes"
                raise MaisiError(
                    f"the download of {entry.filename} was interrupted after {got}: {stop.reason}",
                    f"run `maisi weights download {entry.name}` again: it resumes where it stopped",
                ) from stop
            time.sleep(retry_wait_s * attempt)
    raise AssertionError("unreachable")


def _check_hash(entry: WeightFile, part: Path, fetched: _Fetched, expected: str | None) -> str | None:
    """Compare with every published hash we have; on a mismatch delete the part so nothing bad stays."""
    candidates = (("x-linked-etag", fetched.published_sha256), ("caller", expected))
    references = [(name, value) for name, value in candidates if value]
    for name, value in references:
        if value != fetched.sha256:
            part.unlink(missing_ok=True)
            source = "the sha256 the server published" if name == "x-linked-etag" else "the expected sha256"
            raise MaisiError(
                f"{entry.filename} was rejected: its sha256 {fetched.sha256[:16]}... "
                f"differs from {source} {value[:16]}...",
                "the damaged download was deleted; run the command again, "
                "and if it repeats, a proxy or mirror alters the file",
            )
    return "+".join(name for name, _ in references) or None


def download_weights(
    names: list[str] | tuple[str, ...],
    *,
    progress: Callable[[WeightFile, int, "int | None"], None] | None = None,
    show_bar: bool = True,
    force: bool = False,
    expected_sha256: str | None = None,
) -> list[Path]:
    """Download every file the names stand for (files, manifest names, groups, model names), in order.

    `progress(entry, done, total)` lets the worker report one stage per file. `expected_sha256` is
    only accepted when the names stand for exactly one file.
    """
    entries = entries_for_names(list(names))
    if expected_sha256 and len(entries) != 1:
        raise MaisiError("--sha256 applies to a single file", "name exactly one file when giving its sha256")
    paths = []
    for entry in entries:
        per_file = (lambda done, total, e=entry: progress(e, done, total)) if progress else None
        paths.append(
            download_file(entry, expected_sha256=expected_sha256, progress=per_file, show_bar=show_bar, force=force)
        )
    return paths


def download_model(
    model: str,
    *,
    progress: Progress | None = None,
    show_bar: bool = False,
    force: bool = False,
) -> list[Path]:
    """Make every weight file of a model available and return their paths (the worker's download job).

    Official files are downloaded (or found in the cache); a model whose weights ship with the engine or
    sit in its model directory needs no download, and its files are only located. `progress(done, total)`
    counts bytes over all files of the model; until a file's real size is known its approximate size
    stands in, so the total is exact once the last file has started.
    """
    from MAISIEngine.presets import load_preset, shipped_preset_names
    from MAISIEngine.weights.resolve import resolve_weight_path

    if model in shipped_preset_names() or Path(model).expanduser().exists():
        preset = load_preset(model)
        if preset.weights_source != "official":
            return [resolve_weight_path(preset, role) for role in preset.weights]
    entries = entries_for_names([model])
    registry = cache.load_registry()
    sizes = {}
    for entry in entries:
        state = cache.status_of(entry, registry)
        sizes[entry.name] = [state.size or 0, state.size] if state.on_disk else [0, None]
    approx = {entry.name: entry.approx_size for entry in entries}

    def report(name: str, done: int, total: int | None) -> None:
        sizes[name] = [done, total]
        if progress:
            overall = sum(t if t is not None else approx[n] for n, (_, t) in sizes.items())
            progress(sum(d for d, _ in sizes.values()), overall)

    paths = []
    for entry in entries:
        paths.append(download_file(entry, progress=partial(report, entry.name), show_bar=show_bar, force=force))
        size = paths[-1].stat().st_size
        report(entry.name, size, size)
    return paths


def fetch_published_sha256(entry: WeightFile, session: requests.Session | None = None) -> str | None:
    """Ask the server (HEAD, no body) which sha256 it publishes for `entry`; None if it publishes none."""
    url = file_url(entry)
    own = session is None
    session = session or requests.Session()
    try:
        response = session.head(
            url, headers=_headers(), allow_redirects=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
        )
    except requests.exceptions.RequestException as exc:
        raise MaisiError(
            f"cannot reach {_host(url)} to check {entry.filename}: {type(exc).__name__}", OFFLINE_HINT
        ) from exc
    finally:
        if own:
            session.close()
    if response.status_code >= 400:
        raise _http_error(entry, url, response.status_code)
    return published_sha256_of(response)
