"""Errors meant for people: each says what is wrong, where, and what to do."""

from __future__ import annotations


class MergeStudioError(Exception):
    """Base class for every error Merge Studio reports to a user.

    ``hint`` is an optional sentence saying what the user can do about it.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class CheckpointError(MergeStudioError):
    """A checkpoint file cannot be opened or read (corrupt, truncated, unsupported)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint would need to run code (a pickle with non-tensor objects) to load."""


class IncompatibleCheckpointsError(MergeStudioError):
    """Checkpoints cannot be merged together (missing keys, shape mismatches)."""


class RecipeError(MergeStudioError):
    """A recipe file or its parameters are invalid."""


class MethodError(MergeStudioError):
    """A merge method was misused (wrong number of models, missing base model...)."""


class OutputError(MergeStudioError):
    """The output cannot be written where asked (e.g. it would overwrite an input)."""


class ArchitectureError(MergeStudioError):
    """A model architecture cannot be built or does not fit a checkpoint."""


class MissingExtraError(MergeStudioError):
    """An optional library a feature needs is not installed; the hint names the extra."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        super().__init__(f"{feature} needs {module}, which is not installed", hint=f"pip install 'merge-studio[{extra}]'")
        self.module = module
        self.extra = extra


class Cancelled(Exception):  # noqa: N818 - a state, not a failure
    """Raised inside a job when the user cancelled it. Not an error for people."""


def describe_failure(exc: BaseException) -> dict[str, object]:
    """A failure as plain data (type name, message, hint, traceback), to show or to send between processes.

    A :class:`MergeStudioError` keeps its message and hint and is marked ``for_people``: the
    message alone says enough. A failure that came from a merge's own process carries that
    process's type name and traceback (``type_name``, ``remote_traceback``) and shows those.
    """
    import traceback

    people = isinstance(exc, MergeStudioError)
    remote = getattr(exc, "remote_traceback", None)
    return {
        "type_name": getattr(exc, "type_name", None) if remote else type(exc).__name__,
        "message": exc.message if people else (str(exc) or type(exc).__name__),
        "hint": exc.hint if people else None,
        "for_people": people,
        "traceback": remote or "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
