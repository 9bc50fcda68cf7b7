"""Executors: where worker tasks run. The stage functions are the same for all of them.

* ``local`` (default): ``--workers 1`` runs tasks in this process; more workers run them in a
  process pool started with ``spawn`` (nothing inherited by fork: tasks carry what they need,
  so the same code runs under Ray). Workers die with the build, even on SIGKILL, and leave
  Ctrl-C to it (:func:`gmai_build.lifecycle.child_init`).
* ``ray``: tasks become Ray tasks, on a local Ray or on a cluster (``--ray-address`` or
  ``RAY_ADDRESS``). Needs the ``ray`` extra: ``pip install 'gmai-build[ray]'``.

Every executor returns results in task order and keeps a bounded number of tasks in flight,
so the output is byte-identical whatever the executor and worker count, and memory does not
grow with the number of tasks.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from .errors import BuildError, ConfigError
from .lifecycle import STOP_SIGNALS, child_init, deferred_signals, failpoint

T = TypeVar("T")
R = TypeVar("R")
EXECUTORS = ("local", "ray")
# Tasks in flight per worker. Results come back in order, so a slow task (a CT volume) at the
# head holds the window: enough tasks must be queued behind it to keep the other workers busy.
# Results are small (metadata; workers write the images themselves), so a deep window is cheap.
IN_FLIGHT = 8


class Executor(Protocol):
    workers: int

    def imap(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        """``fn`` over ``tasks``, results in task order."""
        ...

    def start(self) -> None: ...

    def close(self) -> None: ...


def default_workers() -> int:
    """One worker per core this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class InlineExecutor:
    """Runs tasks in this process, one after the other."""

    workers = 1

    def start(self) -> None:
        pass

    def imap(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        for task in tasks:
            yield fn(task)

    def close(self) -> None:
        pass


class ProcessExecutor:
    """A spawned process pool; at most ``IN_FLIGHT x workers`` tasks in flight."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"),
            initializer=child_init, initargs=(os.getpid(),))

    def start(self) -> None:
        """Start every worker now, with SIGINT/SIGTERM blocked (the workers inherit the mask
        and unblock it in child_init, once they ignore Ctrl-C): a stop signal arriving
        meanwhile takes effect when all are started, so close() has every process to stop."""
        launch = getattr(self._pool, "_launch_processes", None)  # CPython >= 3.11: eager start
        with deferred_signals():
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                if launch is not None:
                    launch()
                failpoint("helpers")  # (tests: a signal as the workers are being started)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def imap(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        pending: deque[Future[R]] = deque()
        try:
            for task in tasks:
                pending.append(self._pool.submit(fn, task))
                if len(pending) >= IN_FLIGHT * self.workers:
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        """Stop now: queued tasks are dropped and running ones killed (on success none is left).

        Killing is what makes Ctrl-C and SIGTERM end a build at once; the workers hold nothing
        that needs a clean exit (results go to the driver, outputs to its staging folder).
        """
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            if p.is_alive():
                p.kill()
        for p in processes:
            p.join()


def _result(future: Future[R]) -> R:
    try:
        return future.result()
    except BrokenProcessPool:
        raise BuildError("a worker process died (killed, or out of memory: try fewer --workers)") \
            from None


class RayExecutor:
    """Tasks as Ray tasks; at most ``4 x workers`` in flight (``workers``: cluster CPUs)."""

    def __init__(self, workers: int, address: str | None = None):
        self._requested = (workers, address)

    def start(self) -> None:
        workers, address = self._requested
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'gmai-build[ray]'") from None
        self._ray = ray
        self._owned = not ray.is_initialized()
        address = address or os.environ.get("RAY_ADDRESS") or None
        if self._owned:
            try:
                ray.init(address=address, num_cpus=None if address else workers,
                         include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"cannot start or reach Ray ({address or 'local'}): {exc}") \
                    from None
        self.workers = max(1, int(ray.available_resources().get("CPU", workers)))
        self._remote = ray.remote(_call)

    def imap(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        ray = self._ray
        pending: deque[Any] = deque()
        try:
            for task in tasks:
                pending.append(self._remote.remote(fn, task))
                if len(pending) >= 4 * self.workers:
                    yield self._get(pending.popleft())
            while pending:
                yield self._get(pending.popleft())
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _get(self, ref: Any) -> Any:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:  # the task's own error, as raised
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    def close(self) -> None:
        if self._owned:
            self._ray.shutdown()


def _call(fn: Callable[[T], R], task: T) -> R:
    return fn(task)


@contextmanager
def executor(name: str, workers: int, ray_address: str | None = None) -> Iterator[Executor]:
    """The executor ``name`` with its workers started; stopped on leaving, however we leave."""
    ex: Executor
    if name == "ray":
        ex = RayExecutor(workers, ray_address)
    elif name == "local":
        ex = InlineExecutor() if workers <= 1 else ProcessExecutor(workers)
    else:
        raise ConfigError(f"unknown executor {name!r}: expected one of {', '.join(EXECUTORS)}")
    try:
        ex.start()
        yield ex
    finally:
        ex.close()
