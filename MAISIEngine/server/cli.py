"""`maisi serve`: start the job server (default 127.0.0.1; any other address needs a token)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from MAISIEngine.errors import MaisiError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="HTTP job server for Slicer and desktop clients")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token-file", type=Path, help="file holding the access token (never put it on the command line)")
    p.add_argument("--jobs-dir", type=Path, default=Path("maisi-jobs"), help="where job folders are kept")
    p.add_argument("--devices", default="auto", help="comma-separated devices, one running job each (e.g. cuda:0,cuda:1)")
    p.add_argument("--max-upload-mb", type=float, default=512.0)
    p.add_argument("--keep-hours", type=float, default=24.0, help="how long finished jobs are kept")


def run(args: argparse.Namespace) -> int:
    from MAISIEngine.server.app import create_app, read_token

    token = read_token(args.token_file)
    if token is None and not is_loopback(args.host):
        raise MaisiError(f"refusing to serve on {args.host} without a token",
                         "pass --token-file FILE, or bind to 127.0.0.1")
    try:
        import uvicorn
    except ImportError:
        raise MaisiError("the server needs the server extra", "pip install 'maisi-engine[server]'") from None
    from MAISIEngine.server.queue import JobStore

    store = JobStore(args.jobs_dir, [d.strip() for d in args.devices.split(",") if d.strip()],
                     keep_seconds=args.keep_hours * 3600)
    app = create_app(store, token, int(args.max_upload_mb * 2**20))
    print(f"MAISI job server on http://{args.host}:{args.port} (jobs in {args.jobs_dir})", file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        store.shutdown()
    return 0
