"""`maisi serve`: start the job server (default 127.0.0.1; any other address needs a token)."""

from __future__ import annotations

import argparse
import ipaddress
import os
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
    p.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                   help="offer the model folder DIR to clients, by its folder name (repeatable)")
    p.add_argument("--max-queued", type=int, default=16, help="jobs that may wait; more get 429 (default 16)")
    p.add_argument("--max-parallel-uploads", type=int, default=4, help="uploads received at once (default 4)")
    p.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                   help="Host header names served (default: loopback names without a token, any with one)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="web origins allowed to call the server (default: none)")


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

    from MAISIEngine.server.guard import HeaderTimeoutH11
    from MAISIEngine.validation import check_device, check_float, check_int

    check_int(args.port, "--port", 0, 65535)
    check_float(args.max_upload_mb, "--max-upload-mb", 0.001, 1 << 20)
    check_int(args.max_queued, "--max-queued", 1, 10_000)
    check_int(args.max_parallel_uploads, "--max-parallel-uploads", 1, 256)
    devices = [check_device(d.strip(), "--devices") for d in args.devices.split(",") if d.strip()]
    model_dirs = {}
    for folder in args.model_dir:
        from MAISIEngine.presets import load_preset

        load_preset(folder)
        model_dirs[Path(folder).resolve().name] = Path(folder).resolve()
    os.umask(0o077)  # job folders, uploads and results: the server's user only
    store = JobStore(args.jobs_dir, devices, keep_seconds=args.keep_hours * 3600)
    app = create_app(store, token, int(args.max_upload_mb * 2**20), model_dirs=model_dirs,
                     max_queued=args.max_queued, max_parallel_uploads=args.max_parallel_uploads,
                     allowed_hosts=args.allow_host, allowed_origins=tuple(args.allow_origin))
    print(f"MAISI job server on http://{args.host}:{args.port} (jobs in {args.jobs_dir})", file=sys.stderr)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", http=HeaderTimeoutH11,
                            timeout_keep_alive=5, timeout_graceful_shutdown=5, limit_concurrency=256)
    server = uvicorn.Server(config)
    # uvicorn turns SIGTERM into a graceful stop; jobs are marked failed as soon as it begins
    original = server.handle_exit

    def handle_exit(sig: int, frame: object) -> None:
        store.shutdown()
        original(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    try:
        server.run()
    finally:
        store.shutdown()
    return 0
