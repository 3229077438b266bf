"""Run a merge in a process of its own, as a job generator like :func:`iter_checked_merge`.

Why: a merge's worker, reader and writer threads share one interpreter lock with
whatever started them. In the window that is the GUI thread, and every Qt call it
makes while a merge runs (or winds down after Cancel, or waits on a cold disk) queues
for that lock: stalls of 50-400 ms that no amount of work on the window's own code
removed. In a child process the merge has a lock of its own; the window's thread that
drives the job only waits on a pipe and relays about 20 progress messages a second.

The child comes from a fork server that has already imported torch, the engine and the
compiled kernels' LLVM (:mod:`merge_child_warm`), so a merge starts in tens of
milliseconds rather than paying two seconds of imports each time. Where there is no
fork server (Windows) a fresh interpreter is spawned instead.

The channel carries only what this module's child sends: :class:`Progress`, the
:class:`MergeResult` and a plain description of a failure (never an exception object,
which might not survive the trip). Cancel is an event the child watches; its merge
stops at its next check and removes its temporary files as it would in-process.
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Generator
from typing import Any

from merge_studio.core.progress import PROGRESS_INTERVAL_S, CancelToken, Progress
from merge_studio.core.recipe import Recipe
from merge_studio.errors import Cancelled, MergeStudioError, describe_failure

POLL_S = 0.05  # how often the driving thread looks at the cancel token while the child is quiet
STOP_GRACE_S = 60.0  # after Cancel, how long the child may take to clean up before it is killed
CHILD_NICENESS = 19  # the lowest priority: the merge takes the CPU time the window and the desktop leave
_WARM_MODULE = "merge_studio.core.merge_child_warm"

_context_lock = threading.Lock()
_context: Any = None


class MergeProcessError(RuntimeError):
    """An unexpected failure inside the merge's process, carrying the child's traceback."""

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


def enabled() -> bool:
    """Whether the window merges in a child process (``MERGE_STUDIO_MERGE_PROCESS=0`` keeps it in-process)."""
    return os.environ.get("MERGE_STUDIO_MERGE_PROCESS", "1").strip().lower() not in {"0", "false", "no", "off"}


def merge_context() -> Any:
    """The multiprocessing context merges run in: a warm fork server where the platform has one."""
    global _context
    with _context_lock:
        if _context is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload([_WARM_MODULE])
            else:
                ctx = multiprocessing.get_context("spawn")
            _context = ctx
        return _context


def prewarm() -> None:
    """Start the fork server now (it imports torch and the engine), so the first merge starts at once.

    Safe to call from any thread and more than once; a no-op where merges spawn.
    """
    ctx = merge_context()
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    try:
        forkserver.ensure_running()
    except OSError:  # a merge will try again, and report what fails then
        pass


def iter_merge_in_process(
    recipe: Recipe, cancel: CancelToken | None = None, *, threads: int | None = None
) -> Generator[Any, None, Any]:
    """:func:`iter_checked_merge` run in a child process: the same progress, result, errors and cancel."""
    ctx = merge_context()
    receive, send = ctx.Pipe(duplex=False)
    control_read, control = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child_main, name="merge-studio-merge", daemon=True,
        args=(send, control_read, recipe, threads, dict(os.environ), os.getcwd()),
    )
    yield Progress("start", 0, None, message="starting the merge process")
    started = time.time()
    try:
        process.start()
    except OSError as exc:  # no fork server, no memory for a process: say so, and leave no pipe open
        for end in (receive, send, control_read, control):
            end.close()
        raise MergeStudioError(f"Could not start the merge process: {exc}",
                               hint="MERGE_STUDIO_MERGE_PROCESS=0 merges in the window's own process") from exc
    send.close()  # the child holds the only writing end: its exit ends our reads
    control_read.close()
    asked_to_stop = False
    try:
        while True:
            if cancel is not None and cancel.cancelled and not asked_to_stop:
                asked_to_stop = _ask_to_stop(control)
            if not receive.poll(POLL_S):
                continue
            try:
                kind, payload = receive.recv()
            except EOFError:
                process.join(5)
                _remove_leftovers(recipe, started)
                raise MergeStudioError(
                    f"The merge process ended without a result (exit code {process.exitcode})",
                    hint="it may have run out of memory; its partly written output was removed",
                ) from None
            if kind == "progress":
                yield payload
            elif kind == "result":
                return payload
            elif kind == "cancelled":
                raise Cancelled(payload or "cancelled by the user")
            elif kind == "error":
                raise _rebuilt(payload)
    finally:
        if not _stop_child(process, control):
            _remove_leftovers(recipe, started)
        receive.close()


def _ask_to_stop(control: Any) -> bool:
    """Tell the child to cancel (a child that has already gone needs no telling)."""
    try:
        control.send("cancel")
    except OSError:
        pass
    return True


def _stop_child(process: Any, control: Any) -> bool:
    """Let the child finish (its cleanup removes temporary files); kill it only if it will not stop.

    ``False`` when it had to be killed, and so could not clean up after itself.
    """
    stopped = True
    if process.is_alive():
        _ask_to_stop(control)
        process.join(STOP_GRACE_S)
        if process.is_alive():
            process.kill()
            stopped = False
    process.join()
    control.close()
    try:
        process.close()
    except ValueError:
        pass
    return stopped


def _remove_leftovers(recipe: Recipe, since: float) -> None:
    """Remove the temporary outputs of a child that died or was killed (it could not remove them).

    The writer names them ``.NAME.tmp-XXXXXXXX`` beside each target; only those made since
    this merge started are removed, so another merge's work in the same folder is left alone.
    """
    from merge_studio.core.overwrite import merge_targets

    for target in merge_targets(recipe):
        folder = target.absolute().parent
        for leftover in folder.glob(f".{glob.escape(target.name)}.tmp-*"):
            try:
                if leftover.stat().st_mtime < since - 1.0:
                    continue
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
            except OSError:
                pass


def _rebuilt(failure: dict[str, Any]) -> Exception:
    """The child's failure as an exception here: a user-facing error keeps its class, message and hint."""
    if failure.get("for_people"):
        from merge_studio import errors

        cls = getattr(errors, failure["type_name"], None)
        if not (isinstance(cls, type) and issubclass(cls, MergeStudioError)):
            cls = MergeStudioError
        try:
            return cls(failure["message"], hint=failure.get("hint"))
        except TypeError:  # a subclass with a signature of its own
            return MergeStudioError(failure["message"], hint=failure.get("hint"))
    return MergeProcessError(failure["type_name"], failure["message"], failure["traceback"])


