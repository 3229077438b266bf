"""Progress events and cooperative cancellation shared by every long job.

Long work in the core is a generator that yields :class:`Progress` (and sometimes
partial results) and returns a frozen result; front ends drive it. This keeps the
core free of threads and Qt, and makes every job testable with ``list(...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from merge_studio.errors import Cancelled

T = TypeVar("T")


PROGRESS_INTERVAL_S = 0.05
"""How often a front end passes progress on (~20 Hz): a smooth bar, and an idle GUI thread."""

@dataclass(frozen=True)
class Progress:
    """One step of a long job.

    ``done``/``total`` are in ``unit`` (tensors, elements, bytes, points...);
    ``total`` is ``None`` when unknown. ``current`` names the item being worked on.
    """

    stage: str
    done: int
    total: int | None = None
    current: str = ""
    unit: str = "items"
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """Share of the job done, in [0, 1], or ``None`` when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


class CancelToken:
    """A flag a front end sets and a job checks between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class LinkedCancel(CancelToken):
    """A token that is cancelled when its parent is, or on its own (a job stopping its helpers)."""

    def __init__(self, parent: CancelToken | None) -> None:
        super().__init__()
        self._parent = parent

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or (self._parent is not None and self._parent.cancelled)

    def raise_if_cancelled(self) -> None:
        if self._parent is not None:
            self._parent.raise_if_cancelled()
        super().raise_if_cancelled()


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set; ``None`` never cancels."""
    if cancel is not None:
        cancel.raise_if_cancelled()


def drive(
    job: Generator[Any, None, T],
    on_progress: Callable[[Progress], None] | None = None,
    on_partial: Callable[[Any], None] | None = None,
) -> T:
    """Run a job generator to the end and return its result.

    Items that are :class:`Progress` go to ``on_progress``; anything else is a
    partial result and goes to ``on_partial``.
    """
    try:
        while True:
            item = next(job)
            if isinstance(item, Progress):
                if on_progress is not None:
                    on_progress(item)
            elif on_partial is not None:
                on_partial(item)
    except StopIteration as stop:
        return stop.value
    finally:
        job.close()
