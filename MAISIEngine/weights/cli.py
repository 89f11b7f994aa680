"""`maisi weights list | download NAME... | verify [NAME...] | import DIR... | path NAME...`.

`add_parser(subparsers)` adds the `weights` command to the `maisi` parser and `run(args)` executes it
(exit 0 on success, 2 on a `MaisiError`, printed as one `error: <message> (<hint>)` line). The module
also runs on its own: `python -m MAISIEngine.weights.cli list`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from MAISIEngine.errors import MaisiError, WeightsMissingError
from MAISIEngine.weights import cache
from MAISIEngine.weights.download import download_file
from MAISIEngine.weights.local import CORRUPT, MISSING, UNRECORDED, import_files, verify_cache
from MAISIEngine.weights.manifest import MANIFEST, entries_for_name, entries_for_names, format_size


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add `weights` and its sub-commands to the `maisi` parser."""
    parser = subparsers.add_parser(
        "weights",
        help="list, download, verify and import the official MAISI weights and mask database",
        description="Manage the weights cache (MAISI_HOME, default: the user's cache folder).",
    )
    commands = parser.add_subparsers(dest="weights_command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="the official files, their sizes and whether they are cached")
    listing.add_argument("--json", action="store_true", help="print JSON (for front ends)")

    download = commands.add_parser(
        "download", help="download files: a file name, a name from `list`, a model (rflow-ct), or masks"
    )
    download.add_argument("names", nargs="+", metavar="NAME")
    download.add_argument("--force", action="store_true", help="download again even if the file is cached")
    download.add_argument("--sha256", help="the sha256 the single named file must have")
    download.add_argument("--quiet", action="store_true", help="no progress bar")

    verify = commands.add_parser("verify", help="re-hash cached files against the recorded sha256")
    verify.add_argument(
        "names", nargs="*", metavar="NAME", help="files or models to check (default: every cached file)"
    )
    verify.add_argument("--remote", action="store_true", help="also compare with the sha256 the server publishes")

    importing = commands.add_parser(
        "import", help="copy official files from a folder (offline machines) into the cache"
    )
    importing.add_argument("sources", nargs="+", metavar="DIR", help="folders (searched recursively) or files")

    path = commands.add_parser("path", help="print the cached path of files or of a model's weights")
    path.add_argument("names", nargs="+", metavar="NAME")
    parser.set_defaults(run=run)
    return parser


def _list(args: argparse.Namespace) -> int:
    registry = cache.load_registry()
    rows = []
    for entry in MANIFEST:
        state = cache.status_of(entry, registry)
        rows.append({
            "name": entry.name,
            "file": entry.filename,
            "repo": entry.repo,
            "path": entry.path,
            "role": entry.role,
            "presets": list(entry.presets),
            "approx_size": entry.approx_size,
            "size_is_estimate": entry.size_is_estimate,
            "size": state.size,
            "status": state.status,
            "cache_path": str(state.path),
            "sha256": (state.record or {}).get("sha256"),
        })
    if args.json:
        print(json.dumps({"cache": str(cache.weights_dir()), "files": rows}, indent=2))
        return 0
    header = ("NAME", "FILE", "USED BY", "SIZE", "STATUS")
    table = [header] + [
        (
            r["name"], r["file"], ", ".join(r["presets"]) or r["role"].replace("_", " "),
            format_size(r["size"]) if r["size"] is not None else "~" + format_size(r["approx_size"]),
            r["status"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\ncache: {cache.weights_dir()}   (~ approximate size of a file not yet downloaded)")
    return 0


def _download(args: argparse.Namespace) -> int:
    for name in args.names:
        if not entries_for_name(name):
            print(f"{name}: its weights ship with the engine; nothing to download")
    entries = entries_for_names(args.names)
    if args.sha256 and len(entries) != 1:
        raise MaisiError("--sha256 applies to a single file", "name exactly one file when giving its sha256")
    for entry in entries:
        path = download_file(entry, expected_sha256=args.sha256, show_bar=not args.quiet, force=args.force)
        state = cache.status_of(entry)
        sha = (state.record or {}).get("sha256", "")
        print(f"{entry.filename}: {state.status} (sha256 {sha}) {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    results = verify_cache(args.names or None, remote=args.remote)
    if not results:
        print("no cached files to verify")
        return 0
    for result in results:
        print(f"{result.entry.filename}: {result.outcome} ({result.detail})")
    bad = [r for r in results if r.outcome == CORRUPT]
    if bad:
        names = " ".join(r.entry.name for r in bad)
        raise MaisiError(
            f"{len(bad)} cached file(s) damaged: {', '.join(r.entry.filename for r in bad)}",
            f"run `maisi weights download {names}` to fetch them again",
        )
    missing = [r for r in results if r.outcome == MISSING]
    if missing:
        names = " ".join(r.entry.name for r in missing)
        raise WeightsMissingError(
            f"{len(missing)} named file(s) not in the cache", f"run `maisi weights download {names}`"
        )
    if any(r.outcome == UNRECORDED for r in results):
        print("unrecorded files were put in the cache by hand; record them with "
              f"`maisi weights import {cache.weights_dir()}`")
    return 0


def _import(args: argparse.Namespace) -> int:
    for item in import_files(args.sources):
        print(f"{item.entry.filename}: imported from {item.source} "
              f"(sha256 {item.sha256}, {format_size(item.size)}) {item.path}")
    return 0


def _path(args: argparse.Namespace) -> int:
    from MAISIEngine.presets import ROLES, load_preset, shipped_preset_names
    from MAISIEngine.weights.resolve import cached_file, resolve_weight_path

    for name in args.names:
        if name in shipped_preset_names():
            preset = load_preset(name)
            for role in ROLES:
                if role in preset.weights:
                    print(resolve_weight_path(preset, role))
            continue
        for entry in entries_for_name(name):
            print(cached_file(entry.name))
    return 0


COMMANDS = {"list": _list, "download": _download, "verify": _verify, "import": _import, "path": _path}


def run(args: argparse.Namespace) -> int:
    """Execute a parsed `maisi weights ...` command; user errors become one line and exit code 2."""
    try:
        return COMMANDS[args.weights_command](args)
    except MaisiError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted (run the same command again: downloads resume where they stopped)", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: `python -m MAISIEngine.weights.cli weights ...` or without the word `weights`."""
    parser = argparse.ArgumentParser(prog="maisi")
    add_parser(parser.add_subparsers(dest="command", required=True))
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] != "weights":
        arguments.insert(0, "weights")
    return run(parser.parse_args(arguments))


if __name__ == "__main__":
    sys.exit(main())
