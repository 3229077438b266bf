"""A terminal progress bar for core jobs, written to stderr."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from merge_studio.core.progress import Progress


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    """Draws ``Progress`` events; redraws in place on a terminal, prints sparse lines otherwise."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._drawn = False

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        frac = p.fraction
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw < 0.1 and frac not in (None, 1.0):
                return
            self._last_draw = now
            width = shutil.get_terminal_size((80, 20)).columns
            elapsed = now - self.start
            if frac is None:
                line = f"{p.stage}: {p.message or p.current}"
            else:
                eta = elapsed / frac * (1 - frac) if frac > 0 else 0
                bar_w = 24
                filled = int(bar_w * frac)
                line = f"{p.stage:>7} [{'#' * filled}{'.' * (bar_w - filled)}] {frac:6.1%} ETA {_fmt_time(eta)} {p.current}"
            self.stream.write("\r" + line[: width - 1].ljust(width - 1))
            self.stream.flush()
            self._drawn = True
        elif frac is not None:
            decile = int(frac * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(f"{p.stage}: {frac:.0%}\n")
                self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
