"""Output stage: TSVs, answer key and manifest from one stream of records, into the staging folder.

Records arrive one at a time in index order (:func:`gmai_build.records.records`). Each is written
to the manifest (and the answer key if it is in TEST), seen by ``observe`` (the counts of the
summary and the coverage report) and added to its split's TSV plan: the TSVs are cut into
pieces that the executor's workers write at once, each reading, base64-encoding and writing the
images of its rows (:mod:`gmai_build.assembly`). Whatever the number of questions, only the
pieces in flight are in memory.

The pieces also hash the images they write (each is read once, after selection). A record's
manifest line is written at once, with a placeholder where its ``image_sha256`` goes, and the
checksum is written over the placeholder when the piece holding its row reports it
(:class:`ManifestLines`): the manifest stays in index order without holding the records of the
pieces in flight, whose rows of VAL and TEST interleave.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path

from .assembly import ImageSlice, Piece, TsvPlan, Written, write_piece
from .errors import BuildError
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

SHA256_HEX = 64
_PLACEHOLDER = "-" * SHA256_HEX
_SHA_FIELD = b'"image_sha256": "'  # (how ManifestRecord.to_json writes the key)


class ManifestLines:
    """The manifest, one line per record in index order; each line's ``image_sha256`` is
    written when its image has been hashed (:meth:`fill`), in place of a placeholder of the
    same length. Leaving it as a context manager without an error fails if a checksum never
    came (an invariant: the piece holding each row reports its image's)."""

    def __init__(self, path: Path):
        self._file = open(path, "wb")
        self._size = 0
        self._unfilled = 0
        self._patches: list[tuple[int, bytes]] = []

    def add(self, record: ManifestRecord) -> int:
        """Write the record's line; returns where its checksum goes (for :meth:`fill`)."""
        line = record.model_copy(update={"image_sha256": _PLACEHOLDER}).to_json().encode()
        at = self._size + line.index(_SHA_FIELD) + len(_SHA_FIELD)
        self._file.write(line + b"\n")
        self._size += len(line) + 1
        self._unfilled += 1
        return at

    def fill(self, at: int, sha256: str) -> None:
        self._patches.append((at, sha256.encode("ascii")))
        self._unfilled -= 1

    def write_checksums(self) -> None:
        """Write the checksums filled in since the last call (their lines are flushed first)."""
        if self._patches:
            self._file.flush()
            for at, sha in self._patches:
                os.pwrite(self._file.fileno(), sha, at)
            self._patches.clear()

    def __enter__(self) -> ManifestLines:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        with self._file:
            if kind is None:  # (failing anyway: the staging folder is not published)
                self.write_checksums()
                if self._unfilled:
                    raise BuildError(f"{self._unfilled} manifest line(s) got no image checksum")


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
    checksum_at: dict[tuple[Path, int], int] = {}  # (TSV, row start) -> where in the manifest
    owners: deque[list[int]] = deque()  # per piece sent, in order: its rows' checksum places
    with ManifestLines(stage / MANIFEST) as manifest, \
            open(stage / f"{name}_TEST_answers.tsv", "w", encoding="utf-8", newline="") as keys:
        key = tsv_writer(keys)
        key.writerow(ANSWER_KEY_COLUMNS)

        def send(done: Iterable[Piece]) -> Iterator[Piece]:
            for piece in done:
                owners.append([checksum_at.pop((piece.path, row.start)) for row in piece.rows
                               if row.image is not None and piece.owns(row)])
                yield piece

        def pieces() -> Iterator[Piece]:
            for r, q in records:
                plan = val if r.split == VAL else test
                checksum_at[(plan.path, plan.size)] = manifest.add(r)
                row = tsv_row(r)
                if r.split == VAL:
                    yield from send(val.add(val_text.before_image(row), image_of(q)))
                else:
                    yield from send(test.add(test_text.before_image(
                        {**row, **r.test_view.columns()}), image_of(q)))
                    key.writerow(answer_key_row(r))
                observe(r, q)
            yield from send([val.finish(), test.finish()])

        def checksums(written: Iterator[Written]) -> None:
            for piece in written:
                for at, sha in zip(owners.popleft(), piece.sha256, strict=True):
                    manifest.fill(at, sha)
                manifest.write_checksums()

        if executor.workers > 1:
            checksums(executor.imap(write_piece, pieces()))
        else:  # no worker processes: the pieces mostly wait on the disk, threads overlap them
            with closing(ThreadExecutor(2)) as threads:
                checksums(threads.imap(write_piece, pieces()))
    failpoint("writing")
