"""TSV assembly in pieces: whatever the cuts and whatever order the pieces are written in (by
threads at once, with direct or buffered I/O), the TSV is the bytes the csv module writes, and
every image is hashed exactly once, by the piece its row starts in."""

from __future__ import annotations

import base64
import hashlib
import io
import random
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from gmai_build import bulkio
from gmai_build.assembly import ImageSlice, Piece, TsvPlan, base64_size, write_piece
from gmai_build.bulkio import BLOCK, BulkWriter
from gmai_build.executors import ThreadExecutor
from gmai_build.writer import TSV_COLUMNS, RowText, tsv_writer

TRICKY = ["", "plain", 'say "yes"', "tab\there", "new\nline", "é ü 中文", "=1+1"]


def _rows(tmp_path: Path, n: int, seed: int = 0) -> tuple[list[dict], list[ImageSlice]]:
    """Rows with awkward text, and their PNG stand-ins (random bytes of 0 to ~3 blocks) spread
    over three task files, out of order and between junk."""
    rng = np.random.default_rng(seed)
    rows, images = [], []
    files = [open(tmp_path / f"task{k}.png", "wb") for k in range(3)]
    try:
        for i in range(n):
            row = {c: TRICKY[(i + k) % len(TRICKY)] for k, c in enumerate(TSV_COLUMNS)}
            row["index"] = i
            png = rng.integers(0, 256, int(rng.integers(0, 3 * BLOCK)), dtype=np.uint8).tobytes()
            f = files[(i * 7) % 3]
            f.write(b"junk" * int(rng.integers(0, 3)))
            images.append(ImageSlice(Path(f.name), f.tell(), len(png)))
            f.write(png)
            row["image"] = base64.b64encode(png).decode("ascii")
            rows.append(row)
    finally:
        for f in files:
            f.close()
    return rows, images


def _csv_module_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO(newline="")
    w = tsv_writer(buf)
    w.writerow(TSV_COLUMNS)
    for row in rows:
        w.writerow([row[c] for c in TSV_COLUMNS])
    return buf.getvalue().encode("utf-8")


def _plan(path: Path, rows: list[dict], images: list[ImageSlice], piece: int,
          piece_rows: int) -> list[Piece]:
    text = RowText(TSV_COLUMNS)
    plan = TsvPlan(path, text.header(), piece=piece, piece_rows=piece_rows)
    pieces = [p for row, image in zip(rows, images) for p in plan.add(text.before_image(row), image)]
    return [*pieces, plan.finish()]


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize(("piece", "piece_rows"), [(BLOCK, 1000), (3 * BLOCK, 2), (1 << 30, 5),
                                                   (1 << 30, 1000)])
def test_pieces_in_any_order_make_the_csv_module_bytes(tmp_path: Path, monkeypatch, direct: bool,
                                                       piece: int, piece_rows: int) -> None:
    if not direct:
        monkeypatch.setattr(bulkio, "_O_DIRECT", 0)
    rows, images = _rows(tmp_path, 40)
    path = tmp_path / "out.tsv"
    pieces = _plan(path, rows, images, piece, piece_rows)
    want = _csv_module_bytes(rows)
    # the cuts: block-aligned, back to back, covering the file; a row cut is in both pieces
    assert [p.start for p in pieces[1:]] == [p.end for p in pieces[:-1]]
    assert pieces[0].start == 0 and pieces[-1].end == len(want) and pieces[-1].last
    assert all(p.start % BLOCK == 0 and not p.last for p in pieces[:-1])
    assert all(p.end % BLOCK == 0 for p in pieces[:-1])
    assert all(len(p.rows) <= piece_rows + 1 for p in pieces)  # (+1: a row cut at its start)
    random.Random(piece + piece_rows).shuffle(pieces)
    written = [write_piece(p) for p in pieces]
    assert sum(w.size for w in written) == len(want)
    assert path.read_bytes() == want
    # each piece hashes the images of the rows that start in it, in row order: together, every
    # image once (rows cut by a boundary are read by two pieces but hashed by one)
    hashed = {p.start: w.sha256 for p, w in zip(pieces, written)}
    in_file_order = [sha for start in sorted(hashed) for sha in hashed[start]]
    assert in_file_order == [hashlib.sha256(base64.b64decode(r["image"])).hexdigest()
                             for r in rows]


def test_pieces_written_at_once_by_threads(tmp_path: Path) -> None:
    rows, images = _rows(tmp_path, 60, seed=1)
    path = tmp_path / "out.tsv"
    pieces = _plan(path, rows, images, BLOCK, 1000)
    assert len(pieces) > 8
    with closing(ThreadExecutor(4)) as threads:
        sizes = [w.size for w in threads.imap(write_piece, pieces)]
    assert sizes == [p.end - p.start for p in pieces]  # results in task order
    assert path.read_bytes() == _csv_module_bytes(rows)


def test_base64_size_is_the_encoded_length() -> None:
    for n in [0, 1, 2, 3, 4, 5, 100, 4097]:
        assert base64_size(n) == len(base64.b64encode(b"x" * n))


def test_a_task_file_shorter_than_its_image_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "t.png").write_bytes(b"\x89PNG")
    text = RowText(TSV_COLUMNS)
    plan = TsvPlan(tmp_path / "out.tsv", text.header())
    row = {c: "x" for c in TSV_COLUMNS}
    assert plan.add(text.before_image(row), ImageSlice(tmp_path / "t.png", 0, 100)) == []
    with pytest.raises(OSError, match=r"t\.png: ends before the image at offset 0 \(100 bytes\)"):
        write_piece(plan.finish())


def test_a_failing_task_fails_the_thread_executor(tmp_path: Path) -> None:
    def task(n: int) -> int:
        if n == 3:
            raise ValueError("task 3")
        return n * n

    with closing(ThreadExecutor(2)) as threads:
        got = []
        with pytest.raises(ValueError, match="task 3"):
            for r in threads.imap(task, range(10)):
                got.append(r)
    assert got == [0, 1, 4]


def test_a_region_starts_and_ends_on_block_boundaries(tmp_path: Path) -> None:
    """Regions of one file written apart: a region that does not end the file must end on a
    block boundary (its padded last block would overwrite its neighbour's start)."""
    path = tmp_path / "f"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="block boundary, not at 100"):
        BulkWriter(path, at=100)
    with pytest.raises(ValueError, match="ends on a block boundary, not after 10 bytes"):
        with BulkWriter(path, at=BLOCK, ends_file=False) as out:
            out.write(b"x" * 10)
    with BulkWriter(path, at=BLOCK, ends_file=True) as out:  # the end: any length
        out.write(b"b" * 10)
    with BulkWriter(path, at=0, ends_file=False) as out:
        out.write(b"a" * BLOCK)
    assert path.read_bytes() == b"a" * BLOCK + b"b" * 10
