"""Send an export to a PACS: DICOM C-STORE (pynetdicom) or DICOMweb STOW-RS (dicomweb-client).

Every instance gets its own status back, so a PACS that takes the CT series but refuses the SEG says
so by file. C-STORE proposes exactly the storage classes the files need (CT Image Storage and
Segmentation Storage), each in explicit and implicit little endian; `storescu` without `-R` does not
offer the SEG class, which is why a plain dcmtk push of an export loses its segmentation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID

from MAISIEngine.errors import MaisiError

DEFAULT_CALLING_AE = "MAISISYNTH"
STOW_BATCH = 32  # instances per STOW-RS request: bounded memory for large series
_DESTINATION = re.compile(r"^(?P<ae>[^@]{1,16})@(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:@\[\]]+)):(?P<port>\d{1,5})$")
SUCCESS, WARNING, FAILURE = "success", "warning", "failure"

Progress = Callable[["InstanceStatus"], None]


@dataclass(frozen=True)
class Destination:
    """A DICOM application entity: AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


@dataclass(frozen=True)
class InstanceStatus:
    """What the PACS answered for one file."""

    file: str  # file name only
    sop_class_uid: str
    sop_instance_uid: str
    outcome: str  # success, warning or failure
    status: str  # C-STORE status as 0xHHHH, or the STOW-RS reason
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome != FAILURE

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "sop_instance_uid": self.sop_instance_uid, "outcome": self.outcome,
                "status": self.status, "detail": self.detail}


def parse_destination(text: str) -> Destination:
    """`AE@HOST:PORT` (IPv6 hosts in brackets) -> Destination, with one clear message when malformed."""
    match = _DESTINATION.match(text.strip())
    port = int(match["port"]) if match else 0
    if not match or not 0 < port < 65536 or not match["ae"].strip() or "\\" in match["ae"]:
        raise MaisiError(f"'{text}' is not a DICOM destination",
                         "write it as AE@HOST:PORT, e.g. ORTHANC@pacs.example.org:4242 (AE title of at most 16 characters)")
    return Destination(match["ae"].strip(), match["ipv6"] or match["host"], port)


def _load(files: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    if not files:
        raise MaisiError("there are no DICOM files to send", "export a CT series first")
    loaded = []
    for path in files:
        try:
            loaded.append((Path(path), pydicom.dcmread(path)))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise MaisiError(f"cannot read {Path(path).name} as DICOM ({exc})", "send the files of an export") from None
    return loaded


def _cstore_outcome(code: int) -> str:
    if code == 0x0000:
        return SUCCESS
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return WARNING
    return FAILURE


def send_cstore(files: Sequence[Path], destination: Destination, calling_ae: str = DEFAULT_CALLING_AE,
                timeout_s: float = 30.0, progress: Progress | None = None) -> list[InstanceStatus]:
    """C-STORE every file over one association; one status per file, in file order."""
    from pynetdicom import AE

    loaded = _load(files)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    classes = sorted({str(ds.SOPClassUID) for _, ds in loaded})
    for sop_class in classes:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        reason = "it rejected the association" if assoc.is_rejected else "no answer" if not assoc.is_aborted else "it aborted"
        raise MaisiError(f"cannot open a DICOM association with {destination} ({reason})",
                         f"check the host, the port and that the PACS knows the calling AE title {calling_ae}")
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        refused = [c for c in classes if c not in accepted]
        if refused:
            names = ", ".join(f"{UID(c).name} ({c})" for c in refused)
            raise MaisiError(f"{destination} does not accept {names}",
                             "ask the PACS administrator to allow these storage classes for this AE title")
        results = []
        for path, ds in loaded:
            status = assoc.send_c_store(ds)
            if "Status" not in status:
                item = InstanceStatus(path.name, str(ds.SOPClassUID), str(ds.SOPInstanceUID), FAILURE, "none",
                                      "no answer (connection lost or timed out)")
            else:
                code = int(status.Status)
                item = InstanceStatus(path.name, str(ds.SOPClassUID), str(ds.SOPInstanceUID), _cstore_outcome(code),
                                      f"0x{code:04X}", str(status.get("ErrorComment", "")))
            results.append(item)
            if progress:
                progress(item)
        return results
    finally:
        if assoc.is_established:
            assoc.release()


def read_token(path: Path | None) -> str | None:
    """A bearer token from a file (first line); never from the command line, where `ps` would show it."""
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip().splitlines()
    except OSError as exc:
        raise MaisiError(f"cannot read the token file {path} ({exc.strerror or exc})", "give a readable --token-file") from None
    if not token or not token[0].strip():
        raise MaisiError(f"token file {path} is empty", "put the bearer token on its first line")
    return token[0].strip()


def _stow_reasons(response: Dataset) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (outcome, reason) from a STOW-RS response."""
    answers: dict[str, tuple[str, str]] = {}
    for item in response.get("ReferencedSOPSequence", []):
        reason = item.get("WarningReason")
        answers[str(item.ReferencedSOPInstanceUID)] = (WARNING, f"0x{int(reason):04X}") if reason else (SUCCESS, "stored")
    for item in response.get("FailedSOPSequence", []):
        reason = item.get("FailureReason")
        answers[str(item.ReferencedSOPInstanceUID)] = (FAILURE, f"0x{int(reason):04X}" if reason else "failed")
    return answers


def send_stow(files: Sequence[Path], url: str, token: str | None = None, timeout_s: float = 60.0,
              progress: Progress | None = None) -> list[InstanceStatus]:
    """STOW-RS every file to a DICOMweb service root (e.g. https://pacs/dicom-web); one status per file."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    if not re.match(r"^https?://[^/\s]+", url):
        raise MaisiError(f"'{url}' is not a DICOMweb URL", "give the service root, e.g. https://pacs.example.org/dicom-web")
    loaded = _load(files)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = DICOMwebClient(url, headers=headers, timeout=timeout_s)
    results = []
    for start in range(0, len(loaded), STOW_BATCH):
        batch = loaded[start:start + STOW_BATCH]
        try:
            response = client.store_instances([ds for _, ds in batch])
            answers = _stow_reasons(response)
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            hint = "check the token file" if code in (401, 403) else "check the URL (the DICOMweb service root)"
            if code == 409 or code == 400:
                answers = _stow_reasons(_parse_failure(exc)) if exc.response is not None else {}
                if not answers:
                    raise MaisiError(f"{url} refused the instances (HTTP {code})", hint) from None
            else:
                raise MaisiError(f"{url} answered HTTP {code} to STOW-RS", hint) from None
        except requests.RequestException as exc:
            raise MaisiError(f"cannot reach {url} ({exc.__class__.__name__})", "check the URL and the network") from None
        for path, ds in batch:
            outcome, reason = answers.get(str(ds.SOPInstanceUID), (FAILURE, "not in the response"))
            item = InstanceStatus(path.name, str(ds.SOPClassUID), str(ds.SOPInstanceUID), outcome, reason)
            results.append(item)
            if progress:
                progress(item)
    return results


def _parse_failure(exc: Exception) -> Dataset:
    """The STOW-RS response body of a 409 (some instances failed), as a dataset; empty when unreadable."""
    try:
        return Dataset.from_json(exc.response.json())  # type: ignore[attr-defined]
    except (ValueError, TypeError, AttributeError):
        return Dataset()
