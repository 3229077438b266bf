"""A matplotlib canvas that draws on a helper thread, so plots never stall the window.

A full redraw of a small figure with constrained layout takes 150-250 ms on a
busy two-core machine; done on the GUI thread during a barrier sweep, the window
froze that long at every point. :class:`BackgroundCanvas` keeps matplotlib's Qt
canvas (toolbar, zoom, pan, save) but renders the figure on a short-lived Python
thread, at most :data:`MIN_INTERVAL_S` apart, and paints the last finished frame.

Resizes reach the figure on the render thread too, and so do ``resize_event``
callbacks connected with ``mpl_connect``: they may change the figure (and call
``draw_idle``) but must not touch Qt widgets.

Two ways to change the figure safely while a render may be running:

* ``canvas.edit(fn)`` queues ``fn(figure)``; the render thread applies queued
  edits in order before it draws. Nothing waits: use it for live updates.
* ``with canvas.hold(): ...`` waits for a render in flight, applies queued edits,
  and lets the GUI thread change the figure directly (rare, user-driven changes).

:func:`wait_for_plots` blocks until every canvas has drawn what it was asked to
(screenshots and tests).

A figure too small for its decorations makes constrained layout give up ("axes
sizes collapsed to zero"). The canvas notices (:func:`_collapse_watch`), asks
for more height (its tab then scrolls, see ``ScrollingTabs``) and draws again,
instead of showing squashed axes.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import shiboken6
from matplotlib.backend_bases import ResizeEvent
from matplotlib.cbook import CallbackRegistry
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtCore import QObject, QRect, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication, QWidget

MIN_INTERVAL_S = 0.1  # at most ~10 redraws a second per canvas
GROW_ON_COLLAPSE = 1.3  # the minimum height grows by this factor when the axes collapse
MAX_MIN_HEIGHT = 1400
Edit = Callable[[Figure], object]
_canvases: weakref.WeakSet[BackgroundCanvas] = weakref.WeakSet()
# One render at a time, whatever the number of canvases: matplotlib is mostly Python, and
# CPython hands the GIL to any waiting thread, so with three renders at once the GUI thread
# lost it to them again and again (gaps of 50-70 ms when a job's plots all changed together).
_render_gate = threading.Lock()


_watch = threading.local()


class _CollapseWatch:
    """Stands in for ``matplotlib._api`` inside constrained layout: a collapse reported while a
    canvas of ours draws on this thread is noted for that canvas instead of warned about."""

    def __init__(self, real: object) -> None:
        self._real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def warn_external(self, message: str, category: type[Warning] | None = None) -> None:
        seen = getattr(_watch, "collapses", None)
        if seen is not None and "collapsed" in str(message):
            seen.append(str(message))
            return
        self._real.warn_external(message, category)


def _install_collapse_watch() -> None:
    try:
        import matplotlib._constrained_layout as layout_module
    except ImportError:  # pragma: no cover - a matplotlib without it: warnings stay as they are
        return
    if not isinstance(getattr(layout_module, "_api", None), _CollapseWatch) and hasattr(layout_module, "_api"):
        layout_module._api = _CollapseWatch(layout_module._api)


_install_collapse_watch()


@contextmanager
def _collapse_watch() -> Iterator[list[str]]:
    """Collect constrained layout's "axes collapsed" reports made on this thread."""
    _watch.collapses = seen = []
    try:
        yield seen
    finally:
        _watch.collapses = None


class _FrameBridge(QObject):
    """Carries finished frames from the render thread to the GUI thread (a queued signal)."""

    sig_frame = Signal(object, int, bool, bool)


