"""A job submission's multipart body, streamed straight to files in the job folder, never held in memory.

Each uploaded part is written as it arrives, in chunks, to `inputs/<field>-<safe name>` (mode 0600);
a part over the per-part limit or a body over the total limit stops the transfer at once (413). Text
fields are small (64 KiB) and few; a body that ends before its closing boundary is refused (400).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from MAISIEngine.server.schema import FILE_FIELDS, JobRefused

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_TEXT_BYTES = 64 << 10
MAX_PARTS = 8


def safe_filename(name: str) -> str:
    """A client's file name reduced to one safe path component, or a 400."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if base in ("", ".", "..") or not SAFE_NAME.match(base) or ".." in base:
        raise JobRefused(400, f"unsafe file name {name!r}", "use letters, digits, '.', '_' and '-'")
    return base


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    text: bytearray = field(default_factory=bytearray)
    fd: int | None = None
    size: int = 0


@dataclass
class Received:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    total: int = 0


class MultipartToDisk:
    """Callbacks for python-multipart's streaming parser that write file parts under `inputs`."""

    def __init__(self, inputs: Path, max_part_bytes: int, max_total_bytes: int) -> None:
        self.inputs, self.max_part, self.max_total = inputs, max_part_bytes, max_total_bytes
        self.received = Received()
        self.part = _Part()
        self.header_name = b""
        self.header_value = b""
        self.parts = 0
        self.ended = False
        self.error: JobRefused | None = None

    # -- python-multipart callbacks (exceptions raised here stop the parser) --------------------------
    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise JobRefused(400, f"more than {MAX_PARTS} multipart parts", "send the job field and its files only")
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]
        if len(self.header_value) > 4096:
            raise JobRefused(400, "a multipart header is too long", "")

    def on_header_end(self) -> None:
        self.part.headers[self.header_name.lower()] = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise JobRefused(400, "a multipart part has no name", "name every part (job, mask, ...)")
        self.part.name = name
        if b"filename" not in options:
            if name in self.received.fields:
                raise JobRefused(400, f"the field '{name}' was sent twice", "send each field once")
            return
        if name not in FILE_FIELDS:
            raise JobRefused(422, f"unexpected file part '{name}'", f"upload files as {', '.join(FILE_FIELDS)}")
        if name in self.received.files:
            raise JobRefused(400, f"the file '{name}' was sent twice", "upload each file once")
        filename = safe_filename(options[b"filename"].decode("utf-8", "replace") or name)
        target = self.inputs / f"{name}-{filename}"
        self.part.filename = filename
        self.part.fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self.received.files[name] = target

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        self.part.size += size
        if self.part.fd is None:
            if self.part.size > MAX_TEXT_BYTES:
                raise JobRefused(413, f"the field '{self.part.name}' is larger than {MAX_TEXT_BYTES} bytes", "")
            self.part.text += data[start:end]
            return
        if self.part.size > self.max_part:
            raise JobRefused(413, f"the file '{self.part.name}' exceeds the limit of {self.max_part} bytes",
                             "send a smaller file (crop or resample it), or ask for a larger --max-upload-mb")
        view = memoryview(data)[start:end]
        while view:
            written = os.write(self.part.fd, view)
            view = view[written:]

    def on_part_end(self) -> None:
        if self.part.fd is not None:
            os.close(self.part.fd)
            self.part.fd = None
        else:
            self.received.fields[self.part.name] = self.part.text.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self.part.fd is not None:
            os.close(self.part.fd)
            self.part.fd = None


async def receive_multipart(request, inputs: Path, max_part_bytes: int, max_total_bytes: int) -> Received:
    """Stream the request body into `inputs`; `JobRefused` for bodies that are not a whole, bounded form."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type == b"application/x-www-form-urlencoded":  # a job without files
        return await _receive_urlencoded(request)
    if content_type != b"multipart/form-data":
        raise JobRefused(415, "a job is submitted as multipart/form-data",
                         "send the job JSON as the form field 'job' and files as parts")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise JobRefused(400, "the multipart body has no boundary", "let the HTTP library build the form")
    sink = MultipartToDisk(inputs, max_part_bytes, max_total_bytes)
    callbacks = {name: getattr(sink, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value", "on_header_end",
        "on_headers_finished", "on_end")}
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            sink.received.total += len(chunk)
            if sink.received.total > max_total_bytes:
                raise JobRefused(413, f"the upload exceeds the limit of {max_total_bytes} bytes",
                                 "send smaller files, or ask for a larger --max-upload-mb")
            try:
                parser.write(chunk)
            except JobRefused:
                raise
            except Exception as exc:  # python-multipart's parse errors
                raise JobRefused(400, f"the multipart body is malformed ({exc.__class__.__name__})", "") from None
        try:
            parser.finalize()
        except Exception as exc:  # noqa: BLE001
            raise JobRefused(400, f"the multipart body is malformed ({exc.__class__.__name__})", "") from None
        if not sink.ended:
            raise JobRefused(400, "the multipart body ended before its closing boundary", "send the whole form")
    finally:
        sink.close()
    return sink.received


async def _receive_urlencoded(request) -> Received:
    """A form without files (a phantom or template job): small, read whole, each field once."""
    from urllib.parse import parse_qsl

    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_TEXT_BYTES:
            raise JobRefused(413, f"the form is larger than {MAX_TEXT_BYTES} bytes", "send files as multipart parts")
    received = Received(total=len(body))
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=16)
    except ValueError as exc:
        raise JobRefused(400, f"the form is malformed ({exc.__class__.__name__})", "") from None
    for name, value in pairs:
        if name in received.fields:
            raise JobRefused(400, f"the field '{name}' was sent twice", "send each field once")
        received.fields[name] = value
    return received
