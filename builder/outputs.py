"""Output stage: TSVs, answer key, manifest, summary and build info into the staging folder.

Rows are written one at a time, each image read back from its source's image file just then:
whatever the number of questions, only one PNG is in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .config import Config
from .lifecycle import failpoint
from .manifest import MANIFEST, ManifestRecord, write_manifest
from .records import tsv_row
from .split import VAL
from .writer import (
    ANSWER_KEY_COLUMNS,
    BUILD_INFO,
    TEST_COLUMNS,
    TSV_COLUMNS,
    ImageSlice,
    answer_key_row,
    summary_markdown,
    write_json,
    write_tsv,
)


def write_outputs(
    stage: Path, config: Config, records: list[ManifestRecord],
    image_of: Callable[[str], ImageSlice],
    summary: dict[str, Any], build_info: dict[str, Any],
) -> list[str]:
    """Every file of a build but coverage and CircularEval; ``image_of(case_id)`` says where a
    case's base64 PNG lies."""
    name = config.build.name
    val_rows = [r for r in records if r.split == VAL]
    test_rows = [r for r in records if r.split != VAL]

    def rows(recs: list[ManifestRecord], blind: bool = False) -> Iterator[dict[str, Any]]:
        for r in recs:
            row = tsv_row(r, image_of(r.case_id))
            yield {**row, **r.test_view.columns()} if blind else row

    # The TSVs are mostly waits on the disk (bulkio): VAL and TEST are written by two threads
    # while this one writes the small files.
    with ThreadPoolExecutor(2, thread_name_prefix="write-tsv") as pool:
        tsvs = [pool.submit(write_tsv, stage / f"{name}_VAL.tsv", TSV_COLUMNS, rows(val_rows)),
                pool.submit(write_tsv, stage / f"{name}_TEST.tsv", TEST_COLUMNS,
                            rows(test_rows, blind=True))]
        write_tsv(stage / f"{name}_TEST_answers.tsv", ANSWER_KEY_COLUMNS,
                  (answer_key_row(r) for r in test_rows))
        write_manifest(stage / MANIFEST, records)
        write_json(stage / "summary.json", summary)
        (stage / "summary.md").write_text(summary_markdown(summary, name))
        write_json(stage / BUILD_INFO, build_info)
        for done in tsvs:
            done.result()
    failpoint("writing")
    return [f"{name}_VAL.tsv", f"{name}_TEST.tsv", f"{name}_TEST_answers.tsv",
            "summary.json", "summary.md", BUILD_INFO, MANIFEST]
