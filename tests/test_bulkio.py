"""Direct-I/O byte streams (bulkio): the file holds exactly the bytes written, in direct mode,
in buffered mode and when a file system refuses direct transfers half-way."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from gmai_build import bulkio
from gmai_build.bulkio import BLOCK, BulkReader, BulkWriter


def _pieces(seed: int, n: int, largest: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, int(rng.integers(0, largest)), dtype=np.uint8).tobytes()
            for _ in range(n)]


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("buffer", [BLOCK, 3 * BLOCK, bulkio.BUFFER])
def test_the_file_holds_exactly_what_was_written(tmp_path: Path, direct: bool,
                                                 buffer: int) -> None:
    """Pieces of every size, across buffer boundaries (the last block padded, then cut back)."""
    pieces = _pieces(0, 60, 3 * buffer)
    path = tmp_path / "out.bin"
    with BulkWriter(path, direct=direct, buffer=buffer) as out:
        offsets = []
        for p in pieces:
            offsets.append(out.tell())
            out.write(p)
        assert out.tell() == sum(map(len, pieces))
    data = path.read_bytes()
    assert data == b"".join(pieces)
    with BulkReader(path, direct=direct) as reader:  # every piece read back at its offset
        for p, at in zip(pieces, offsets):
            got = bytearray(len(p))
            reader.read_into(memoryview(got), at)
            assert bytes(got) == p


def test_an_empty_file_and_an_exact_block(tmp_path: Path) -> None:
    with BulkWriter(tmp_path / "empty"):
        pass
    assert (tmp_path / "empty").read_bytes() == b""
    with BulkWriter(tmp_path / "block") as out:
        out.write(b"x" * BLOCK)
    assert (tmp_path / "block").read_bytes() == b"x" * BLOCK


def test_reading_past_the_end_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"QUJD")
    with BulkReader(tmp_path / "short") as reader, pytest.raises(OSError, match="short"):
        reader.read_into(memoryview(bytearray(100)), 0)


def test_a_file_system_that_refuses_direct_writes_gets_buffered_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepted at open, refused at the first transfer (as some FUSE and network file systems
    do): the stream carries on buffered and the file is the same."""
    real_pwrite = os.pwrite
    refused = []

    def pwrite(fd: int, data, offset: int) -> int:
        if not refused:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    pieces = _pieces(2, 20, 5 * BLOCK)
    with BulkWriter(tmp_path / "out", buffer=2 * BLOCK) as out:
        for p in pieces:
            out.write(p)
    assert refused and not out.direct
    assert (tmp_path / "out").read_bytes() == b"".join(pieces)


def test_open_without_direct_io_support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused at open (tmpfs before Linux 6.6): buffered from the start."""
    real_open = os.open

    def no_direct(path, flags, mode=0o777):
        if flags & bulkio._O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_direct)
    with BulkWriter(tmp_path / "out") as out:
        out.write(b"abc" * 5000)
    assert not out.direct
    with BulkReader(tmp_path / "out") as reader:
        got = bytearray(5)
        reader.read_into(memoryview(got), 3 * 4998)
    assert bytes(got) == b"abcab" and (tmp_path / "out").read_bytes() == b"abc" * 5000


def test_an_error_of_a_background_write_is_raised(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while a buffer is written in the background reaches the caller."""
    def full(fd: int, data, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError, match="No space left"), \
            BulkWriter(tmp_path / "out", buffer=BLOCK) as out:
        out.write(b"x" * (5 * BLOCK))
