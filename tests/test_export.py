"""`gmai-build export`: Parquet for HF datasets, an lmms-eval task, and VLMEvalKit's layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gmai_build.cli import main as build_main
from gmai_build.export import CIRCULAR_TRIGGERS, safe_custom_name
from helpers import REPO, decode_image, run_build


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "build"
    assert run_build(REPO / "examples" / "sources.yaml", out) == 0
    return out


def _tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_parquet_loads_in_datasets_with_an_image_column(build: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="pip install datasets (test extra)")
    from PIL import Image

    assert build_main(["export", str(build), "--format", "parquet", "--out",
                       str(tmp_path / "pq")]) == 0
    files = {"val": str(tmp_path / "pq/GMAI-example_VAL.parquet"),
             "test": str(tmp_path / "pq/GMAI-example_TEST.parquet")}
    ds = datasets.load_dataset("parquet", data_files=files,
                               cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(ds["val"].features["image"], datasets.Image)
    assert ds["val"].features == ds["test"].features  # one schema for both splits
    for letter in "ABCDE":
        assert ds["test"].features[letter] == datasets.Value("string")
    both = datasets.concatenate_datasets([ds["val"], ds["test"]])
    assert len(both) == len(ds["val"]) + len(ds["test"])
    for split, name in (("val", "VAL"), ("test", "TEST")):
        tsv = _tsv(build / f"GMAI-example_{name}.tsv")
        assert len(ds[split]) == len(tsv)
        for row, rec in zip(tsv.to_dict("records"), ds[split], strict=True):
            assert rec["index"] == int(row["index"])
            assert rec["question"] == row["question"]
            for letter in "ABCDE":
                assert rec[letter] == (row[letter] or None)
            assert isinstance(rec["image"], Image.Image)
            pixels = np.asarray(rec["image"].convert("RGB"))
            expected = decode_image(row["image"])
            if expected.ndim == 2:
                expected = np.stack([expected] * 3, axis=-1)
            assert np.array_equal(pixels, expected[..., :3])
        if split == "test":
            assert all(a is None for a in ds[split]["answer"])  # no answers leak into TEST
        else:
            assert ds[split]["answer"] == list(tsv["answer"])


LMMS_PROBE = r"""
import json, sys
from lmms_eval.tasks import TaskManager, get_task_dict
tm = TaskManager(verbosity="ERROR", include_path=sys.argv[1], include_defaults=False)
tasks = get_task_dict(sorted(t for t in tm.all_tasks if t.startswith("gmai_example")), tm)
out = {"tasks": sorted(tasks)}
val = tasks["gmai_example_val"]
docs = list(val.test_docs())
out["val"] = [{"index": d["index"], "text": val.doc_to_text(d),
               "visual": list(val.doc_to_visual(d)[0].size),
               "hit": [val.process_results(d, [r])["accuracy"] for r in json.loads(sys.argv[2])]}
              for d in docs]
test = tasks["gmai_example_test"]
subs = [test.process_results(d, ["The answer is B because it looks so"])["submission"]
        for d in test.test_docs()]
