"""The status bar's right side: the job in progress (bar, current item, ETA, Cancel) and the device."""

from __future__ import annotations

import time

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from merge_studio.core.progress import Progress


def format_eta(seconds: float) -> str:
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class EtaClock:
    """Time left for a job from its progress so far ("about 40 s left"), like the merge's status line.

    The estimate is shown once 2 % is done and a second has passed: earlier ones
    swing too much to be useful.
    """

    def __init__(self) -> None:
        self._started = time.monotonic()

    def start(self) -> None:
        self._started = time.monotonic()

    def update(self, progress: Progress) -> str:
        """``"about 12 s left"`` or ``""`` while no estimate is worth showing."""
        fraction = progress.fraction
        elapsed = time.monotonic() - self._started
        if fraction is None or not 0.02 < fraction < 1 or elapsed <= 1:
            return ""
        return f"about {format_eta(elapsed * (1 - fraction) / fraction)} left"


class JobStatus(QWidget):
    """Shows one job's progress; Cancel emits ``sig_cancel_requested``."""

    sig_cancel_requested = Signal()
    """The user clicked Cancel."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("job_status")
        self.label = QLabel("Ready", self)
        self.label.setObjectName("job_label")
        self.label.setMinimumWidth(260)
        self.bar = QProgressBar(self)
        self.bar.setFixedWidth(180)
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("cancel_button")
        self.cancel_button.clicked.connect(self.sig_cancel_requested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel_button)
        self._clock = EtaClock()
        self._title = ""
        self.finish("Ready")

    def start(self, title: str) -> None:
        self._title = title
        self._clock.start()
        self.label.setText(f"{title}…")
        self.bar.setRange(0, 0)  # busy until the first progress
        self.bar.show()
        self.cancel_button.show()
        self.cancel_button.setEnabled(True)

    def update_progress(self, progress: Progress) -> None:
        fraction = progress.fraction
        text = self._title
        if progress.current:
            text += f" — {progress.current}"
        elif progress.message:
            text += f" — {progress.message}"
        if fraction is None:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(fraction * 1000))
            eta = self._clock.update(progress)
            text += f" · {fraction:.0%}" + (f", {eta}" if eta else "")
        self.label.setText(text)
        self.label.setToolTip(text)

    def cancelling(self) -> None:
        self.cancel_button.setEnabled(False)
        self.label.setText(f"{self._title}: cancelling…")

    def finish(self, text: str) -> None:
        self.label.setText(text)
        self.bar.hide()
        self.cancel_button.hide()
