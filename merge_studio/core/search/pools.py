"""Where trials run: in this process, in local worker processes, or as Ray tasks.

Every pool hands back ``concurrent.futures.Future`` objects (Ray's ``ObjectRef.future()``),
so the driver waits on all three the same way. Only the driver talks to the Optuna
study; workers get a recipe mapping and return numbers.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from merge_studio.core.search.space import SearchError
from merge_studio.core.search.trial import init_worker, run_trial


class InlinePool:
    """Runs each trial at once in this process (``workers=0``; handy for debugging and tests)."""

    parallel = 1

    def submit(self, recipe: Mapping[str, Any], objectives: Sequence[Mapping[str, Any]], device: str) -> Future:
        fut: Future = Future()
        fut.set_result(run_trial(recipe, objectives, device))
        return fut

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


class ProcessPool:
    """``workers`` spawned processes with one torch thread each."""

    def __init__(self, workers: int) -> None:
        self.parallel = workers
        self._executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=init_worker)

    def submit(self, recipe: Mapping[str, Any], objectives: Sequence[Mapping[str, Any]], device: str) -> Future:
        return self._executor.submit(run_trial, dict(recipe), [dict(o) for o in objectives], device)

    def cancel(self) -> None:
        """Stop at once: queued trials are dropped and running workers are terminated."""
        processes = list(getattr(self._executor, "_processes", {}).values())  # no public handle on them
        self._executor.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(timeout=5)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _ray_trial(recipe: Mapping[str, Any], objectives: Sequence[Mapping[str, Any]], device: str) -> dict[str, Any]:
    init_worker(1)
    return run_trial(recipe, objectives, device)


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SearchError("running trials on Ray needs the ray package",
                          hint="pip install 'merge-studio[search]'") from None
    return ray


class RayPool:
    """Trials as Ray tasks (one CPU each, or one GPU each with ``gpus_per_trial``).

    ``address``: ``"local"`` starts a private local cluster for this search (stopped at
    the end); ``"auto"`` joins the cluster started on this machine with ``ray start``;
    ``"ray://HOST:10001"`` joins a remote one through Ray Client. Every node must be able
    to import merge_studio and read the models at the same paths (a shared folder).
    """

    def __init__(self, address: str, workers: int | None, *, gpus_per_trial: float = 0.0) -> None:
        ray = require_ray()
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            if address == "local":
                ray.init(num_cpus=workers or 2, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                try:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
                except ConnectionError as exc:
                    raise SearchError(f"cannot reach the Ray cluster at {address!r}: {exc}",
                                      hint="start it with 'ray start --head' or give its address") from None
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.parallel = workers or max(1, cpus)
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        if gpus_per_trial:
            options["num_gpus"] = gpus_per_trial
        self._remote = ray.remote(**options)(_ray_trial)
        self._refs: list[Any] = []

    def submit(self, recipe: Mapping[str, Any], objectives: Sequence[Mapping[str, Any]], device: str) -> Future:
        ref = self._remote.remote(dict(recipe), [dict(o) for o in objectives], device)
        self._refs.append(ref)
        return ref.future()

    def cancel(self) -> None:
        for ref in self._refs:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished or already gone
                pass

    def close(self) -> None:
        if self._owns:
            self._ray.shutdown()


def make_pool(workers: int | None, ray: str | None, *, gpus_per_trial: float = 0.0) -> InlinePool | ProcessPool | RayPool:
    if ray:
        return RayPool(ray, workers, gpus_per_trial=gpus_per_trial)
    if workers == 0:
        return InlinePool()
    return ProcessPool(workers or 2)
