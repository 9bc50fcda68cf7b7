"""How a process of the build uses its cores and memory: one thread per worker for OpenCV and
BLAS, and glibc's allocator keeping freed image buffers instead of handing them back to the kernel.

Every process that runs tasks (workers; the driver itself with one worker) calls
:func:`tune_worker_process` first; the driver calls :func:`keep_freed_memory` for its own
stages and :func:`release_freed_memory` after the reading stage.
"""

from __future__ import annotations

import ctypes
import os
import sys

# Thread pools of the numerical libraries, read as they load: one per worker process.
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def single_threaded_libraries() -> None:
    """Before a worker process imports numpy or scipy: their BLAS libraries start no helper
    threads. The build runs one worker per core, and each of numpy's and scipy's OpenBLAS
    otherwise starts one thread per core, which spin as they start (0.1 s of CPU per library
    and process, taken from the other workers as they start) and for nothing: the stages'
    arrays are too small for BLAS to split them. (Ray sets the same for its workers.)"""
    os.environ.update(SINGLE_THREADED)


def tune_worker_process() -> None:
    """Settle how a process that runs tasks uses its cores and memory (idempotent, cheap).

    * OpenCV on the worker's own thread: the build runs one worker per core, and OpenCV's pool
      of helper threads, idle between its short parallel sections, spins on ``sched_yield``
      (1.8 s of CPU in a 36 s one-worker build), taking the cores the other workers need. Its
      functions give the same results on one thread.
    * glibc keeps freed memory for reuse: every image makes buffers of 0.2-2 MB (decoded
      pixels, overlays, PNG bytes), above its default mapping threshold or trimmed
      off the heap top as soon as they are freed, so each one was fresh pages from the kernel:
      430,000 page faults in a one-worker build of 2,877 questions, 207,000 with these settings
      (most of the rest: volumes and label volumes, which stay mapped on their own so that they
      leave no holes in the heap: a peak that grew with the number of volumes read).
    """
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    keep_freed_memory()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc has both; musl neither)
    except (OSError, AttributeError):
        return None
    return libc


def release_freed_memory() -> None:
    """Give the memory kept by :func:`keep_freed_memory` back to the system: when the reading
    stage ran in this process (one worker), before the driver's own stages."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def keep_freed_memory() -> None:
    """glibc's malloc: blocks below 16 MiB from the heap, which is trimmed only past 64 MiB
    free (no-op where the C library has no ``mallopt``)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 16 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
