"""Output stage: TSVs, answer key and manifest from one stream of records, into the staging folder.

Records arrive one at a time in index order (:func:`gmai_build.records.records`); each is
written to the manifest (and the answer key if it is in TEST) and handed to the thread writing
its split's TSV, whose image is copied from the worker's task file just then (the copies are
mostly waits on the disk: :mod:`gmai_build.bulkio`). ``observe`` sees every record too, for
the counts of the summary and the coverage report. Whatever the number of questions, only a
few rows are in memory at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .lifecycle import failpoint
from .manifest import MANIFEST, ManifestRecord
from .records import tsv_row
from .split import VAL
from .store import StoredQuestion
from .writer import (
    ANSWER_KEY_COLUMNS,
    TEST_COLUMNS,
    TSV_COLUMNS,
    ImageSlice,
    TsvWriter,
    answer_key_row,
    write_tsv,
)

ROWS_AHEAD = 32  # rows queued for each TSV thread
Row = dict[str, Any]


class RowPipe:
    """Rows handed to a thread that writes one TSV; bounded: the producer waits when it is full
    (and gets the writer's error instead of waiting forever if the writer failed)."""

    def __init__(self, pool: ThreadPoolExecutor, path: Path, columns: list[str]):
        self._rows: queue.Queue[Row | None] = queue.Queue(ROWS_AHEAD)  # None: the end
        self._stopped = threading.Event()
        self._done: Future[int] = pool.submit(write_tsv, path, columns, self._stream())

    def _stream(self) -> Iterator[Row]:
        while not self._stopped.is_set():
            row = self._rows.get()
            if row is None:
                return
            yield row
        raise RuntimeError("stopped")  # (abort: the file is unfinished and thrown away)

    def put(self, row: Row | None) -> None:
        while True:
            try:
                self._rows.put(row, timeout=0.2)
                return
            except queue.Full:
                if self._done.done():
                    self._done.result()  # the writer's own error
                    raise RuntimeError("a TSV writer stopped before its rows") from None

    def close(self) -> int:
        """Wait until the TSV is complete; its number of rows."""
        self.put(None)
        return self._done.result()

    def abort(self) -> None:
        """Stop the writer without the rows still queued (the build is failing anyway)."""
        self._stopped.set()
        try:
            self._rows.put_nowait(None)
        except queue.Full:
            pass


def write_outputs(
    stage: Path, name: str, records: Iterable[tuple[ManifestRecord, StoredQuestion]],
    image_of: Callable[[StoredQuestion], ImageSlice],
    observe: Callable[[ManifestRecord, StoredQuestion], None],
) -> None:
    """``NAME_VAL.tsv``, ``NAME_TEST.tsv``, ``NAME_TEST_answers.tsv`` and the manifest, from
    ``records`` in index order; ``image_of`` says where a question's base64 PNG lies."""
    with ThreadPoolExecutor(2, thread_name_prefix="write-tsv") as pool, \
            open(stage / MANIFEST, "w", encoding="utf-8") as manifest, \
            TsvWriter(stage / f"{name}_TEST_answers.tsv", ANSWER_KEY_COLUMNS) as key:
        val = RowPipe(pool, stage / f"{name}_VAL.tsv", TSV_COLUMNS)
        test = RowPipe(pool, stage / f"{name}_TEST.tsv", TEST_COLUMNS)
        try:
            for r, q in records:
                manifest.write(r.to_json() + "\n")
                row = tsv_row(r, image_of(q))
                if r.split == VAL:
                    val.put(row)
                else:
                    test.put({**row, **r.test_view.columns()})
                    key.write(answer_key_row(r))
                observe(r, q)
            val.close()
            test.close()
        except BaseException:
            val.abort()
            test.abort()
            raise
    failpoint("writing")
