"""TSV assembly in pieces: the rows of each TSV cut at block-aligned offsets, written by workers.

The driver streams the records in index order and knows each row's bytes except its image: the
quoted text before the image field, and the length of its image in base64 (``4 * ceil(n / 3)``
of an ``n``-byte PNG). So it knows where every row starts in its TSV before any image is read,
and cuts each TSV into pieces of about :data:`PIECE` bytes at multiples of the disk block
(:data:`gmai_build.bulkio.BLOCK`). A piece (:class:`Piece`) lists the rows it overlaps: their
text, where their PNG lies (a worker's task file) and where they start. Any worker writes it at
its offset with direct I/O (:func:`write_piece`): reads the PNGs, base64-encodes them and keeps
the bytes inside the piece (a row cut by a boundary is made by both neighbours, each writing
its part). So the TSVs are written by every worker at once (on a Ray cluster, by every node),
the driver holds only the pieces in flight, and the file is the same bytes whatever order the
pieces are written in.

The piece that holds a row's start also returns the sha256 of its PNG, for the manifest: each
image is hashed once, as it passes through memory anyway, and only if it was selected. (sha256
releases the GIL, so with threads instead of worker processes it runs beside the encoding.)
"""

from __future__ import annotations

import binascii
import errno
import hashlib
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from .bulkio import BLOCK, BulkWriter, ReadAhead
from .resources import tune_worker_process

PIECE = 32 << 20  # bytes of TSV per piece (a task)
READ_AHEAD = 16  # rows whose PNG is being read ahead of the row being written
PIECE_ROWS = 1024  # rows per piece at most (small images: what the driver holds stays small)
LINE_END = b"\n"


@dataclass(frozen=True)
class ImageSlice:
    """Where a row's PNG lies: ``size`` bytes at ``offset`` of ``path`` (a worker's task file)."""

    path: Path
    offset: int
    size: int


def short_file(exc: OSError, image: ImageSlice) -> OSError:
    """A task file that ends before an image: the error names it (others pass through)."""
    if exc.errno != errno.EIO:
        return exc
    return OSError(f"{image.path}: ends before the image at offset {image.offset} "
                   f"({image.size} bytes)")


def base64_size(n: int) -> int:
    """Length of the base64 text of ``n`` bytes (padded, no line breaks)."""
    return 4 * ((n + 2) // 3)


@dataclass(frozen=True)
class Row:
    """A TSV row as the driver knows it: its text (the quoted fields before the image field,
    tab included; or the whole line for a row without image) and its image."""

    text: bytes
    image: ImageSlice | None
    start: int  # the row's first byte in the file

    @property
    def size(self) -> int:
        if self.image is None:
            return len(self.text)
        return len(self.text) + base64_size(self.image.size) + len(LINE_END)

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Written:
    """What :func:`write_piece` did: the bytes it wrote, and the sha256 (hex) of the PNG of
    each row that starts in the piece and has one, in row order."""

    size: int
    sha256: tuple[str, ...]


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of one TSV, with the rows that overlap them. ``start`` is on a
    block boundary; so is ``end``, unless the piece ends the file (``last``)."""

    path: Path
    start: int
    end: int
    rows: tuple[Row, ...]
    last: bool

    def owns(self, row: Row) -> bool:
        """The row starts in this piece (its image's checksum comes from here)."""
        return self.start <= row.start < self.end


def write_piece(piece: Piece) -> Written:
    """Write one piece into its TSV (a worker's task). The PNGs of the next :data:`READ_AHEAD`
    rows are read on threads meanwhile (direct reads wait on the device: several in flight keep
    it busy)."""
    tune_worker_process()
    sha256: list[str] = []
    with ReadAhead() as reads, \
            BulkWriter(piece.path, at=piece.start, ends_file=piece.last) as out:
        ahead: deque[tuple[Row, Future[bytearray] | None]] = deque()
        rows = iter(piece.rows)
        while True:
            for row in islice(rows, READ_AHEAD - len(ahead)):
                image = row.image
                ahead.append((row, image and reads.read(image.path, image.offset, image.size)))
            if not ahead:
                break
            row, png = ahead.popleft()
            parts = [row.text]
            if row.image is not None and png is not None:
                try:
                    data = png.result()
                except OSError as exc:
                    raise short_file(exc, row.image) from None
                if piece.owns(row):
                    sha256.append(hashlib.sha256(data).hexdigest())
                parts += [binascii.b2a_base64(data, newline=False), LINE_END]
            at = row.start  # the parts' bytes inside the piece, without joining them (~1 MB)
            for part in parts:
                lo, hi = max(piece.start - at, 0), min(piece.end - at, len(part))
                if lo < hi:
                    out.write(memoryview(part)[lo:hi])
                at += len(part)
    return Written(piece.end - piece.start, tuple(sha256))


class TsvPlan:
    """One TSV's rows as they stream, cut into :class:`Piece` s: :meth:`add` returns the pieces
    a row completes, :meth:`finish` the last one. The file is created empty here; the pieces
    fill it in any order (the last one sets its length)."""

    def __init__(self, path: Path, header: bytes, piece: int = PIECE,
                 piece_rows: int = PIECE_ROWS):
        self.path = path
        self.rows = 0
        self._piece = max(BLOCK, piece - piece % BLOCK)
        self._piece_rows = piece_rows
        path.write_bytes(b"")
        self._start = 0  # of the piece being gathered
        self._rows: list[Row] = [Row(header, None, 0)]
        self._size = len(header)  # of the file so far

    @property
    def size(self) -> int:
        """Bytes of the file so far: where the next row starts."""
        return self._size

    def add(self, text: bytes, image: ImageSlice | None) -> list[Piece]:
        row = Row(text, image, self._size)
        self._rows.append(row)
        self._size = row.end
        self.rows += 1
        done = []
        while True:
            if self._size - self._start >= self._piece:
                cut = self._start + self._piece
            elif len(self._rows) >= self._piece_rows and \
                    self._size - self._size % BLOCK > self._start:
                cut = self._size - self._size % BLOCK  # (the last block boundary so far)
            else:
                return done
            done.append(Piece(self.path, self._start, cut,
                              tuple(r for r in self._rows if r.start < cut), last=False))
            self._rows = [r for r in self._rows if r.end > cut]
            self._start = cut

    def finish(self) -> Piece:
        """The last piece (to the end of the file; possibly empty)."""
        return Piece(self.path, self._start, self._size, tuple(self._rows), last=True)
