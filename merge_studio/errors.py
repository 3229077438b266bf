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
