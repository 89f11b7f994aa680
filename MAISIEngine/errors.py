"""One error type for everything a user can get wrong, so every front end can show it the same way.

A `MaisiError` carries a one-line message (what is wrong) and a hint (how to fix it). The CLI prints
both on one line and exits with code 2; the worker emits them as an `error` event; the front ends show
them in a dialog. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class MaisiError(Exception):
    """A problem with the user's input or environment, with a hint on how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint as the single line the CLI prints."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class WeightsMissingError(MaisiError):
    """A model's weight file is not in the cache."""


class CancelledError(MaisiError):
    """The job was cancelled by the user (SIGTERM or a cancel request)."""

    exit_code = 130
