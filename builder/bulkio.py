"""Bulk byte streams written once and read once: the workers' image files and the TSVs.

A build moves its images twice: a worker appends each PNG to its task's file, and the TSV
pieces read them back and write them base64-encoded into the TSVs (:mod:`gmai_build.assembly`),
which are flushed to disk when the build is published. None of these bytes is read again by
the process that wrote them, yet buffered I/O puts every one of them through the
page cache: a fresh page of memory for each 4 KiB written, charged, dirtied and written back
later. That is not free. On the 2-core cloud VM of issue 10 a buffered write of 1.6 GiB took
4.3 s of kernel time (pages the hypervisor had to back again), where a direct write of the same
bytes took 0.64 s; it was the largest cost of a build after the PNG encoder itself.

So these streams use direct I/O (``O_DIRECT``) through page-aligned buffers where the file
system allows it, and ordinary buffered I/O where it does not (the bytes are the same either
way). Direct I/O wants the buffer address, the file offset and the length aligned to the
device's block: :class:`BulkWriter` writes whole aligned buffers and pads the last one, then
truncates the file to its true length; :class:`BulkReader` reads the aligned blocks around a
range and copies the range out.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

BLOCK = 4096  # alignment for O_DIRECT (the largest logical block size in common use)
BUFFER = 1 << 20  # bytes per direct write or read (larger ones are no faster)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
# Errors that mean "no direct I/O here" (tmpfs before Linux 6.6, some network and FUSE file
# systems): the stream carries on buffered.
_NO_DIRECT = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


def _open(path: Path, flags: int, direct: bool) -> tuple[int, bool]:
    """A descriptor for ``path`` and whether it is in direct mode."""
    if direct and _O_DIRECT:
        try:
            return os.open(path, flags | _O_DIRECT, 0o644), True
        except OSError as exc:
            if exc.errno not in _NO_DIRECT:
                raise
    return os.open(path, flags, 0o644), False


def _buffered(fd: int) -> None:
    """Switch a descriptor opened with O_DIRECT to buffered I/O (a file system that accepted
    the flag at open but refuses direct transfers)."""
    import fcntl

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)


_SPARE: list[mmap.mmap] = []  # buffers given back, for the next writer or reader to take
_SPARE_LOCK = threading.Lock()
_SPARE_MAX = 16


def aligned_buffer(size: int = BUFFER) -> memoryview:
    """A writable, page-aligned buffer (an anonymous map), a spare one if there is one.

    Streams come and go (one per worker task, per TSV piece, per reading thread); mapping
    fresh buffers each time made each of their pages a page fault again.
    """
    with _SPARE_LOCK:
        for n, spare in enumerate(_SPARE):
            if len(spare) == size:
                return memoryview(_SPARE.pop(n))
    return memoryview(mmap.mmap(-1, size))


def give_back(buffer: memoryview) -> None:
    """Return a buffer from :func:`aligned_buffer` (no view of it may be used afterwards)."""
    spare = buffer.obj
    buffer.release()
    if isinstance(spare, mmap.mmap):
        with _SPARE_LOCK:
            if len(_SPARE) < _SPARE_MAX:
                _SPARE.append(spare)


class BulkWriter:
    """Appends bytes to a new file through aligned buffers (see the module docstring).

    Two buffers take turns: while one is written out by a helper thread (the system call
    releases the GIL), the caller fills the other, so encoding or copying goes on during the
    disk write. :meth:`tell` is the logical size written so far. Use as a context manager, or
    call :meth:`close`: only then is the file complete and of its true size, and only then is
    an error of a write in the background raised.

    ``at``: write a region of an existing file from this block-aligned offset instead (several
    processes may write regions of one file at once); the file is then not truncated, unless
    ``ends_file`` says this region is its end.
    """

    def __init__(self, path: Path, direct: bool = True, buffer: int = BUFFER,
                 at: int | None = None, ends_file: bool = True):
        self.path = Path(path)
        if at is not None and at % BLOCK:
            raise ValueError(f"a region starts on a block boundary, not at {at}")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if at is None else 0)
        self._fd, self._direct = _open(self.path, flags, direct)
        self._start = at or 0
        self._ends_file = ends_file
        self._size = buffer
        self._bufs = [aligned_buffer(buffer)]
        self._pending: list[Future[None] | None] = [None, None]
        self._thread: ThreadPoolExecutor | None = None
        self._cur = 0  # the buffer being filled
        self._fill = 0  # bytes in it
        self._written = 0  # bytes handed to the file (written, or being written)

    @property
    def direct(self) -> bool:
        return self._direct

    def tell(self) -> int:
        """Bytes written so far (from the region's start)."""
        return self._written + self._fill

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            n = min(len(view), self._size - self._fill)
            self._bufs[self._cur][self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self._size:
                self._hand_over()

    def _hand_over(self) -> None:
        """Write the full buffer in the background; go on filling the other one."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="bulk-write")
            self._bufs.append(aligned_buffer(self._size))
        full = self._cur
        self._pending[full] = self._thread.submit(self._write_at, self._bufs[full], self._fill,
                                                  self._start + self._written)
        self._written += self._fill
        self._fill = 0
        self._cur = 1 - full
        self._wait(self._cur)  # that buffer's own write must be done before it is refilled

    def _wait(self, k: int) -> None:
        pending, self._pending[k] = self._pending[k], None
        if pending is not None:
            pending.result()

    def _write_at(self, buf: memoryview, n: int, at: int) -> None:
        """``buf[:n]`` at file offset ``at`` (full buffers are aligned; the last one is padded
        to a block when direct, and cut back by :meth:`close`)."""
        if self._direct and n % BLOCK:
            padded = n + BLOCK - n % BLOCK
            buf[n:padded] = bytes(padded - n)
            n = padded
        done = 0
        while done < n:
            try:
                done += os.pwrite(self._fd, buf[done:n], at + done)
            except OSError as exc:
                if not self._direct or exc.errno not in _NO_DIRECT:
                    raise
                _buffered(self._fd)  # (the padding, if any, is cut back all the same)
                self._direct = False

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self._wait(0)
            self._wait(1)
            if not self._ends_file and self.tell() % BLOCK:
                # (its padded last block would overwrite the start of the next region)
                raise ValueError(f"a region that does not end the file ends on a block "
                                 f"boundary, not after {self.tell()} bytes")
            if self._fill:
                self._write_at(self._bufs[self._cur], self._fill, self._start + self._written)
                self._written += self._fill
                self._fill = 0
            if self._ends_file:  # (cuts the padding of the last block)
                os.ftruncate(self._fd, self._start + self._written)
        finally:
            if self._thread is not None:
                self._thread.shutdown(wait=True)
            os.close(self._fd)
            self._fd = -1
            for buf in self._bufs:
                give_back(buf)
            self._bufs = []

    def __enter__(self) -> BulkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BulkReader:
    """Reads byte ranges of a file written by a :class:`BulkWriter` (direct I/O if possible).

    ``scratch``: a page-aligned buffer for the aligned blocks (from :func:`aligned_buffer`),
    which readers used one after the other may share.
    """

    def __init__(self, path: Path, direct: bool = True, scratch: memoryview | None = None):
        self.path = Path(path)
        self._fd, self._direct = _open(self.path, os.O_RDONLY, direct)
        self._own_scratch = scratch is None and self._direct
        self._scratch = (scratch if scratch is not None else aligned_buffer()) if self._direct \
            else None

    def read_into(self, dst: memoryview, offset: int) -> None:
        """Fill ``dst`` with the file's bytes from ``offset``; an error if the file ends first."""
        want = len(dst)
        if self._scratch is None:
            self._read_buffered(dst, offset)
            return
        got = 0
        while got < want:
            start = (offset + got) & ~(BLOCK - 1)  # the aligned blocks around what is wanted
            skip = offset + got - start
            span = min(len(self._scratch), (skip + want - got + BLOCK - 1) & ~(BLOCK - 1))
            try:
                n = os.preadv(self._fd, [self._scratch[:span]], start)
            except OSError as exc:
                if exc.errno not in _NO_DIRECT:
                    raise
                _buffered(self._fd)
                self._direct = False
                self._read_buffered(dst[got:], offset + got)
                return
            usable = min(n - skip, want - got)
            if usable <= 0:
                raise OSError(errno.EIO, f"{self.path}: ends before the {want} bytes at offset "
                                         f"{offset} ({want - got} short)")
            dst[got:got + usable] = self._scratch[skip:skip + usable]
            got += usable

    def _read_buffered(self, dst: memoryview, offset: int) -> None:
        got = 0
        while got < len(dst):
            n = os.preadv(self._fd, [dst[got:]], offset + got)
            if n <= 0:
                raise OSError(errno.EIO, f"{self.path}: ends before the {len(dst)} bytes at "
                                         f"offset {offset} ({len(dst) - got} short)")
            got += n

    def close(self) -> None:
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        if self._own_scratch and self._scratch is not None:
            give_back(self._scratch)
        self._scratch = None

    def __enter__(self) -> BulkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReaderCache:
    """Open :class:`BulkReader` s by path; the few most recent stay open (rows visit the
    workers' task files roughly in order). They share one scratch buffer: one thread only."""

    KEEP = 8

    def __init__(self) -> None:
        self._open: dict[Path, BulkReader] = {}
        self._scratch: memoryview | None = aligned_buffer()

    def get(self, path: Path) -> BulkReader:
        reader = self._open.pop(path, None)
        if reader is None:
            if self._scratch is None:
                raise ValueError("a closed ReaderCache")
            reader = BulkReader(path, scratch=self._scratch)
            if len(self._open) >= self.KEEP:
                self._open.pop(next(iter(self._open))).close()
        self._open[path] = reader  # most recent last
        return reader

    def close(self) -> None:
        for reader in self._open.values():
            reader.close()
        self._open.clear()
        if self._scratch is not None:
            give_back(self._scratch)
            self._scratch = None


class ReadAhead:
    """Reads byte ranges on a few threads, ahead of their use.

    A direct read waits for the device; with one request at a time a TSV writer read the
    1.4 GB of a scale-1 TEST file in 1.1 s, with four in flight in 0.8 s, and the reads now
    overlap the copies and writes of the rows before them.
    """

    def __init__(self, threads: int = 2):
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="read-ahead")
        self._local = threading.local()
        self._caches: list[ReaderCache] = []
        self._lock = threading.Lock()

    def read(self, path: Path, offset: int, size: int) -> Future[bytearray]:
        return self._pool.submit(self._read, path, offset, size)

    def _read(self, path: Path, offset: int, size: int) -> bytearray:
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = ReaderCache()
            with self._lock:
                self._caches.append(cache)
        data = bytearray(size)
        cache.get(path).read_into(memoryview(data), offset)
        return data

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for cache in self._caches:
            cache.close()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
