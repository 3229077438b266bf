"""All cores on one merge: tasks run on a pool of worker threads, results come back in order.

torch releases the GIL in its kernels and positional reads release it too, so worker
threads give real parallelism for reading, converting and merging chunks. Each worker
uses one intra-op thread: the pool is the parallelism, the machine is not
oversubscribed, and every reduction inside a task is computed the same way whatever
the number of workers, so the output is bit-identical for any ``threads`` (the
sequential path is simply a pool of one).

Memory stays bounded: at most ``window`` ordered tasks are in flight (a few chunks per
worker), and the caller consumes results as they complete, in submission order.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
THREADS_ENV = "MERGE_STUDIO_THREADS"


def default_threads() -> int:
    """Worker threads for a merge: ``$MERGE_STUDIO_THREADS`` or every core this process may use."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _one_intra_op_thread() -> None:
    # Thread-local in torch's OpenMP backend: the caller's own setting is untouched.
    import torch

    torch.set_num_threads(1)


class OrderedPool:
    """A pool whose :meth:`ordered` results come back in the order their tasks were given.

    :meth:`submit` also runs side tasks (e.g. a tensor's statistics) that ordered tasks
    wait on; they are queued first, so a worker waiting for one never waits forever.
    """

    def __init__(self, threads: int, window: int | None = None) -> None:
        self.threads = max(1, int(threads))
        self.window = window or 2 * self.threads + 2
        self._pool = ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix="merge", initializer=_one_intra_op_thread
        )
        self._side: list[Future[Any]] = []

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` as soon as a worker is free (queued before later ordered tasks)."""
        future = self._pool.submit(fn)
        self._side = [f for f in self._side if not f.done()]
        self._side.append(future)
        return future

    def ordered(self, tasks: Iterable[Callable[[], T]]) -> Iterator[T]:
        """Run ``tasks`` (pulled lazily) and yield their results in order; the first failure is raised."""
        pending: deque[Future[T]] = deque()
        source = iter(tasks)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.window:
                    try:
                        task = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append(self._pool.submit(task))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        """Drop queued work and wait for running tasks (they check the cancel token and stop soon)."""
        for future in self._side:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
