"""How a build process stops: signals end it cleanly, and its helper processes die with it.

* SIGINT (Ctrl-C) and SIGTERM raise :class:`Interrupted` in the main process, so every
  ``finally`` runs (the staging folder is removed, worker pools are terminated) and the CLI
  prints one line instead of a traceback. Further signals during that cleanup are ignored, so
  the cleanup itself is never cut short.
* Worker processes run :func:`child_init`: they ignore SIGINT (the parent decides what a
  Ctrl-C means; otherwise every worker prints its own traceback) and, on Linux, ask the kernel
  to SIGKILL them when the parent dies, even by SIGKILL, so no orphan is left behind.
* :func:`deferred_signals` holds SIGINT/SIGTERM back while the new build is being published:
  the few renames of a publish happen all or not at all.
* :func:`failpoint` lets the crash-safety tests kill or interrupt a real build at a named point
  (``GMAI_BUILD_FAILPOINT``); without that variable it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
FAILPOINT_ENV = "GMAI_BUILD_FAILPOINT"


class Interrupted(KeyboardInterrupt):
    """The build was stopped by a signal (a KeyboardInterrupt, so generic handlers see it)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # as a shell reports a command killed by that signal


def _raise_interrupted(signum: int, frame: object) -> None:
    for s in STOP_SIGNALS:  # one stop is enough: let the cleanup finish undisturbed
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM raise :class:`Interrupted` (main thread of the main process only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in STOP_SIGNALS:
        signal.signal(s, _raise_interrupted)


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def child_init(parent_pid: int) -> None:
    """Initializer of worker processes (pass ``os.getpid()`` of the parent).

    Ctrl-C is the parent's business (it reaches the whole process group; otherwise every
    worker would print its own traceback), SIGTERM kills. Workers are started with both
    signals blocked (:meth:`gmai_build.executors.ProcessExecutor.start`): one sent before this
    point waited, and takes effect now under these dispositions.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back inside the block; one that arrived takes effect at its end.

    (Swapping the Python-level handlers, not the thread's signal mask: the kernel gives a
    process-directed signal to any thread that does not block it.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if pending:
            handler = old[signal.Signals(pending[0])]
            if callable(handler):
                handler(pending[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), pending[0])


def failpoint(name: str) -> None:
    """Signal this process at a named point, for the crash-safety tests; else do nothing.

    ``GMAI_BUILD_FAILPOINT=<name>`` SIGKILLs the process there; ``<name>:SIGTERM`` sends it
    SIGTERM (as ``kill`` does); ``<name>:SIGINT`` sends SIGINT to its whole process group (as
    Ctrl-C in a terminal does, workers included).
    """
    point, _, how = os.environ.get(FAILPOINT_ENV, "").partition(":")
    if point != name:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if how == "SIGINT":
        os.killpg(os.getpgid(0), signal.SIGINT)
    else:
        os.kill(os.getpid(), signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
