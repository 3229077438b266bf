"""The live plot of a search: every finished trial, drawn on the canvas's render thread.

Trials arrive one by one from the worker; :meth:`SearchPlot.add_trial` only appends
to a list and queues a redraw (``BackgroundCanvas.edit``), so the GUI thread never
waits for matplotlib, and redraws are at most ~10 a second however fast trials end.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from matplotlib.figure import Figure
from PySide6.QtWidgets import QVBoxLayout, QWidget

from merge_studio.gui.plot_canvas import BackgroundCanvas
from merge_studio.plots.search import plot_search


class SearchPlot(QWidget):
    """Objective against trial (one objective), or the Pareto front (two)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.figure = Figure(figsize=(6, 3.2), layout="constrained")
        self.axes = self.figure.add_subplot()
        self.canvas = BackgroundCanvas(self.figure, self)
        self.canvas.setMinimumSize(280, 180)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.numbers: list[int] = []
        self.values: list[tuple[float, ...]] = []
        self.directions: tuple[str, ...] = ("maximize",)
        self.names: tuple[str, ...] = ("objective",)
        self.selected: int | None = None
        self._lock = threading.Lock()
        self._queued = False
        self._state: tuple = ()
        self._queue_draw()

    @property
    def trial_count(self) -> int:
        return len(self.numbers)

    def start(self, names: Sequence[str], directions: Sequence[str]) -> None:
        """Forget the trials shown; the next ones are for these objectives."""
        self.names, self.directions = tuple(names), tuple(directions)
        self.numbers, self.values, self.selected = [], [], None
        self._queue_draw()

    def set_trials(self, numbers: Sequence[int], values: Sequence[Sequence[float]]) -> None:
        self.numbers = list(numbers)
        self.values = [tuple(v) for v in values]
        self._queue_draw()

    def add_trial(self, number: int, values: Sequence[float]) -> None:
        self.numbers.append(number)
        self.values.append(tuple(values))
        self._queue_draw()

    def select(self, number: int | None) -> None:
        self.selected = number
        self._queue_draw()

    def _queue_draw(self) -> None:
        """Queue one redraw; trials that arrive before it runs are drawn by it too."""
        with self._lock:
            self._state = (list(self.numbers), list(self.values), self.directions, self.names, self.selected)
            if self._queued:
                self.canvas.draw_idle()
                return
            self._queued = True
        self.canvas.edit(self._draw)

    def _draw(self, _figure: Figure) -> None:  # on the render thread
        with self._lock:
            numbers, values, directions, names, selected = self._state
            self._queued = False
        plot_search(self.axes, numbers, values, directions, names, selected=selected)