# --- the child's side -----------------------------------------------------------------
def _child_main(
    send: Any, control: Any, recipe: Recipe, threads: int | None, environ: dict[str, str], cwd: str
) -> None:
    """Run the merge and report on ``send``; a message on ``control`` (or its end) is the window's Cancel."""
    os.environ.clear()
    os.environ.update(environ)  # the fork server's copy may be older than the window's
    os.chdir(cwd)
    try:
        os.nice(CHILD_NICENESS)
    except (OSError, AttributeError):
        pass
    token = CancelToken()
    threading.Thread(target=_relay_stop, args=(control, token), name="merge-cancel", daemon=True).start()
    try:
        from merge_studio.core.estimate import iter_checked_merge

        result = _drive(iter_checked_merge(recipe, token, threads=threads), send)
        send.send(("result", result))
    except Cancelled as exc:
        send.send(("cancelled", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the window
        if token.cancelled:
            send.send(("cancelled", "cancelled by the user"))
        else:
            send.send(("error", describe_failure(exc)))
    finally:
        send.close()


def _relay_stop(control: Any, token: CancelToken) -> None:
    """Cancel on the window's word, or when the window has gone (its end of the pipe closed)."""
    try:
        control.recv()
    except (EOFError, OSError):
        pass
    token.cancel()


def _drive(job: Generator[Any, None, Any], send: Any) -> Any:
    """Run the job, sending progress at most every :data:`PROGRESS_INTERVAL_S` (and the last one)."""
    last_sent = 0.0
    pending: Progress | None = None
    try:
        while True:
            try:
                item = next(job)
            except StopIteration as done:
                if pending is not None:
                    send.send(("progress", pending))
                return done.value
            if not isinstance(item, Progress):
                continue  # a streaming merge yields nothing else
            now = time.monotonic()
            if now - last_sent >= PROGRESS_INTERVAL_S:
                send.send(("progress", item))
                last_sent, pending = now, None
            else:
                pending = item
    finally:
        job.close()
