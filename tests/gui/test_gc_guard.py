"""Garbage collection stays on the GUI thread and does not stall the window."""

from __future__ import annotations

import gc
import weakref

import pytest

from merge_studio.gui import gc_guard


class _Node:
    pass


def test_a_built_window_is_frozen_out_of_full_collections_and_new_cycles_still_go(qtbot, monkeypatch):
    # a full collection walked ~280,000 objects (150 ms on the GUI thread) when the window was built
    from merge_studio.gui.main_window import MainWindow

    monkeypatch.setattr(gc_guard, "_settled", False)  # as in the app, where this is the process's first window
    window = MainWindow()
    qtbot.addWidget(window)
    assert gc_guard._settled  # noqa: SLF001
    walked = {id(obj) for obj in gc.get_objects()}  # what a full collection would walk
    built = [window.__dict__, window.method_panel.__dict__, *(view.__dict__ for view in window.extra_views.values())]
    assert not [obj for obj in built if id(obj) in walked]
    node = _Node()
    node.me = node  # a cycle made after the freeze
    gone = weakref.ref(node)
    del node
    gc.collect()
    assert gone() is None


def _generations_collected(collector: gc_guard.GuiThreadCollector, *, during_job: bool) -> list[int]:
    """The generations one look of the collector collects, with or without a job running."""
    seen: list[int] = []

    def note(phase, info):
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(note)
    if during_job:
        gc_guard.job_started()
    try:
        collector.check()
    finally:
        if during_job:
            gc_guard.job_finished()
        gc.callbacks.remove(note)
    return seen


def test_while_a_job_runs_only_the_youngest_generation_is_collected(qtbot, monkeypatch):
    monkeypatch.setattr(gc_guard, "_jobs_running", 0)  # jobs other tests left running do not count here
    monkeypatch.setattr(gc_guard, "QUIET_AFTER_JOB_S", 0.0)  # idle as soon as the job ends
    collector = gc_guard.GuiThreadCollector()
    collector.timer.stop()  # looked at by hand here
    monkeypatch.setattr(collector, "thresholds", (0, 0, 0))  # every generation is due
    assert _generations_collected(collector, during_job=True) == [0]  # what was made since the last look
    assert _generations_collected(collector, during_job=False)[0] > 0  # idle: older ones too
    collector._middle_at -= gc_guard.MIDDLE_EVERY_S  # noqa: SLF001 - five seconds into a long job
    assert _generations_collected(collector, during_job=True) == [1]  # a long job's cycles are still freed


def test_right_after_a_job_ends_the_oldest_generation_waits_for_a_quiet_moment(qtbot, monkeypatch):
    """A job's end brings its results, panel refreshes and threads winding down: a full
    collection (30-60 ms) on top of that stalled the window, so it waits a little."""
    monkeypatch.setattr(gc_guard, "_jobs_running", 0)
    collector = gc_guard.GuiThreadCollector()
    collector.timer.stop()
    monkeypatch.setattr(collector, "thresholds", (-1, -1, -1))  # every generation is due, even just after one ran
    assert _generations_collected(collector, during_job=True) == [0]
    assert _generations_collected(collector, during_job=False) == [0]  # the job has just ended
    monkeypatch.setattr(gc_guard, "_last_job_end", gc_guard._last_job_end - gc_guard.QUIET_AFTER_JOB_S)  # noqa: SLF001
    assert _generations_collected(collector, during_job=False) == [2]  # quiet now: the oldest too


def test_a_library_loaded_later_is_frozen_once_no_job_runs(qtbot, monkeypatch):
    monkeypatch.setattr(gc_guard, "_jobs_running", 0)
    monkeypatch.setattr(gc_guard, "QUIET_AFTER_JOB_S", 0.0)
    collector = gc_guard.GuiThreadCollector()
    monkeypatch.setattr(gc_guard, "_refreeze", False)
    gc_guard.freeze_when_idle()  # as the kernel warm-up thread does when numba is in
    made_later = [_Node() for _ in range(500)]
    try:
        gc_guard.job_started()
        try:
            frozen = gc.get_freeze_count()
            collector.check()
            assert gc.get_freeze_count() == frozen  # not during a job
        finally:
            gc_guard.job_finished()
        collector.check()
    finally:
        collector.timer.stop()
    assert gc.get_freeze_count() >= frozen + len(made_later)
    assert not gc_guard._refreeze  # noqa: SLF001 - done once


def test_the_window_loads_the_compiled_kernels_on_a_thread_and_freezes_them_after(qtbot, window, monkeypatch):
    import threading

    from merge_studio.core import kernels
    from merge_studio.gui import kernel_warmup

    if not kernels.available():
        pytest.skip("numba is not installed: the app merges with torch, nothing to load")
    monkeypatch.setattr(kernel_warmup, "_started", False)
    monkeypatch.setattr(gc_guard, "_refreeze", False)
    kernel_warmup.start()
    for thread in [t for t in threading.enumerate() if t.name == "kernel-prepare"]:
        thread.join(timeout=120)
    assert any(name == "magnitude.sample_magnitudes" for name, _key in kernels._ready)  # noqa: SLF001
    assert gc_guard._refreeze  # noqa: SLF001 - the collector freezes numba's objects when idle
