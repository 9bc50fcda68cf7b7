"""The build's working set on disk (store.py): the selection query equals its definition on
random cases, previous questions read like the dict they replace, and the outputs are written
from a stream of records with memory that does not grow with their number."""

from __future__ import annotations

import base64
import hashlib
import random
import tracemalloc
from collections import defaultdict
from pathlib import Path

import pytest
from gmai_build.assembly import ImageSlice
from gmai_build.executors import InlineExecutor
from gmai_build.manifest import ManifestRecord
from gmai_build.outputs import write_outputs
from gmai_build.samples import BOX_LEVEL, CONTOUR_LEVEL, IMAGE_LEVEL, MASK_LEVEL, Case
from gmai_build.selection import cap_family, rank, select_by_cap
from gmai_build.store import BuildStore, PreviousQuestions, StoredQuestion, filing_order
from gmai_build.writer import read_tsv_rows
from helpers import record


def _case(rng: random.Random, n: int) -> list[Case]:
    """One target: an image-level or box case, or a mask + contour pair; sometimes skipped."""
    label = rng.choice(["liver", "spleen", "kidney", "lung"])
    kind = rng.choice([IMAGE_LEVEL, BOX_LEVEL, "segment"])
    grans = [MASK_LEVEL, CONTOUR_LEVEL] if kind == "segment" else [kind]
    skipped = "marked area below 64 px" if rng.random() < 0.1 else ""
    pair = f"pair{n}"
    return [Case(case_id=f"{pair}-{g}", pair_id=pair, source=rng.choice("ab"), sample_id=f"s{n}",
                 files=("f",), group=f"g{n % 7}", granularity=g, original_task="SEG_2D",
                 raw_label=label, label=label, task="Organ Recognition", department="",
                 modality="CT", png=b"", skipped=skipped, phash="0" * 64, image=(0, 10))
            for g in grans]


def _reference_selection(cases: list[Case], cap: int, seed: int, previous: set[str]) -> set[str]:
    """The per-label cap as it was defined on lists: per (label, family), the ``cap`` best
    pairs of the askable cases, previous questions first, then by rank."""
    units: dict[tuple[str, str], dict[str, list[Case]]] = defaultdict(lambda: defaultdict(list))
    for c in cases:
        if not c.skipped:
            units[(c.label, cap_family(c.granularity))][c.pair_id].append(c)
    chosen: set[str] = set()
    for by_pair in units.values():
        order = sorted(by_pair, key=lambda p: (not any(c.case_id in previous
                                                       for c in by_pair[p]), rank(seed, p)))
        chosen.update(order[:cap])
    return {c.case_id for c in cases if not c.skipped and c.pair_id in chosen}


@pytest.mark.parametrize("trial", range(12))
def test_selection_query_equals_its_definition(tmp_path: Path, trial: int) -> None:
    rng = random.Random(trial)
    cases = [c for n in range(rng.randint(1, 300)) for c in _case(rng, n)]
    seed, cap = rng.randint(0, 9), rng.choice([1, 2, 5, 30, 10_000])
    previous = {c.case_id for c in cases if rng.random() < 0.15}
    with BuildStore(tmp_path / "s.sqlite") as store:
        for n, c in enumerate(cases):
            store.add_case(c, filing_order(0, n), seed, "images-000000.png")
        store.add_previous((record(case_id=cid, index=k), record(case_id=cid, index=k).to_json())
                           for k, cid in enumerate(sorted(previous)))
        select_by_cap(store, cap)
        got = {c.case_id for c in store.cases("selected")}
    assert got == _reference_selection(cases, cap, seed, previous)


def test_previous_questions_read_like_a_dict(tmp_path: Path) -> None:
    records = [record(case_id=f"c{i}", index=10 + 3 * i, source="ab"[i % 2], group=f"g{i}",
                      split="VAL" if i % 3 == 0 else "TEST") for i in range(9)]
    with BuildStore(tmp_path / "s.sqlite") as store:
        store.add_previous((r, r.to_json()) for r in reversed(records))
        previous = PreviousQuestions(store)
        assert len(previous) == 9 and "c4" in previous and "c99" not in previous
        assert previous["c4"] == records[4] and previous.get("c99") is None
        assert list(previous) == [r.case_id for r in records]  # index order
        assert list(previous.records()) == records
        assert previous.of_source("b") == {r.case_id for r in records if r.source == "b"}
        assert previous.group_splits() == {(r.source, r.group): r.split for r in records}
        assert previous.max_index() == 34
        empty = PreviousQuestions(BuildStore(tmp_path / "e.sqlite"))
        assert not empty and empty.max_index() == -1 and "c4" not in empty


def test_a_case_id_filed_twice_is_refused(tmp_path: Path) -> None:
    import sqlite3

    case = _case(random.Random(0), 0)[0]
    with BuildStore(tmp_path / "s.sqlite") as store, pytest.raises(sqlite3.IntegrityError):
        store.add_case(case, 1, 0, None)
        store.add_case(case, 2, 0, None)
        store.flush()


def test_outputs_are_written_from_a_stream_in_flat_memory(tmp_path: Path) -> None:
    """20,000 records (as many TSV rows, each with its image copied from a task file) are
    written while at most a few of them are in memory: the traced peak stays far below what
    holding the records would take (about 4 KB each)."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 6
    (tmp_path / "task.png").write_bytes(png)
    view = {"category": "Organ Recognition", "clinical VQA task": "", "department": ""}
    case = _case(random.Random(0), 0)[0]

    def stream(n: int):
        for i in range(n):
            r = record(case_id=f"c{i}", index=i, split="VAL" if i % 5 == 0 else "TEST",
                       test_view=view)
            yield r, StoredQuestion(i, r.split, case, r.template_id, r.question,
                                    list(r.options), r.answer, "task.png", 0,
                                    len(png), None)

    seen: list[int] = []
    tracemalloc.start()
    try:
        write_outputs(tmp_path, "M", stream(20_000),
                      lambda q: ImageSlice(tmp_path / "task.png", 0, len(png)),
                      lambda r, q: seen.append(r.index), InlineExecutor())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == list(range(20_000))
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MB traced"
    rows = list(read_tsv_rows(tmp_path / "M_TEST.tsv"))
    assert len(rows) == 1 + 16_000 and rows[1][-1] == base64.b64encode(png).decode()
    lines = open(tmp_path / "manifest.jsonl").read().splitlines()
    assert len(lines) == 20_000
    # every line's checksum was written in place by the piece holding its row (~20 pieces)
    assert {ManifestRecord.from_json(line).image_sha256 for line in lines} == {
        hashlib.sha256(png).hexdigest()}
    first = ManifestRecord.from_json(open(tmp_path / "manifest.jsonl").readline())
    assert first.index == 0 and first.split == "VAL"
