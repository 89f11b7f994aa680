"""`maisi-desktop`: start the window, optionally with files, a phantom, or a startup-time report.

Unexpected exceptions in the event loop are shown in a dialog (and printed to stderr) instead of
ending the app; user errors are `MaisiError`s shown with their hint.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence

from PyQt5 import QtCore, QtWidgets

_STARTED = time.perf_counter()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maisi-desktop", description="MAISI synthetic CT desktop app")
    parser.add_argument("labels", nargs="?", help="a MAISI label map to open (NIfTI or NRRD)")
    parser.add_argument("--ct", help="a CT to open (with the label map, when given, on the same grid)")
    parser.add_argument("--phantom", action="store_true", help="start from the phantom template")
    parser.add_argument("--runs-dir", help="folder for runs (default: $MAISI_DESKTOP_RUNS or the user data folder)")
    parser.add_argument("--report-startup", action="store_true",
                        help="print the seconds from process start to the window shown, then quit")
    return parser


def install_exception_dialog(window: QtWidgets.QMainWindow) -> None:
    """Keep the app alive on an unexpected exception: print it, and say so in a dialog."""
    from MAISIDesktop.dialogs import show_error

    def hook(kind, value, tb) -> None:
        traceback.print_exception(kind, value, tb, file=sys.stderr)
        show_error(window, f"unexpected error: {kind.__name__}: {value}",
                   "the app stays usable; please report this with the steps that led to it",
                   "".join(traceback.format_exception(kind, value, tb)))

    sys.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    QtCore.QCoreApplication.setApplicationName("maisi-desktop")
    QtCore.QCoreApplication.setOrganizationName("MAISISynth")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])

    from MAISIDesktop.dialogs import PhantomSettings
    from MAISIDesktop.main_window import MainWindow

    window = MainWindow(runs_dir=args.runs_dir)
    install_exception_dialog(window)
    window.show()
    if args.report_startup:
        def report() -> None:
            handle = window.windowHandle()
            if handle is None or not handle.isExposed():
                QtCore.QTimer.singleShot(5, report)
                return
            print(f"window shown {time.perf_counter() - _STARTED:.3f} s after the app module was imported", flush=True)
            window.close()

        QtCore.QTimer.singleShot(0, report)
        return app.exec_()
    if args.ct:
        window.load_ct_file(args.ct, args.labels)
    elif args.labels:
        window.load_label_file(args.labels)
    elif args.phantom:
        window.new_phantom(PhantomSettings())
    return app.exec_()


if __name__ == "__main__":
    sys.exit(main())