class BackgroundCanvas(FigureCanvasQTAgg):
    """``FigureCanvasQTAgg`` whose renders run off the GUI thread, throttled to ~10 Hz."""

    def __init__(self, figure: Figure | None = None, parent: QWidget | None = None) -> None:
        self._lock = threading.RLock()
        self._edits: list[Edit] = []
        self._edits_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._rendering = False  # a render thread runs, or its frame is not delivered yet
        self._generation = 0  # bumped by every request; a frame says which request it answers
        self._drawn_generation = 0
        self._last_start = 0.0
        self._frame: QImage | None = None
        self.render_count = 0
        self.last_render_s = 0.0
        self.collapse_count = 0  # draws whose axes did not fit (each one grew the canvas)
        self.last_draw_collapsed = False
        self.render_threads: set[str] = set()  # names of the threads that drew (tests)
        super().__init__(figure if figure is not None else Figure())
        if parent is not None:
            self.setParent(parent)
        self._bridge = _FrameBridge(self)
        self._bridge.sig_frame.connect(self._on_frame, Qt.ConnectionType.QueuedConnection)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._start_render)
        _canvases.add(self)

    # --- changing the figure ---------------------------------------------------------
    def edit(self, fn: Edit) -> None:
        """Queue ``fn(figure)`` to run on the render thread before its next draw, and ask for one."""
        with self._edits_lock:
            self._edits.append(fn)
        self.draw_idle()

    @contextmanager
    def hold(self) -> Iterator[Figure]:
        """Change the figure on this thread: waits for a render in flight, applies queued edits first."""
        with self._lock:
            self._apply_edits()
            yield self.figure

    def _apply_edits(self) -> bool:
        """Run the queued edits; returns whether there were any.

        Off the GUI thread, the figure's axes observers (the toolbar, which enables
        its Back/Forward buttons) are held back and told on the GUI thread afterwards.
        """
        with self._edits_lock:
            edits, self._edits = self._edits, []
        if not edits:
            return False
        off_gui = threading.current_thread() is not threading.main_thread()
        observers = getattr(self.figure, "_axobservers", None)
        if off_gui and observers is not None:
            self.figure._axobservers = CallbackRegistry()
        try:
            for fn in edits:
                try:
                    fn(self.figure)
                except Exception:  # noqa: BLE001 - a broken edit must not stop later ones or the drawing
                    traceback.print_exc()
        finally:
            if off_gui and observers is not None:
                self.figure._axobservers = observers
        return True

    def _agg_draw(self) -> None:
        """``FigureCanvasAgg.draw`` without the toolbar's wait cursor (a Qt call, not for the render thread)."""
        self.renderer = self.get_renderer()
        self.renderer.clear()
        self.figure.draw(self.renderer)

    # --- drawing -----------------------------------------------------------------------
    def draw_idle(self) -> None:  # matplotlib API: called by the toolbar, resizes and our views
        self._generation += 1
        if threading.current_thread() is threading.main_thread():
            self._schedule()
        # from the render thread (a resize callback): the frame in flight schedules the next render

    def _schedule(self) -> None:
        """Start a render soon, no sooner than MIN_INTERVAL_S after the last one started."""
        if self._timer.isActive() or self._rendering:
            return  # a render in flight schedules the next one when its frame arrives
        wait = MIN_INTERVAL_S - (time.monotonic() - self._last_start)
        self._timer.start(max(0, int(wait * 1000)))

    def draw(self) -> None:
        """Draw now, on this thread (exports, tests); later background draws continue as usual."""
        if self._is_drawing:
            return
        with self._lock:
            self._apply_edits()
            self._is_drawing = True
            try:
                with _collapse_watch() as collapses:
                    self._agg_draw()
                image = self._snapshot()
            finally:
                self._is_drawing = False
        self._frame = image
        self._drawn_generation = max(self._drawn_generation, self._generation)
        self.last_draw_collapsed = bool(collapses)
        self.render_threads.add(threading.current_thread().name)
        self.update()
        if collapses:
            self._grow()

    def _start_render(self) -> None:
        if self._rendering or self.width() <= 0 or self.height() <= 0:
            return
        self._rendering = True
        self._last_start = time.monotonic()
        generation = self._generation
        # not a daemon: leaving the app waits for a render in flight instead of killing it inside Agg
        self._thread = threading.Thread(target=self._render, args=(generation,), name="plot-render")
        self._thread.start()

    def _render(self, generation: int) -> None:
        """On the render thread; a canvas deleted meanwhile (its window closed) just ends it quietly."""
        try:
            _one_compute_thread()
            with _render_gate, _gui_gets_the_gil_sooner():
                self._render_once(generation)
        except BaseException:  # noqa: BLE001 - a thread's last resort: never reach the app's exception dialog
            if shiboken6.isValid(self):
                traceback.print_exc()

    def _render_once(self, generation: int) -> None:
        """Queued edits, the Agg draw, a copy of the pixels, then the frame to the GUI thread."""
        image = None
        collapses: list[str] = []
        edited = False
        started = time.perf_counter()
        try:
            with self._lock:
                edited = self._apply_edits()
                self._is_drawing = True
                try:
                    with _collapse_watch() as collapses:
                        self._agg_draw()
                    image = self._snapshot()
                finally:
                    self._is_drawing = False
        except Exception:  # noqa: BLE001 - report and keep the window alive, like matplotlib's own idle draw
            if not shiboken6.isValid(self):
                return
            traceback.print_exc()
        self.last_render_s = time.perf_counter() - started
        self.render_threads.add(threading.current_thread().name)
        try:
            if shiboken6.isValid(self._bridge):
                self._bridge.sig_frame.emit(image, generation, bool(collapses), edited)
        except RuntimeError:  # the canvas was deleted while drawing
            pass

    def _snapshot(self) -> QImage:
        buffer = self.buffer_rgba()
        height, width = buffer.shape[0], buffer.shape[1]
        image = QImage(bytes(buffer), width, height, QImage.Format.Format_RGBA8888).copy()
        image.setDevicePixelRatio(self.device_pixel_ratio)
        return image

    def _on_frame(self, image: QImage | None, generation: int, collapsed: bool, edited: bool = False) -> None:
        self._rendering = False
        observers = getattr(self.figure, "_axobservers", None)
        if edited and observers is not None:  # held back on the render thread: the toolbar updates here
            observers.process("_axes_change_event", self.figure)
        self.render_count += 1
        self._drawn_generation = max(self._drawn_generation, generation)  # a failed draw is not retried
        if image is not None:
            self._frame = image
            self.last_draw_collapsed = collapsed
        self.update()
        if collapsed and image is not None and self._drawn_at_this_size(image):
            self._grow()  # a frame drawn for an older (smaller) size says nothing about this one
        if self._generation > self._drawn_generation:
            self._schedule()  # asked again while drawing

    def _drawn_at_this_size(self, image: QImage) -> bool:
        ratio = self.device_pixel_ratio
        return abs(image.width() - self.width() * ratio) <= 2 and abs(image.height() - self.height() * ratio) <= 2

    def _grow(self) -> None:
        """The axes did not fit: ask the layout for more height and draw again at the new size."""
        self.collapse_count += 1
        height = min(MAX_MIN_HEIGHT, int(max(self.minimumHeight(), self.height(), 100) * GROW_ON_COLLAPSE))
        if height > self.minimumHeight():
            self.setMinimumHeight(height)
            self.draw_idle()

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing drawing: the frame on screen shows every change asked for."""
        return not self._rendering and not self._timer.isActive() and not self._edits and self._drawn_generation >= self._generation

    # --- Qt events -----------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override: paint the last finished frame
        painter = QPainter(self)
        try:
            rect: QRect = event.rect()
            painter.eraseRect(rect)
            if self._frame is not None:
                painter.drawImage(0, 0, self._frame)
            self._draw_rect_callback(painter)
        finally:
            painter.end()

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        """The figure takes the new size on the render thread (its resize callbacks run there too),
        so a resize never waits for a render in flight."""
        if self._in_resize_event or self.figure is None:
            return
        self._in_resize_event = True
        try:
            ratio = self.device_pixel_ratio
            width = event.size().width() * ratio / self.figure.dpi
            height = event.size().height() * ratio / self.figure.dpi
            QWidget.resizeEvent(self, event)

            def resize(figure: Figure) -> None:
                figure.set_size_inches(width, height, forward=False)
                ResizeEvent("resize_event", self)._process()

            self.edit(resize)
        finally:
            self._in_resize_event = False

    def hideEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        """The window is closing (not just another tab shown): let a render in flight finish first,
        so no thread draws into a canvas Qt is about to delete."""
        super().hideEvent(event)
        if not self.window().isVisible():
            self.finish_rendering()

    def finish_rendering(self, timeout_s: float = 5.0) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout_s)

    def print_figure(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - save while no render runs
        with self.hold():
            super().print_figure(*args, **kwargs)

    def flush(self) -> None:
        """Apply queued edits now, on this thread (tests read the figure after it)."""
        with self.hold():
            pass

    def wait(self, timeout_s: float = 10.0) -> bool:
        """Let the event loop run until this canvas is idle (tests, screenshots)."""
        return wait_for_plots(timeout_s, [self])


# While matplotlib draws (Python through and through), the GUI thread waits this long for the
# GIL each time it needs it, a hundred times a frame: at the window's 1 ms an alignment's
# pictures stalled it 40-70 ms, at 0.1 ms 17-28 ms (benchmarks/gui_latency.py, 2 cores). Only
# while drawing: merges, whose workers hold the GIL only between torch calls, gain nothing.
RENDER_SWITCH_S = 0.0001


@contextmanager
def _gui_gets_the_gil_sooner() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, RENDER_SWITCH_S))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _one_compute_thread() -> None:
    """Edits may compute with torch (a permutation's similarity matrix): on one core, so a
    render never takes the core the GUI thread needs (torch's setting is per thread)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def plots_idle() -> bool:
    """Whether every visible background canvas shows all it was asked to draw (does not wait)."""
    return all(c.idle for c in list(_canvases) if shiboken6.isValid(c) and c.isVisible())


def wait_for_plots(timeout_s: float = 10.0, canvases: list[BackgroundCanvas] | None = None) -> bool:
    """Process events until every (visible) background canvas has drawn all it was asked to."""
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout_s
    chosen = list(_canvases) if canvases is None else canvases
    while time.monotonic() < deadline:
        chosen = [c for c in chosen if shiboken6.isValid(c)]  # widgets deleted since are forgotten
        pending = [c for c in chosen if not c.idle and c.isVisible()]
        if not pending:
            return True
        for canvas in pending:
            if not canvas._rendering:  # noqa: SLF001
                canvas._timer.stop()  # noqa: SLF001 - do not wait out the throttle
                canvas._start_render()  # noqa: SLF001
        QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.005)
    return False


__all__ = ["BackgroundCanvas", "MIN_INTERVAL_S", "plots_idle", "wait_for_plots"]
