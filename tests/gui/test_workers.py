"""The job worker: progress, results, failures and cancellation, on a real QThread."""

from __future__ import annotations

import threading

import pytest

from merge_studio.core.progress import Progress, check_cancel
from merge_studio.errors import CheckpointError
from merge_studio.gui.workers import JobError, JobRunner


@pytest.fixture
def runner(qtbot):
    r = JobRunner()
    yield r
    assert r.shutdown(5000), "a job did not stop"


def counting_job(n: int):
    def job(cancel):
        for i in range(n):
            check_cancel(cancel)
            yield Progress("count", i + 1, n)
        yield "halfway-note"
        return n * 10

    return job


def test_worker_reports_progress_partial_result_then_done(qtbot, runner):
    seen = []
    worker = runner.start(counting_job(3))
    worker.sig_progress.connect(lambda p: seen.append(("progress", p.done)))
    worker.sig_partial.connect(lambda x: seen.append(("partial", x)))
    worker.sig_result.connect(lambda r: seen.append(("result", r)))
    with qtbot.waitSignal(worker.sig_done, timeout=5000):
        pass
    assert seen[-1] == ("result", 30)
    assert ("partial", "halfway-note") in seen
    assert seen[0] == ("progress", 1)  # the first progress is never held back
    qtbot.waitUntil(lambda: not runner.running(), timeout=5000)


def test_progress_is_throttled_but_the_last_one_arrives(qtbot, runner):
    received = []
    worker = runner.start(counting_job(20_000))
    worker.sig_progress.connect(received.append)
    with qtbot.waitSignal(worker.sig_done, timeout=10_000):
        pass
    assert 1 <= len(received) < 2_000
    assert received[-1].done == 20_000


def test_cancel_stops_an_endless_job(qtbot, runner):
    started = threading.Event()

    def endless(cancel):
        while True:
            started.set()
            check_cancel(cancel)
            yield Progress("spin", 0, None)

    worker = runner.start(endless)
    qtbot.waitUntil(started.is_set, timeout=5000)
    with qtbot.waitSignals([worker.sig_cancelled, worker.sig_done], order="strict", timeout=1000):
        worker.cancel()
    qtbot.waitUntil(lambda: not runner.running(), timeout=5000)


def test_failure_carries_the_message_and_the_traceback(qtbot, runner):
    def failing(cancel):
        yield Progress("read", 0, 1)
        raise CheckpointError("model.safetensors is truncated", hint="download it again")

    worker = runner.start(failing)
    with qtbot.waitSignal(worker.sig_failed, timeout=5000) as blocker:
        pass
    error = blocker.args[0]
    assert isinstance(error, JobError)
    assert error.message == "model.safetensors is truncated"
    assert error.hint == "download it again"
    assert error.for_people
    assert "CheckpointError" in error.traceback_text and "failing" in error.traceback_text
    qtbot.waitUntil(lambda: not runner.running(), timeout=5000)


def test_generator_cleanup_runs_when_cancelled(qtbot, runner):
    closed = threading.Event()

    def job(cancel):
        try:
            while True:
                check_cancel(cancel)
                yield Progress("spin", 0, None)
        finally:
            closed.set()

    worker = runner.start(job)
    with qtbot.waitSignal(worker.sig_progress, timeout=2000):
        pass
    with qtbot.waitSignal(worker.sig_done, timeout=2000):
        worker.cancel()
    assert closed.is_set()


def test_a_job_cancelled_before_it_starts_never_runs(qtbot, runner):
    ran = threading.Event()

    def job(cancel):
        ran.set()
        yield Progress("x", 0, 1)

    worker = runner.start(job)
    worker.cancel()
    with qtbot.waitSignals([worker.sig_cancelled, worker.sig_done], order="strict", timeout=2000):
        pass
    assert not ran.is_set()


def test_shutdown_cancels_and_joins_running_jobs(qtbot):
    runner = JobRunner()

    def endless(cancel):
        while True:
            check_cancel(cancel)
            yield Progress("spin", 0, None)

    for _ in range(3):
        runner.start(endless)
    assert len(runner.running()) == 3
    assert runner.shutdown(5000)
    assert runner.running() == []


def test_signals_arrive_on_the_gui_thread_so_any_slot_may_touch_widgets(qtbot, runner):
    gui_thread = threading.get_ident()
    threads: set[int] = set()
    worker = runner.start(counting_job(5))
    worker.sig_progress.connect(lambda _p: threads.add(threading.get_ident()))
    worker.sig_result.connect(lambda _r: threads.add(threading.get_ident()))
    with qtbot.waitSignal(worker.sig_done, timeout=5000):
        pass
    assert threads == {gui_thread}


def test_a_failure_in_a_merges_own_process_shows_that_process_traceback():
    from merge_studio.core.merge_process import MergeProcessError

    remote = 'Traceback (most recent call last):\n  File "engine.py", line 9, in _stream\nKeyError: \'layers.0.weight\'\n'
    error = JobError.from_exception(MergeProcessError("KeyError", "'layers.0.weight'", remote))
    assert error.type_name == "KeyError" and error.traceback_text == remote
    assert not error.for_people and error.message == "'layers.0.weight'"
