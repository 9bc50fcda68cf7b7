"""Resume after SIGKILL, tolerance of a torn last line, and data-parallel sharding + merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gmai_eval.adapters import RandomBaseline
from gmai_eval.cli import main
from gmai_eval.runner import Shard, merge, predict, read_records

DRIVER = """
import sys, time
from gmai_eval.adapters import RandomBaseline
from gmai_eval.runner import predict

class Slow(RandomBaseline):
    batch_size = 3
    def predict(self, items, prompts):
        time.sleep(float(sys.argv[3]))
        return super().predict(items, prompts)

predict(sys.argv[1], Slow(seed=7), sys.argv[2])
"""


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def by_index(path: Path) -> dict:
    return {r["index"]: r for r in read_records(path)}


def test_resume_after_sigkill(tsv_factory, tmp_path: Path) -> None:
    data = tsv_factory(60)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "killed"
    pred = out / "random-seed7/toy_VAL/predictions.jsonl"
    proc = subprocess.Popen([sys.executable, str(driver), str(data), str(out), "0.1"])
    try:
        deadline = time.monotonic() + 60
        while len(lines(pred)) < 9 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    n_before = len(lines(pred))
    assert 9 <= n_before < 60, "the run should have been killed part-way"
    # Simulate a kill in the middle of a write: a torn last line.
    with pred.open("a") as f:
        f.write('{"index": 59, "ordinal": 59, "predic')
    subprocess.run([sys.executable, str(driver), str(data), str(out), "0"], check=True)
    recs = [json.loads(x) for x in lines(pred)]
    indexes = [r["index"] for r in recs]
    assert len(indexes) == len(set(indexes)) == 60
    # Identical to an uninterrupted run.
    clean = predict(data, RandomBaseline(seed=7), tmp_path / "clean")
    assert by_index(pred) == by_index(clean / "predictions.jsonl")


def test_failed_items_are_retried_on_resume(tsv_factory, tmp_path: Path) -> None:
    from gmai_eval.adapters import Output

    class Flaky(RandomBaseline):
        fail = True

        def predict(self, items, prompts):
            outs = super().predict(items, prompts)
            if self.fail:
                outs[0] = Output(error="HTTP 503")
            return outs

    data = tsv_factory(5)
    model = Flaky(seed=1)
    d = predict(data, model, tmp_path)
    assert sum(r["method"] == "error" for r in read_records(d / "predictions.jsonl")) == 1
    model.fail = False
    predict(data, model, tmp_path)
    merged = by_index(merge(d))
    assert len(merged) == 5 and all(r["method"] == "baseline" for r in merged.values())


def test_shards_merge_equal_single_run(tsv_factory, tmp_path: Path) -> None:
    data = tsv_factory(11)
    for rank in range(3):
        predict(data, RandomBaseline(seed=2), tmp_path / "dp", shard=Shard(rank, 3))
    d = tmp_path / "dp/random-seed2/toy_VAL"
    assert sorted(p.name for p in d.glob("predictions.rank*.jsonl")) == [
        "predictions.rank0.jsonl", "predictions.rank1.jsonl", "predictions.rank2.jsonl"]
    assert [r["ordinal"] for r in read_records(d / "predictions.rank1.jsonl")] == [1, 4, 7, 10]
    merged = merge(d)
    single = predict(data, RandomBaseline(seed=2), tmp_path / "single")
    assert read_records(merged) == read_records(single / "predictions.jsonl")


def test_torchrun_style_ranks_in_subprocesses(tsv_factory, tmp_path: Path) -> None:
    """Three processes with RANK/WORLD_SIZE set, as torchrun would start them."""
    data = tsv_factory(10)
    out = tmp_path / "r"
    procs = []
    for rank in range(3):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="3", LOCAL_RANK=str(rank),
                   TORCHELASTIC_RUN_ID="test-run")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gmai_eval.cli", "--data", str(data), "--model",
             "random?seed=4", "--out", str(out)], env=env))
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    d = out / "random-seed4/toy_VAL"
    scores = json.loads((d / "scores.json").read_text())
    assert scores["n"] == 10 and scores["missing"] == 0 and scores["world_size"] == 3
    assert main(["--data", str(data), "--model", "random?seed=4", "--out",
                 str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one/random-seed4/toy_VAL/scores.json").read_text())
    assert one["accuracy"] == scores["accuracy"] and one["groups"] == scores["groups"]
