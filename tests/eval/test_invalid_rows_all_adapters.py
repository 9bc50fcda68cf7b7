"""Every adapter survives bad rows: they are reported as `invalid`, never sent to the model,
left out of n, and a resumed run does not trip over them again (issue 9, point 9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_rows, write_tsv
from gmai_eval.cli import main
from test_openai import FakeServer

BAD = {  # index -> what is wrong with the row, and the message that reports it
    1: ("undecodable image", "undecodable image"),
    2: ("answer without option", "answer 'E' is not one of the options"),
    3: ("empty options", "no options"),
    4: ("duplicate index", "occurs more than once"),
    6: ("empty image", "empty image"),
}


def bad_tsv(tmp_path: Path) -> Path:
    rows = make_rows(9)
    rows[1]["image"] = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"  # PNG signature, truncated
    rows[2].update(answer="E", C=None, D=None, E=None)
    for k in "ABCDE":
        rows[3].pop(k, None)
    rows[5]["index"] = 4
    rows[6]["image"] = ""
    return write_tsv(tmp_path / "bad_VAL.tsv", rows)


@pytest.mark.parametrize("adapter", ["first", "random", "hf-generate", "hf-loglik", "openai"])
def test_bad_rows_in_every_adapter(adapter: str, tmp_path: Path, tiny_ckpt: Path,
                                   caplog: pytest.LogCaptureFixture) -> None:
    data = bad_tsv(tmp_path)
    server = FakeServer(reply="B", fail_first=0) if adapter == "openai" else None
    spec = {"first": "first", "random": "random",
            "hf-generate": f"hf:{tiny_ckpt}?mode=generate&batch=4&max_new_tokens=2&name=m",
            "hf-loglik": f"hf:{tiny_ckpt}?mode=loglik&batch=4&name=m",
            "openai": f"openai:{server.url}#m?workers=2&retries=0" if server else ""}[adapter]
    out = tmp_path / "r"
    try:
        assert main(["--data", str(data), "--model", spec, "--out", str(out)]) == 0
        folder = next(out.glob("*/bad_VAL"))
        recs = {}
        for line in (folder / "predictions.jsonl").read_text().splitlines():
            rec = json.loads(line)
            recs[rec["index"]] = rec
        for index, (_, message) in BAD.items():
            assert recs[index]["method"] == "invalid" and message in recs[index]["invalid"]
        res = json.loads((folder / "scores.json").read_text())
        assert res["invalid"] == 6 and res["n"] == 3  # rows 0, 7, 8 are fine
        assert "invalid rows reported and skipped" in caplog.text
        if server is not None:  # the model server never saw a bad row
            texts = json.dumps(server.requests)
            assert all(f"image {i}?" not in texts for i in (1, 2, 3, 4, 5, 6))
            assert len(server.requests) == 3
        # Resume: nothing left to do, no crash on the bad rows.
        before = (folder / "predictions.jsonl").read_text()
        assert main(["--data", str(data), "--model", spec, "--out", str(out)]) == 0
        assert (folder / "predictions.jsonl").read_text() == before
    finally:
        if server is not None:
            server.close()
