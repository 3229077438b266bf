"""File-system failures worded for people: one line, the path they gave, what to do.

Python's own messages name whatever path the failing call saw (a resolved target, a
hidden temporary file) and can run to thousands of characters for a long path; a
user wants to hear about the path they typed. Every place that touches the file
system on a user's behalf turns ``OSError`` (and ``pathlib``'s ``RuntimeError`` for
symlink loops) into a :class:`~merge_studio.errors.MergeStudioError` through here.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from merge_studio.errors import CheckpointError, MergeStudioError, OutputError

MAX_SHOWN = 160  # characters of a path shown in a message; longer ones keep both ends

_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOENT: "it does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ELOOP: "it is a symbolic-link loop (the link points back to itself)",
    errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EEXIST: "something with that name already exists",
    errno.EBUSY: "it is in use",
    errno.EMFILE: "too many files are open",
    errno.EIO: "an input/output error (a failing disk or network mount?)",
}
_HINTS = {
    errno.EACCES: "choose a folder you can write to, or change its permissions",
    errno.EPERM: "choose a folder you can write to, or change its permissions",
    errno.EROFS: "choose a place on a writable disk",
    errno.ENOSPC: "free some disk space or choose another place",
    errno.EDQUOT: "free some space or choose another place",
    errno.ELOOP: "point the link at the real file",
    errno.ENAMETOOLONG: "use a shorter name or a folder closer to the root",
}


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path short enough for one line: very long ones keep their start and end."""
    text = os.fspath(path)
    if len(text) <= MAX_SHOWN:
        return text
    keep = (MAX_SHOWN - 1) // 2
    return f"{text[:keep]}…{text[-keep:]}"


def reason(exc: BaseException) -> str:
    """What went wrong, in a few words, without the path the call happened to see."""
    if isinstance(exc, RuntimeError) and "symlink loop" in str(exc).lower():
        return _REASONS[errno.ELOOP]
    if isinstance(exc, OSError):
        if exc.errno in _REASONS:
            return _REASONS[exc.errno]
        if exc.strerror:
            return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc)[:200] or type(exc).__name__


def hint_for(exc: BaseException) -> str | None:
    if isinstance(exc, RuntimeError) and "symlink loop" in str(exc).lower():
        return _HINTS[errno.ELOOP]
    return _HINTS.get(getattr(exc, "errno", None)) if isinstance(exc, OSError) else None


def output_error(exc: BaseException, target: str | os.PathLike[str], doing: str = "write") -> OutputError:
    """An :class:`OutputError` about the output the user asked for (never a temporary name)."""
    return OutputError(f"cannot {doing} {shown_path(target)}: {reason(exc)}", hint=hint_for(exc))


def input_error(exc: BaseException, path: str | os.PathLike[str], doing: str = "open") -> CheckpointError:
    """A :class:`CheckpointError` naming the input path as the user gave it."""
    denied = isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM)
    hint = "ask for read access, or copy the model somewhere you can read it" if denied else hint_for(exc)
    return CheckpointError(f"cannot {doing} {shown_path(path)}: {reason(exc)}", hint=hint)


def missing_path_error(path: Path) -> CheckpointError:
    """Say why ``path`` cannot be found: absent, a dangling link, or a link loop."""
    shown = shown_path(path)
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return CheckpointError(f"{shown} is a symbolic-link loop (the link points back to itself)",
                                       hint="point the link at the real file")
            target = os.readlink(path)
            return CheckpointError(f"{shown} is a link to {shown_path(target)}, which does not exist",
                                   hint="the file it pointed to was moved or deleted")
    return CheckpointError(f"{shown} does not exist")


def user_facing(exc: BaseException, path_hint: str | None = None) -> MergeStudioError | None:
    """The last resort of a front end: a file-system failure nobody turned into words yet."""
    if isinstance(exc, OSError):
        where = path_hint or exc.filename
        text = f"{shown_path(where)}: {reason(exc)}" if where else reason(exc)
        return MergeStudioError(text, hint=hint_for(exc))
    if isinstance(exc, RuntimeError) and "symlink loop" in str(exc).lower():
        where = path_hint or str(exc).split(" from ", 1)[-1].strip(" '")
        return MergeStudioError(f"{shown_path(where)}: {reason(exc)}", hint=hint_for(exc))
    return None
