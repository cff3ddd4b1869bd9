"""The user-error convention shared by every command.

A :class:`UserError` is a problem with what the user asked for or gave us (a missing file, a malformed
split list, an impossible option). The CLI prints its message as one line on stderr, followed by the fix
when one is known, and exits with code 2 and no traceback (``--debug`` shows it). Anything else that
escapes a command is a bug and is reported as an internal error.
"""

from __future__ import annotations

import errno
import re


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


def storage_problem(e: BaseException) -> str | None:
    """One line for an error writing to disk that the user can fix -- the disk or quota is full, a file-size
    limit (``ulimit -f``) was reached, or permission is denied -- or None for any other error. h5py reports the
    errno of a failed write only inside its message (and some as a RuntimeError); it is read from there too."""
    if not isinstance(e, (OSError, RuntimeError)):  # h5py raises RuntimeError for some failed writes (a flush)
        return None
    text = str(e)
    code = getattr(e, "errno", None)
    if code is None or code not in _STORAGE_ERRNOS:
        found = re.search(r"errno = (\d+)", text)
        code = int(found.group(1)) if found else code
    if isinstance(e, RuntimeError) and "file write failed" not in text:
        return None
    name = getattr(e, "filename", None) or (m.group(1) if (m := re.search(r"filename = '([^']*)'", text)) else None)
    where = f" writing {name}" if name else ""
    resume = "then run the same command again to resume"
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "out of disk space" if code == errno.ENOSPC else "disk quota exceeded"
        return (f"{what}{where}; finished work is kept -- free space (e.g. `actiontk status --gc`) or point --cache "
                f"at a larger disk, {resume}")
    if code == errno.EFBIG:
        return (f"the file-size limit was reached{where} (`ulimit -f`); finished work is kept -- raise the limit "
                f"(`ulimit -f unlimited`) or write smaller files (extract: --videos-per-shard), {resume}")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "the file system is read-only" if code == errno.EROFS else "permission denied"
        return (f"{what}{' for ' + str(name) if name else ''}; finished work is kept -- make that folder writable "
                f"for this user or point --cache at one that is, {resume}")
    return None


def one_line(text: object, limit: int = 200, *, first_line: bool = False) -> str:
    """``text`` (a message, an exception) as one line of at most ``limit`` characters, cut with "…": its
    whitespace runs collapsed into single spaces, or with ``first_line`` only its first non-blank line (the
    gist of a tool's multi-line output, e.g. FFmpeg's)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = (lines[0] if lines else "") if first_line else " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS)
