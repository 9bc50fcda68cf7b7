"""The build's working set on disk: cases, questions and previous questions, in SQLite.

The driver's memory must not grow with the corpus. What the reading stage keeps of each case
(its metadata, and where its image lies), the previous build's questions and the questions
this build makes go into one SQLite file in the staging folder; the later stages read them back
in the order each needs: selection and the split are queries, questions are made from a stream
of cases, and every output is written from one stream of records in index order
(:mod:`gmai_build.outputs`). What the driver keeps in memory is bounded by the build's
vocabulary, not its size (labels seen, counters, answer-letter balances), plus the split of
each patient group and one perceptual hash per picture for the near-duplicate search.

SQLite's own cache is capped (:data:`CACHE_KIB`); larger sorts spill to temporary files. The
file is scratch: it is removed with the staging folder and never published.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .manifest import ManifestRecord
from .samples import Case
from .selection import cap_family, rank

STORE = ".work.sqlite"
CACHE_KIB = 2048  # SQLite's page cache (its default): the stages read the tables in order
_BATCH = 512  # rows per insert

_SCHEMA = """
CREATE TABLE cases (
    seq INTEGER PRIMARY KEY,         -- filing order: sources in config order, then items
    case_id TEXT NOT NULL UNIQUE,
    pair_id TEXT NOT NULL,
    source TEXT NOT NULL,
    grp TEXT NOT NULL,
    label TEXT NOT NULL,
    task TEXT NOT NULL,
    department TEXT NOT NULL,
    family TEXT NOT NULL,            -- cap family (mask and contour of a target together)
    rank TEXT NOT NULL,              -- the pair's selection rank
    askable INTEGER NOT NULL,        -- not skipped (size, ambiguity)
    phash TEXT NOT NULL,
    image_file TEXT,                 -- the task file holding its PNG, where, how long
    image_offset INTEGER,
    image_size INTEGER,
    prev INTEGER NOT NULL DEFAULT 0,      -- the previous build asked it
    selected INTEGER NOT NULL DEFAULT 0,  -- the per-label cap keeps it
    regenerated TEXT,                -- JSON reasons: its previous question is made again
    unanswerable INTEGER NOT NULL DEFAULT 0,  -- selected, but no distractor exists
    data BLOB NOT NULL               -- the pickled Case
);
CREATE INDEX cases_pair ON cases(pair_id);
CREATE TABLE previous (
    case_id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    source TEXT NOT NULL,
    grp TEXT NOT NULL,
    split TEXT NOT NULL,
    line TEXT NOT NULL               -- the manifest line (ManifestRecord JSON)
);
CREATE TABLE questions (
    idx INTEGER PRIMARY KEY,         -- the question's index
    case_seq INTEGER NOT NULL UNIQUE,
    split TEXT NOT NULL,
    template_id TEXT NOT NULL,
    question TEXT NOT NULL,
    options TEXT NOT NULL,           -- JSON list, in letter order
    answer TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StoredQuestion:
    """A question as the store holds it, with its case."""

    index: int
    split: str
    case: Case
    template_id: str
    question: str
    options: list[str]
    answer: str
    image_file: str | None  # the task file (in its source's image folder) holding its PNG
    image_offset: int
    image_size: int
    regenerated: list[str] | None  # why its previous question was made again


def filing_order(source_index: int, n: int) -> int:
    """The sort key of a source's ``n``-th case: sources in config order, then their cases in
    the order they were filed, however the sources were read (cache, workers)."""
    return (source_index << 40) | n


class BuildStore:
    """One build's working set (see the module docstring). Not thread-safe: the driver's main
    thread alone uses it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE",
                       f"cache_size = -{CACHE_KIB}", "locking_mode = EXCLUSIVE"):
            self.db.execute(f"PRAGMA {pragma}")  # scratch: no journal, no fsync
        self.db.executescript(_SCHEMA)
        self._pending: list[tuple] = []

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.db.close()

    def __enter__(self) -> BuildStore:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            self.close()
        else:  # failing anyway: nothing to keep
            self.db.close()

    # Cases ------------------------------------------------------------------------------
    def add_case(self, case: Case, order: int, seed: int, image_file: str | None) -> None:
        """File one case; ``order`` sorts the cases in filing order (:func:`filing_order`),
        ``image_file`` is the task file holding its drawn PNG (at ``case.image``). A case id
        filed twice is an :class:`sqlite3.IntegrityError` (here or at :meth:`flush`)."""
        self._pending.append((
            order, case.case_id, case.pair_id, case.source, case.group, case.label, case.task,
            case.department, cap_family(case.granularity), rank(seed, case.pair_id),
            int(not case.skipped), case.phash, image_file, case.image[0],
            case.image[1], pickle.dumps(case, protocol=pickle.HIGHEST_PROTOCOL)))
        if len(self._pending) >= _BATCH:
            self.flush()

    def remove_source(self, source: str) -> None:
        """Forget a source's cases (a cache entry found stale half-way)."""
        self._pending = [row for row in self._pending if row[3] != source]
        self.db.execute("DELETE FROM cases WHERE source = ?", (source,))

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []  # (a failed batch is not tried again)
        self.db.executemany(
            "INSERT INTO cases (seq, case_id, pair_id, source, grp, label, task, department, "
            "family, rank, askable, phash, image_file, image_offset, image_size, data) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def cases(self, where: str = "1", order: str = "seq", params: Iterable[object] = ()
              ) -> Iterator[Case]:
        """Cases matching an SQL condition on the ``cases`` columns, in ``order``."""
        self.flush()
        for (data,) in self.db.execute(f"SELECT data FROM cases WHERE {where} ORDER BY {order}",
                                       tuple(params)):
            yield pickle.loads(data)

    def case(self, case_id: str) -> Case | None:
        self.flush()
        row = self.db.execute("SELECT data FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return pickle.loads(row[0]) if row else None

    def count(self, where: str = "1", params: Iterable[object] = ()) -> int:
        self.flush()
        return self.db.execute(f"SELECT COUNT(*) FROM cases WHERE {where}",
                               tuple(params)).fetchone()[0]

    def mark(self, column: str, case_id: str, value: object = 1) -> None:
        """Set ``regenerated`` (JSON reasons) or ``unanswerable`` of one case."""
        if column not in ("regenerated", "unanswerable"):
            raise ValueError(column)
        self.flush()
        self.db.execute(f"UPDATE cases SET {column} = ? WHERE case_id = ?", (value, case_id))

    def regenerated(self, case_id: str) -> list[str] | None:
        row = self.db.execute("SELECT regenerated FROM cases WHERE case_id = ?",
                              (case_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] is not None else None

    # Previous questions -----------------------------------------------------------------
    def add_previous(self, records: Iterable[tuple[ManifestRecord, str]]) -> None:
        """The previous build's records (each with its manifest line)."""
        batch: list[tuple] = []
        for rec, line in records:
            batch.append((rec.case_id, rec.index, rec.source, rec.group, rec.split, line))
            if len(batch) >= _BATCH:
                self.db.executemany("INSERT INTO previous VALUES (?,?,?,?,?,?)", batch)
                batch.clear()
        self.db.executemany("INSERT INTO previous VALUES (?,?,?,?,?,?)", batch)

    # Questions --------------------------------------------------------------------------
    def add_question(self, index: int, case_id: str, split: str, template_id: str,
                     question: str, options: list[str], answer: str) -> None:
        self.flush()
        self.db.execute(
            "INSERT INTO questions SELECT ?, seq, ?, ?, ?, ?, ? FROM cases WHERE case_id = ?",
            (index, split, template_id, question, json.dumps(options, ensure_ascii=False),
             answer, case_id))

    def questions(self, split: str | None = None) -> Iterator[StoredQuestion]:
        """The questions in index order (of one split), with their cases."""
        self.flush()
        where, params = ("WHERE q.split = ?", (split,)) if split else ("", ())
        query = ("SELECT q.idx, q.split, q.template_id, q.question, q.options, q.answer, "
                 "c.image_file, c.image_offset, c.image_size, c.regenerated, "
                 "c.data "
                 f"FROM questions q JOIN cases c ON c.seq = q.case_seq {where} ORDER BY q.idx")
        for (idx, qsplit, tid, text, options, answer, image_file, offset, size, stale,
             data) in self.db.execute(query, params):
            yield StoredQuestion(idx, qsplit, pickle.loads(data), tid, text, json.loads(options),
                                 answer, image_file, offset, size,
                                 json.loads(stale) if stale is not None else None)

    def pair_question(self, pair_id: str) -> tuple[list[str], str] | None:
        """Options and answer of a question already made for a target (mask <-> contour)."""
        self.flush()
        row = self.db.execute(
            "SELECT q.options, q.answer FROM questions q JOIN cases c ON c.seq = q.case_seq "
            "WHERE c.pair_id = ? LIMIT 1", (pair_id,)).fetchone()
        return (json.loads(row[0]), row[1]) if row else None

    def query(self, sql: str, params: Iterable[object] = ()) -> Iterator[tuple]:
        """Rows of a query (the stages' own aggregates)."""
        self.flush()
        yield from self.db.execute(sql, tuple(params))

    def execute(self, sql: str, params: Iterable[object] = ()) -> None:
        """A statement of a stage over the store's tables (selection marks its cases)."""
        self.flush()
        self.db.execute(sql, tuple(params))


class PreviousQuestions(Mapping[str, ManifestRecord]):
    """The previous build's questions by case id, read from the store as they are asked for:
    stages test ``case_id in previous`` and read ``previous[case_id]`` as from a dict, and
    iterate case ids in index order; nothing is held in memory."""

    def __init__(self, store: BuildStore):
        self._db = store.db
        self._len = self._db.execute("SELECT COUNT(*) FROM previous").fetchone()[0]

    def __len__(self) -> int:
        return self._len

    def __contains__(self, case_id: object) -> bool:
        if not self._len or not isinstance(case_id, str):
            return False
        return self._db.execute("SELECT 1 FROM previous WHERE case_id = ?",
                                (case_id,)).fetchone() is not None

    def __getitem__(self, case_id: str) -> ManifestRecord:
        row = self._db.execute("SELECT line FROM previous WHERE case_id = ?",
                               (case_id,)).fetchone() if self._len else None
        if row is None:
            raise KeyError(case_id)
        return ManifestRecord.model_validate_json(row[0])

    def __iter__(self) -> Iterator[str]:
        for (case_id,) in self._db.execute("SELECT case_id FROM previous ORDER BY idx"):
            yield case_id

    def records(self) -> Iterator[ManifestRecord]:
        """Every previous record, in index order, parsed one at a time."""
        for (line,) in self._db.execute("SELECT line FROM previous ORDER BY idx"):
            yield ManifestRecord.model_validate_json(line)

    def of_source(self, source: str) -> frozenset[str]:
        """Case ids of one source's previous questions."""
        return frozenset(cid for (cid,) in self._db.execute(
            "SELECT case_id FROM previous WHERE source = ?", (source,)))

    def group_splits(self) -> dict[tuple[str, str], str]:
        """(source, group) -> split of the previous build's groups."""
        return {(s, g): split for s, g, split in self._db.execute(
            "SELECT source, grp, split FROM previous ORDER BY idx")}

    def max_index(self) -> int:
        row = self._db.execute("SELECT MAX(idx) FROM previous").fetchone()
        return -1 if row[0] is None else row[0]