agg = test.aggregation()["submission"]
out["written"] = agg(subs)
print("RESULT" + json.dumps(out))
"""


def test_lmms_eval_task_loads_in_lmms_evals_task_manager(build: Path, tmp_path: Path) -> None:
    try:
        import lmms_eval.tasks  # noqa: F401
    except ImportError as err:
        pytest.skip(f"lmms-eval's task loader cannot be imported here ({err}); install "
                    "lmms-eval --no-deps plus loguru, pytz, accelerate, tenacity, sacrebleu, "
                    "evaluate")
    from gmai_eval.data import iter_items
    from gmai_eval.extract import extract
    from gmai_eval.prompt import vlmevalkit_prompt

    out = tmp_path / "lmms"
    assert build_main(["export", str(build), "--format", "lmms-eval", "--out", str(out)]) == 0
    replies = ["B", "The answer is A because of the shape", "I cannot tell", "kidney"]
    env = dict(os.environ, GMAI_REPLIES_DIR=str(tmp_path), HF_DATASETS_CACHE=str(tmp_path / "c"))
    # Run outside the repository root: its evaluate/ folder would shadow PyPI's `evaluate`.
    proc = subprocess.run([sys.executable, "-c", LMMS_PROBE, str(out / "lmms_eval"),
                           json.dumps(replies)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["tasks"] == ["gmai_example_test", "gmai_example_val"]
    items = {i.index: i for i in iter_items(build / "GMAI-example_VAL.tsv")}
    assert len(result["val"]) == len(items)
    for doc in result["val"]:
        item = items[doc["index"]]
        assert doc["text"] == vlmevalkit_prompt(item)  # VLMEvalKit's prompt, byte for byte
        assert doc["visual"] == list(item.image().size)
        expected = [float(extract(r, item.options).letter == item.answer) for r in replies]
        assert doc["hit"] == expected
    n_test = len(_tsv(build / "GMAI-example_TEST.tsv"))
    assert result["written"] == n_test
    lines = (tmp_path / "gmai_example_test_replies.jsonl").read_text().splitlines()
    assert len(lines) == n_test and json.loads(lines[0])["reply"].startswith("The answer is B")


def test_vlmevalkit_layout_and_commands(build: Path, tmp_path: Path) -> None:
    out = tmp_path / "vk"
    assert build_main(["export", str(build), "--format", "vlmevalkit", "--out", str(out)]) == 0
    lmu = out / "LMUData"
    # VAL under the one name that reaches GMAIMMBenchDataset (task/department/granularity
    # tables); TEST as a custom set whose name avoids the circular-evaluation triggers.
    assert sorted(p.name for p in lmu.iterdir()) == ["GMAI-MMBench_VAL.tsv",
                                                     "GMAI-example_TEST.tsv"]
    assert (lmu / "GMAI-MMBench_VAL.tsv").read_bytes() == \
        (build / "GMAI-example_VAL.tsv").read_bytes()
    header = _tsv(lmu / "GMAI-MMBench_VAL.tsv").columns
    for column in ("clinical VQA task", "department", "perceptual granularity", "category"):
        assert column in header  # GMAIMMBenchDataset.evaluate groups by these (lower-cased)
    commands = (out / "COMMANDS.md").read_text()
    assert f"LMUData={lmu.resolve()} python run.py --data GMAI-MMBench_VAL --model MODEL" \
        in commands
    assert "python run.py --data GMAI-example_TEST --model MODEL --mode infer" in commands
    assert f"--answers {build / 'GMAI-example_TEST_answers.tsv'}" in commands
    assert "circular" in commands and "mmbench" in commands


def test_circular_trap_names_are_rewritten() -> None:
    for name in ("My-MMBench_TEST", "ccbench-med_TEST", "Circular_TEST", "MMCR_x_TEST"):
        safe = safe_custom_name(name)
        assert not any(t in safe.lower() for t in CIRCULAR_TRIGGERS), safe
    assert safe_custom_name("GMAI-example_TEST") == "GMAI-example_TEST"


def test_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build_main(["export", str(tmp_path / "nope"), "--format", "parquet", "--out",
                       str(tmp_path / "o")]) == 1
    (tmp_path / "empty").mkdir()
    assert build_main(["export", str(tmp_path / "empty"), "--format", "parquet", "--out",
                       str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "is not a build folder" in err and "has no NAME_VAL.tsv" in err
    assert "Traceback" not in err
    assert not list((tmp_path / "o").glob(".export-*"))  # no staging left behind



def test_tsv_without_images_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b/X_VAL.tsv").write_text("index\tquestion\tA\n1\tq\tx\n")
    assert build_main(["export", str(tmp_path / "b"), "--format", "parquet", "--out",
                       str(tmp_path / "o")]) == 1
    assert "lacks column(s) ['image']" in capsys.readouterr().err
    assert list((tmp_path / "o").iterdir()) == []


def test_mmbench_named_build_is_renamed_for_vlmevalkit(build: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    trap = tmp_path / "trap"
    trap.mkdir()
    for split in ("VAL", "TEST"):
        (trap / f"My-MMBench_{split}.tsv").write_bytes(
            (build / f"GMAI-example_{split}.tsv").read_bytes())
    assert build_main(["export", str(trap), "--format", "vlmevalkit", "--out",
                       str(tmp_path / "vk")]) == 0
    assert sorted(p.name for p in (tmp_path / "vk/LMUData").iterdir()) == [
        "GMAI-MMBench_VAL.tsv", "My-MMB_TEST.tsv"]
    assert "exported as 'My-MMB_TEST'" in capsys.readouterr().out
    assert "--data My-MMB_TEST --model MODEL --mode infer" in (tmp_path / "vk/COMMANDS.md").read_text()


def test_parquet_without_pyarrow_names_the_extra(build: Path, tmp_path: Path, monkeypatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))
    assert build_main(["export", str(build), "--format", "parquet", "--out",
                       str(tmp_path / "o")]) == 1
    assert "pip install 'gmai-build[export]'" in capsys.readouterr().err
