"""The user-error convention shared by every command.

A :class:`UserError` is a problem with what the user asked for or gave us (a missing file, a malformed
split list, an impossible option). The CLI prints its message as one line on stderr, followed by the fix
when one is known, and exits with code 2 and no traceback (``--debug`` shows it). Anything else that
escapes a command is a bug and is reported as an internal error.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; ``hint`` says what to do about it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ProblemsFound(Exception):
    """A check ran to completion and found problems: exit code 1, the report was already printed."""

    exit_code = 1
