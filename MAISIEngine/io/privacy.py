"""Nothing that names this machine, its users or its folders leaves it in an output.

Hospital folders are often named after the patient (`DOE_JOHN_MRN99887766/labels.nii.gz`), so an
input is recorded by the sha256 of its content, never by its path or file name. `scrub` is the second
line of defence, applied to every provenance before it is written (JSON, NIfTI, DICOM): it withholds
absolute paths, path-like input sources, and the user and host names wherever they appear.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any

PATH_WITHHELD = "<path withheld>"
NAME_WITHHELD = "<name withheld>"
FILE_WITHHELD = "file (name withheld)"
SOURCE_KEYS = frozenset({"mask_source", "image_source", "labels_source", "tumor_source", "source"})
"""Keys whose value names an input: anything path-like there is withheld, not just absolute paths."""

_ABSOLUTE_PATH = re.compile(r"""(?<![\w.:/\\])(?:~|[A-Za-z]:)?(?:[\\/]+[^\s\\/'"<>,;|]+)+[\\/]?|(?<![\w.])~(?=[\s'"]|$)""")
_PATH_LIKE = re.compile(r"[\\/]|\.(?:nii|nii\.gz|nrrd|mha|mhd|dcm|json|npz|npy|gz|zip)$", re.IGNORECASE)
_SANITISED_PREFIXES = ("file sha256:", "phantom", "in memory", FILE_WITHHELD)
_MIN_NAME_LENGTH = 3


def content_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_source(path: str | Path | None, default: str = "") -> str:
    """How provenance names an input file: `file sha256:<content hash>`, never its name or folder."""
    if not path:
        return default
    try:
        return f"file sha256:{content_sha256(path)}"
    except OSError:
        return FILE_WITHHELD


@lru_cache(maxsize=1)
def _local_names() -> tuple[str, ...]:
    """This machine's user and host names (the parts of a fully qualified host name too)."""
    names: set[str] = set()
    try:
        names.add(getpass.getuser())
    except (KeyError, OSError):  # no passwd entry (some containers)
        pass
    host = socket.gethostname()
    names.update({host, host.split(".")[0]})
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn())
    return tuple(sorted((n for n in names if len(n) >= _MIN_NAME_LENGTH and n != "localhost"), key=len, reverse=True))


def scrub_text(text: str, names: tuple[str, ...] | None = None) -> str:
    """The text with absolute paths and this machine's user and host names withheld."""
    text = _ABSOLUTE_PATH.sub(PATH_WITHHELD, text)
    for name in _local_names() if names is None else names:
        text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", NAME_WITHHELD, text, flags=re.IGNORECASE)
    return text


def _scrub_source(value: str) -> str:
    if value.startswith(_SANITISED_PREFIXES) or not _PATH_LIKE.search(value):
        return value
    return FILE_WITHHELD


def scrub(data: Any, names: tuple[str, ...] | None = None, key: str | None = None) -> Any:
    """A copy of a provenance (any JSON-like value) that names no path, user or host of this machine."""
    if isinstance(data, dict):
        return {str(k): scrub(v, names, str(k)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [scrub(v, names, key) for v in data]
    if isinstance(data, Path):
        data = str(data)
    if isinstance(data, str):
        if key in SOURCE_KEYS:
            data = _scrub_source(data)
        return scrub_text(data, names)
    return data
