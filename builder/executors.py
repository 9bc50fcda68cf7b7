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

import importlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from .errors import BuildError, ConfigError
from .lifecycle import STOP_SIGNALS, child_init, deferred_signals, failpoint
from .resources import single_threaded_libraries

T = TypeVar("T")
R = TypeVar("R")
EXECUTORS = ("local", "ray")
# Tasks in flight per worker. Results come back in order, so a slow task (a CT volume) at the
# head holds the window: enough tasks must be queued behind it to keep the other workers busy.
# Results are small (metadata; workers write the images themselves), so a deep window is cheap.
IN_FLIGHT = 8
# What a build's local worker imports as it starts: the stage, and what every build's images go
# through (the perceptual hash pulls in scipy's FFT, 0.14 s). Half a second of imports, done
# while the driver reads the config and discovers the sources.
WORKER_STAGE = ("gmai_build.work", "PIL.Image", "imagehash", "scipy.fftpack")


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


class ThreadExecutor:
    """Tasks on a few threads of this process, results in order: for tasks that mostly wait on
    the disk (writing TSV pieces) when there are no worker processes to run them."""

    def __init__(self, workers: int = 2):
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="task")

    def start(self) -> None:
        pass

    def imap(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        pending: deque[Future[R]] = deque()
        try:
            for task in tasks:
                pending.append(self._pool.submit(fn, task))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ProcessExecutor:
    """A spawned process pool; at most ``IN_FLIGHT x workers`` tasks in flight.

    ``preload``: modules each worker imports as it starts (the stage its tasks run), so that
    starting the pool early lets the imports overlap the driver's own preparations.
    """

    def __init__(self, workers: int, preload: tuple[str, ...] = ()):
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"),
            initializer=_worker_init, initargs=(os.getpid(), preload))

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


def _worker_init(parent_pid: int, preload: tuple[str, ...]) -> None:
    child_init(parent_pid)
    single_threaded_libraries()  # (numpy is not imported yet: the preload below imports it)
    for module in preload:
        importlib.import_module(module)


def _result(future: Future[R]) -> R:
    try:
        return future.result()
    except BrokenProcessPool:
        raise BuildError("a worker process died (killed, or out of memory: try fewer --workers)") \
            from None


class RayExecutor:
    """Tasks as Ray tasks; at most ``IN_FLIGHT x workers`` in flight (``workers``: the Ray
    cluster's CPUs). Workers write their images into the output folder, so on a cluster it must
    be on storage every node mounts at the same path, as the sources are.

    Without an address (``--ray-address``, else ``RAY_ADDRESS``) Ray starts a local instance
    with ``workers`` CPUs and stops it on :meth:`close`; a Ray this process already started
    (a notebook, the tests) is used as it is and left running.
    """

    def __init__(self, workers: int, address: str | None = None):
        self._requested = (workers, address)
        self._owned = False  # this executor started Ray (and stops it)
        self._ray_logger = logging.getLogger("ray")
        self._ray_log_level = self._ray_logger.level

    def start(self) -> None:
        workers, address = self._requested
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'gmai-build[ray]'") from None
        self._ray = ray
        address = address or os.environ.get("RAY_ADDRESS") or None
        if not ray.is_initialized():
            if address:
                check_reachable(address)
            # Ray logs notices (token authentication, ...) to stderr through its own handler;
            # they are not the user's business during a build: only errors get through.
            self._ray_log_level = self._ray_logger.level
            self._ray_logger.setLevel(logging.ERROR)
            self._owned = True
            try:
                with _keeping_stop_handlers():
                    ray.init(address=address, num_cpus=None if address else workers,
                             include_dashboard=False, log_to_driver=False,
                             configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"cannot start or reach Ray ({address or 'local'}): "
                                  f"{_first_line(exc)}") from None
        self.workers = max(1, int(ray.cluster_resources().get("CPU", workers)))
        self._remote = ray.remote(_call)

    def imap(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        ray = self._ray
        pending: deque[Any] = deque()
        try:
            for task in tasks:
                pending.append(self._remote.remote(fn, task))
                if len(pending) >= IN_FLIGHT * self.workers:
                    yield self._get(pending.popleft())
            while pending:
                yield self._get(pending.popleft())
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _get(self, ref: Any) -> Any:
        """The task's result; its own error (a BuildError naming source and file) as it was
        raised in the worker, not wrapped in Ray's RayTaskError."""
        errors = self._ray.exceptions
        try:
            return self._ray.get(ref)
        except errors.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except errors.RayError as exc:  # the worker or its node died (after Ray's retries)
            raise BuildError(f"a Ray task failed, a worker or its node died (killed, or out of "
                             f"memory?): {type(exc).__name__}: {_first_line(exc)}") from None

    def close(self) -> None:
        if self._owned:
            self._owned = False
            self._ray.shutdown()
            self._ray_logger.setLevel(self._ray_log_level)


@contextmanager
def _keeping_stop_handlers() -> Iterator[None]:
    """Ray's core installs a C-level handler for SIGTERM that prints a stack dump and exits;
    re-registering the Python handlers afterwards keeps SIGTERM ending the build like Ctrl-C,
    with one line and nothing published (lifecycle.py)."""
    handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for s, handler in handlers.items():
                if handler is not None:
                    signal.signal(s, handler)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, in one line, when a Ray address names a host:port that does not answer.

    Ray itself retries an unreachable cluster for many minutes, printing a warning every few
    seconds. ``auto`` and ``local`` are Ray's own to resolve (``auto`` with no cluster fails fast).
    """
    if address in ("auto", "local"):
        return
    host_port = address.removeprefix("ray://")
    host, sep, port = host_port.rpartition(":")
    if not sep:  # Ray Client's default port; a bare GCS address always has a port
        host, port = host_port, "10001"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "bad port number"
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({reason}): start it with "
            "`ray start --head`, or fix --ray-address / RAY_ADDRESS") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _call(fn: Callable[[T], R], task: T) -> R:
    return fn(task)


@contextmanager
def executor(name: str, workers: int, ray_address: str | None = None,
             preload: tuple[str, ...] = ()) -> Iterator[Executor]:
    """The executor ``name`` with its workers started; stopped on leaving, however we leave.
    Local workers import the ``preload`` modules as they start."""
    ex: Executor
    if name == "ray":
        ex = RayExecutor(workers, ray_address)
    elif name == "local":
        ex = InlineExecutor() if workers <= 1 else ProcessExecutor(workers, preload)
    else:
        raise ConfigError(f"unknown executor {name!r}: expected one of {', '.join(EXECUTORS)}")
    try:
        ex.start()
        yield ex
    finally:
        ex.close()
