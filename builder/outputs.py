"""Output stage: TSVs, answer key and manifest from one stream of records, into the staging folder.

Records arrive one at a time in index order (:func:`gmai_build.records.records`). Each is written
to the manifest (and the answer key if it is in TEST), seen by ``observe`` (the counts of the
summary and the coverage report) and added to its split's TSV plan: the TSVs are cut into
pieces that the executor's workers write at once, each reading, base64-encoding and writing the
images of its rows (:mod:`gmai_build.assembly`). Whatever the number of questions, only the
pieces in flight are in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path

from .assembly import ImageSlice, Piece, TsvPlan, write_piece
from .executors import Executor, ThreadExecutor
from .lifecycle import failpoint
from .manifest import MANIFEST, ManifestRecord
from .records import tsv_row
from .split import VAL
from .store import StoredQuestion
from .writer import (
    ANSWER_KEY_COLUMNS,
    TEST_COLUMNS,
    TSV_COLUMNS,
    RowText,
    answer_key_row,
    tsv_writer,
)


def write_outputs(
    stage: Path, name: str, records: Iterable[tuple[ManifestRecord, StoredQuestion]],
    image_of: Callable[[StoredQuestion], ImageSlice],
    observe: Callable[[ManifestRecord, StoredQuestion], None], executor: Executor,
) -> None:
    """``NAME_VAL.tsv``, ``NAME_TEST.tsv``, ``NAME_TEST_answers.tsv`` and the manifest, from
    ``records`` in index order; ``image_of`` says where a question's PNG lies."""
    val_text, test_text = RowText(TSV_COLUMNS), RowText(TEST_COLUMNS)
    val = TsvPlan(stage / f"{name}_VAL.tsv", val_text.header())
    test = TsvPlan(stage / f"{name}_TEST.tsv", test_text.header())
    with open(stage / MANIFEST, "w", encoding="utf-8") as manifest, \
            open(stage / f"{name}_TEST_answers.tsv", "w", encoding="utf-8", newline="") as keys:
        key = tsv_writer(keys)
        key.writerow(ANSWER_KEY_COLUMNS)

        def pieces() -> Iterator[Piece]:
            for r, q in records:
                manifest.write(r.to_json() + "\n")
                row = tsv_row(r)
                if r.split == VAL:
                    yield from val.add(val_text.before_image(row), image_of(q))
                else:
                    yield from test.add(test_text.before_image({**row, **r.test_view.columns()}),
                                        image_of(q))
                    key.writerow(answer_key_row(r))
                observe(r, q)
            yield val.finish()
            yield test.finish()

        if executor.workers > 1:
            for _ in executor.imap(write_piece, pieces()):
                pass
        else:  # no worker processes: the pieces mostly wait on the disk, threads overlap them
            with closing(ThreadExecutor(2)) as threads:
                for _ in threads.imap(write_piece, pieces()):
                    pass
    failpoint("writing")
