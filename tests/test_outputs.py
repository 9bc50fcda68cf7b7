"""The manifest's image checksums: written in place by the TSV pieces that hash the images, in
index order, at the right bytes whatever text comes before them; a missing one is an error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from gmai_build.errors import BuildError
from gmai_build.manifest import ManifestRecord
from gmai_build.outputs import ManifestLines
from helpers import record


def test_checksums_land_in_their_lines_after_non_ascii_text(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    texts = ["Quel organe est marqué ?", "这是哪个器官？", "Which organ is shown?"]
    records = [record(index=i, case_id=f"c{i}", question=t) for i, t in enumerate(texts)]
    sums = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    with ManifestLines(path) as manifest:
        places = [manifest.add(r) for r in records]
        manifest.fill(places[2], sums[2])  # (in any order, written in batches)
        manifest.write_checksums()
        manifest.fill(places[0], sums[0])
        manifest.fill(places[1], sums[1])
    lines = path.read_text(encoding="utf-8").splitlines()
    got = [ManifestRecord.from_json(line) for line in lines]
    assert [r.image_sha256 for r in got] == sums
    assert [r.question for r in got] == texts
    # the line is the record's own JSON, checksum included (nothing else moved)
    assert lines[1] == records[1].model_copy(update={"image_sha256": sums[1]}).to_json()
    assert json.loads(lines[1])["image_sha256"] == sums[1]


def test_a_line_whose_checksum_never_came_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="1 manifest line.* got no image checksum"), \
            ManifestLines(tmp_path / "manifest.jsonl") as manifest:
        manifest.fill(manifest.add(record(index=0, case_id="a")), "0" * 64)
        manifest.add(record(index=1, case_id="b"))


def test_an_error_while_writing_is_not_hidden_by_missing_checksums(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="disk full"), \
            ManifestLines(tmp_path / "manifest.jsonl") as manifest:
        manifest.add(record(index=0, case_id="a"))
        raise OSError("disk full")
