"""The `maisi` command: generate, info, and the sub-commands each engine module contributes.

Every sub-command module offers `add_parser(subparsers)` and `run(args) -> int`. Bad input ends in one
line (`error: what is wrong (how to fix it)`) and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from MAISIEngine import __version__
from MAISIEngine.errors import CancelledError, MaisiError

SUBCOMMAND_MODULES = (
    "MAISIEngine.commands.generate",
    "MAISIEngine.commands.info",
    "MAISIEngine.commands.inpaint",
    "MAISIEngine.weights.cli",
    "MAISIEngine.phantom.cli",
    "MAISIEngine.quality",
    "MAISIEngine.train.cli",
    "MAISIEngine.io.dicom_cli",
    "MAISIEngine.masktools.cli",
    "MAISIEngine.batch.cli",
    "MAISIEngine.server.cli",
    "MAISIEngine.evaluate.cli",
)


def _load(name: str) -> ModuleType | None:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # A sub-command whose optional dependencies are not installed is simply absent.
        if exc.name and (exc.name == name or name.startswith(exc.name + ".") or not exc.name.startswith("MAISIEngine")):
            return None
        raise
    return module if hasattr(module, "add_parser") and hasattr(module, "run") else None


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is the same one line as every other refusal (and exit 2)."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        raise MaisiError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


def _on_sigterm(signum: int, frame: object) -> None:
    from MAISIEngine.io.atomic import remove_live_partials

    remove_live_partials()
    raise CancelledError("terminated (SIGTERM); nothing was written", "run the command again")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = OneLineParser(
        prog="maisi",
        description="Synthetic CT volumes with their label maps, from MAISI models (SYNTHETIC, not for clinical use).",
    )
    parser.add_argument("--version", action="version", version=f"maisi {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    owners: dict[str, ModuleType] = {}
    for name in SUBCOMMAND_MODULES:
        module = _load(name)
        if module is None:
            continue
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for command in set(subparsers.choices) - before:
            owners[command] = module
    return parser, owners


def print_error(error: MaisiError) -> None:
    print(f"error: {error.one_line()}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser, owners = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        return int(owners[args.command].run(args) or 0)
    except MaisiError as error:
        print_error(error)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last guard: users get one line, developers set MAISI_DEBUG=1
        if os.environ.get("MAISI_DEBUG"):
            raise
        print(f"error: internal error {exc.__class__.__name__}: {exc} "
              "(please report it with the command you ran; MAISI_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
