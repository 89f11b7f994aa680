"""A real Orthanc PACS for the tests: Debian's `orthanc` with its DICOMweb plugin, on 127.0.0.1.

Each server gets free ports, its own storage folder and a generated configuration (DICOM AET ORTHANC,
DICOMweb at /dicom-web), and is stopped (by its own process id) when the test is done.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AE_TITLE = "ORTHANC"


def orthanc_available() -> bool:
    return Path(ORTHANC).is_file() and DICOMWEB_PLUGIN.is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    dicom_port: int
    http_port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def destination(self) -> str:
        return f"{AE_TITLE}@127.0.0.1:{self.dicom_port}"

    def get(self, path: str) -> object:
        response = requests.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def get_bytes(self, path: str) -> bytes:
        response = requests.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.content

    def clear(self) -> None:
        for patient in self.get("/patients"):
            requests.delete(f"{self.url}/patients/{patient}", timeout=30).raise_for_status()


@contextmanager
def running_orthanc(folder: Path) -> Iterator[Orthanc]:
    """Start Orthanc with a configuration written into `folder`; stop it on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "MAISISynth test PACS", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "DicomAet": AE_TITLE, "DicomPort": dicom_port, "DicomServerEnabled": True, "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True, "UnknownSopClassAccepted": False,
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "SslEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpTimeout": 30, "StableAge": 1, "ConcurrentJobs": 1,
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = Orthanc(dicom_port, http_port, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {process.returncode}: {(folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(server.url + "/system", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not answer within 60 s")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@dataclass
class TokenGate:
    url: str
    seen: list[str]


@contextmanager
def bearer_token_gate(target: str, token: str) -> Iterator[TokenGate]:
    """A real HTTP proxy on 127.0.0.1 that forwards to `target` only with `Authorization: Bearer <token>`.

    Orthanc itself knows only HTTP Basic users; hospital DICOMweb gateways commonly want a bearer token.
    Yields the proxy's base URL and the Authorization header of every request it received.
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Gate(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            length = int(self.headers.get("Content-Length", 0) or 0)
            body = self.rfile.read(length) if length else None
            if self.headers.get("Authorization") != f"Bearer {token}":
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
            answer = requests.request(self.command, target + self.path, data=body, headers=headers, timeout=60)
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("Content-Type", "application/octet-stream"))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _forward

        def log_message(self, *args: object) -> None:
            pass

    seen: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Gate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TokenGate(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
