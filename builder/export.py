"""``gmai-build export BUILD --format parquet|lmms-eval|vlmevalkit --out DIR``.

A build holds ``NAME_VAL.tsv``, ``NAME_TEST.tsv`` (no answers) and the TEST answer key. This
module turns it into what other tools read, without touching the build:

- ``parquet``: ``NAME_VAL.parquet`` and ``NAME_TEST.parquet``, images as PNG bytes, with the
  Hugging Face ``datasets`` features stored in the schema metadata, so
  ``datasets.load_dataset("parquet", data_files=...)`` yields an ``Image`` column. Both splits
  share one schema (every option column is a string column; TEST's ``answer`` is null), so they
  can be concatenated.
- ``lmms-eval``: a task folder for ``lmms-eval --include_path DIR/lmms_eval``: one YAML per split
  over the Parquet files, and a ``utils.py`` holding VLMEvalKit's prompt and gmai-eval's
  extraction (VLMEvalKit's exact matching, copied in so the task needs no gmai-build install).
  VAL is scored in lmms-eval; TEST writes the replies to JSONL for ``gmai-eval score
  --answers KEY``.
- ``vlmevalkit``: an ``LMUData`` folder where VLMEvalKit's ``run.py`` finds the splits, and
  ``COMMANDS.md`` with the exact command lines (see ``VLMEVALKIT_NOTE`` for why the names are
  what they are).

Outputs are written into a staging folder and moved into place when complete.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BuildError

FORMATS = ("parquet", "lmms-eval", "vlmevalkit")
OPTION_LETTERS = tuple("ABCDE")
TEXT_COLUMNS = ("question", *OPTION_LETTERS, "answer", "category", "clinical VQA task",
                "department", "perceptual granularity", "modality", "original task")
# VLMEvalKit runs circular evaluation for any dataset name containing one of these (lower-case)
# substrings (ImageMCQDataset.evaluate_heuristic, vlmeval/dataset/image_mcq.py).
CIRCULAR_TRIGGERS = {"mmbench": "MMB", "ccbench": "CCB", "circular": "circ", "mmcr": "MMC"}
VLMEVALKIT_VAL_NAME = "GMAI-MMBench_VAL"


@dataclass(frozen=True)
class Build:
    """The files of one build folder."""

    root: Path
    name: str
    val: Path | None
    test: Path | None
    key: Path | None

    @classmethod
    def find(cls, root: Path) -> Build:
        if not root.is_dir():
            raise BuildError(f"export: {root} is not a build folder")
        vals = sorted(root.glob("*_VAL.tsv"))
        tests = sorted(root.glob("*_TEST.tsv"))
        if len(vals) > 1 or len(tests) > 1:
            raise BuildError(f"export: {root} holds several builds ({[p.name for p in vals]}); "
                             "export one folder per build")
        if not vals and not tests:
            raise BuildError(f"export: {root} has no NAME_VAL.tsv or NAME_TEST.tsv (is it a "
                             "gmai-build output folder?)")
        first = (vals or tests)[0]
        name = first.name.rsplit("_", 1)[0]
        key = None
        for candidate in (f"{name}_TEST_answers.tsv", f"{name}_TEST_key.tsv",
                          f"{name}_TEST_answers.csv", f"{name}_TEST_key.csv"):
            if (root / candidate).is_file():
                key = root / candidate
                break
        return cls(root, name, vals[0] if vals else None, tests[0] if tests else None, key)

    def splits(self) -> list[tuple[str, Path]]:
        return [(s, p) for s, p in (("VAL", self.val), ("TEST", self.test)) if p is not None]


def export(build_dir: str | Path, fmt: str, out: str | Path) -> list[Path]:
    """Export ``build_dir`` in ``fmt`` into ``out``; return the files written."""
    if fmt not in FORMATS:
        raise BuildError(f"export: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    build = Build.find(Path(build_dir))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        if fmt == "parquet":
            write_parquet(build, staging)
        elif fmt == "lmms-eval":
            write_lmms_eval(build, staging, out.resolve())
        else:
            write_vlmevalkit(build, staging, out.resolve())
        written = []
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                target = out / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- parquet ----------------------------------------------------------------------------------
def hf_features(index_dtype: str) -> dict[str, Any]:
    """The ``datasets`` features of an exported split, in column order."""
    features: dict[str, Any] = {"index": {"dtype": index_dtype, "_type": "Value"}}
    for col in TEXT_COLUMNS:
        features[col] = {"dtype": "string", "_type": "Value"}
    features["image"] = {"_type": "Image"}
    return features


def _require_pyarrow() -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise BuildError("export: writing Parquet needs pyarrow, which the 'export' extra "
                         "installs: pip install 'gmai-build[export]' (--format vlmevalkit "
                         "needs nothing)")


def _arrow_schema(index_dtype: str) -> Any:
    import pyarrow as pa

    fields = [pa.field("index", pa.int64() if index_dtype == "int64" else pa.string())]
    fields += [pa.field(c, pa.string()) for c in TEXT_COLUMNS]
    fields.append(pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
    meta = {"huggingface": json.dumps({"info": {"features": hf_features(index_dtype)}})}
    return pa.schema(fields, metadata=meta)


def _tsv_chunks(path: Path, chunksize: int = 256) -> Iterator[Any]:
    import pandas as pd

    try:
        header = list(pd.read_csv(path, sep="\t", nrows=0).columns)
    except (ValueError, UnicodeDecodeError) as err:
        raise BuildError(f"export: cannot read {path}: {err}") from err
    missing = [c for c in ("index", "question", "image") if c not in header]
    if missing:
        raise BuildError(f"export: {path} lacks column(s) {missing}; is it a gmai-build TSV?")
    try:
        yield from pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""],
                               chunksize=chunksize)
    except (ValueError, UnicodeDecodeError) as err:
        raise BuildError(f"export: cannot read {path}: {err}") from err


def _index_dtype(build: Build) -> str:
    """``int64`` when every index of every split is an integer (as gmai-build writes them)."""
    for _, path in build.splits():
        for chunk in _tsv_chunks(path, 4096):
            if not chunk["index"].fillna("").str.fullmatch(r"[+-]?\d+").all():
                return "string"
    return "int64"


def write_parquet(build: Build, out: Path) -> list[Path]:
    """One Parquet file per split, streamed in row groups of 256 questions."""
    _require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    index_dtype = _index_dtype(build)
    schema = _arrow_schema(index_dtype)
    written = []
    for _, path in build.splits():
        target = out / (path.stem + ".parquet")
        with pq.ParquetWriter(target, schema, compression="zstd") as writer:
            for chunk in _tsv_chunks(path):
                columns: dict[str, Any] = {}
                index = chunk["index"]
                columns["index"] = [int(v) for v in index] if index_dtype == "int64" \
                    else list(index)
                for col in TEXT_COLUMNS:
                    values = chunk[col] if col in chunk.columns else [None] * len(chunk)
                    columns[col] = [None if v != v or v is None else str(v) for v in values]
                columns["image"] = [{"bytes": _image_bytes(path, i, v), "path": None}
                                    for i, v in zip(index, chunk["image"], strict=True)]
                writer.write_table(pa.table(columns, schema=schema))
        written.append(target)
    return written


def _image_bytes(path: Path, index: Any, value: Any) -> bytes | None:
    if value != value or value is None:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as err:
        raise BuildError(f"export: {path.name}: index {index}: image is not base64 ({err})") \
            from err


# -- lmms-eval --------------------------------------------------------------------------------
def _task_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gmai"


def write_lmms_eval(build: Build, out: Path, final_out: Path) -> list[Path]:
    """Parquet splits under ``data/`` and the task folder ``lmms_eval/<task>/``."""
    from gmai_eval import extract as extract_module

    from . import lmms_eval_hooks

    data = out / "data"
    data.mkdir()
    write_parquet(build, data)
    task = _task_name(build.name)
    folder = out / "lmms_eval" / task
    folder.mkdir(parents=True)
    utils = (
        "# Generated by `gmai-build export --format lmms-eval`. VLMEvalKit's prompt and\n"
        "# gmai-eval's answer extraction (VLMEvalKit's exact matching), copied in so that the\n"
        "# task runs without gmai-build installed.\n"
        # lmms-eval executes utils.py without registering it in sys.modules, where
        # dataclasses would look up string annotations: keep annotations eager (Python >= 3.10).
        + inspect.getsource(extract_module).replace("from __future__ import annotations\n", "")
        + "\n\n# ---- lmms-eval hooks " + "-" * 70 + "\n"
        + inspect.getsource(lmms_eval_hooks).split("# ---- hooks ----\n", 1)[1]
    )
    (folder / "utils.py").write_text(utils, encoding="utf-8")
    tasks = []
    for split, path in build.splits():
        parquet = final_out / "data" / (path.stem + ".parquet")
        name = f"{task}_{split.lower()}"
        tasks.append(name)
        scored = split == "VAL"
        lines = [
            f"# {build.name} {split}: generated by gmai-build export --format lmms-eval",
            "dataset_path: parquet",
            "dataset_kwargs:",
            "  data_files:",
            f"    {split.lower()}: {json.dumps(str(parquet))}",
            f"task: {name}",
            f"test_split: {split.lower()}",
            "output_type: generate_until",
            "doc_to_visual: !function utils.doc_to_visual",
            "doc_to_text: !function utils.doc_to_text",
            "doc_to_target: " + ('"answer"' if scored else '"index"'),
            "generation_kwargs:",
            "  max_new_tokens: 64",
            "  temperature: 0",
            "  do_sample: false",
        ]
        if scored:
            lines += [
                "process_results: !function utils.process_results",
                "metric_list:",
                "  - metric: accuracy",
                "    aggregation: mean",
                "    higher_is_better: true",
            ]
        else:
            lines += [
                "process_results: !function utils.process_results_test",
                "metric_list:",
                "  - metric: submission",
                "    aggregation: !function utils.write_replies",
                "    higher_is_better: true",
            ]
        lines += ["metadata:", "  version: 0.0"]
        (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(_lmms_readme(build, task, tasks, final_out),
                                      encoding="utf-8")
    return [folder]


def _lmms_readme(build: Build, task: str, tasks: list[str], final_out: Path) -> str:
    key = build.key or f"{build.name}_TEST_answers.tsv"
    return f"""# {build.name} for lmms-eval

Tasks: {", ".join(f"`{t}`" for t in tasks)} (one per split), over the Parquet files in
`{final_out / "data"}` (absolute paths in the YAML files: re-export after moving them).

```bash
python -m lmms_eval --model qwen2_vl --model_args pretrained=Qwen/Qwen2-VL-2B-Instruct \\
    --include_path {final_out / "lmms_eval" / task} --tasks {",".join(tasks)} \\
    --batch_size 1 --output_path results/
```

The prompt is VLMEvalKit's (image, then `Question: ...`, `Options:`, `A. ...`, `Please select
the correct answer from the options above.`); replies are matched to letters with VLMEvalKit's
exact matching (the code in `utils.py`), so VAL accuracy equals what `gmai-eval` and VLMEvalKit
compute from the same replies.

TEST has no answers in the task. Its replies go to `GMAI_REPLIES_DIR` (default: the current
folder) as `{task}_test_replies.jsonl` (`index`, `reply`); score them with the key:

```bash
gmai-eval score --data {build.test or "NAME_TEST.tsv"} --answers {key} \\
    --pred {task}_test_replies.jsonl
```
"""


# -- VLMEvalKit -------------------------------------------------------------------------------
VLMEVALKIT_NOTE = """\
How VLMEvalKit picks a dataset class (checked against its code, commit e8e78f05):

- `run.py --data NAME` first looks for a built-in dataset called NAME; only then does it load
  `$LMUData/NAME.tsv` as a *custom* multiple-choice set (`build_dataset` in
  `vlmeval/dataset/__init__.py`). A custom set reports only overall and per-`category`
  accuracy: no task / department / granularity tables.
- The task, department and granularity tables come from `GMAIMMBenchDataset.evaluate`, which
  only the names `GMAI-MMBench_VAL` and `GMAI-MMBench_TEST` reach. For `GMAI-MMBench_VAL` it reads
  `$LMUData/GMAI-MMBench_VAL.tsv` with no checksum, so this export places the build's VAL split
  under that name, in its own `LMUData` folder (never in the one holding the published file).
  `GMAI-MMBench_TEST` always re-downloads the 11 published parts (MD5 check), so the build's
  TEST split cannot go that way; it runs as a custom set in inference mode and is scored by
  `gmai-eval score` against the answer key, with the same tables.
- The "MMBench"-in-name trap: a custom set whose name contains `mmbench`, `ccbench`,
  `circular` or `mmcr` (any case) takes VLMEvalKit's *circular* evaluation branch
  (`ImageMCQDataset.evaluate_heuristic`), which groups questions by `g_index` / index modulo
  1e6 and gives different, much lower numbers. `GMAI-MMBench_VAL` is safe (its own class); the
  custom TEST name is rewritten to avoid these substrings.
- Use a separate `--work-dir`: results are named `MODEL_GMAI-MMBench_VAL.xlsx` and would mix
  with results on the published benchmark otherwise.
"""


def safe_custom_name(name: str) -> str:
    """``name`` with VLMEvalKit's circular-evaluation triggers taken out."""
    out = name
    for trigger, replacement in CIRCULAR_TRIGGERS.items():
        out = re.sub(trigger, replacement, out, flags=re.IGNORECASE)
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src.resolve(), dst)  # the file, not the build folder's link to it (outdir.py)
    except OSError:
        shutil.copyfile(src, dst)


def write_vlmevalkit(build: Build, out: Path, final_out: Path) -> list[Path]:
    """``LMUData/`` with the splits under the names VLMEvalKit resolves, and ``COMMANDS.md``."""
    lmu = out / "LMUData"
    lmu.mkdir()
    written = []
    test_name = None
    if build.val is not None:
        _link_or_copy(build.val, lmu / f"{VLMEVALKIT_VAL_NAME}.tsv")
        written.append(lmu / f"{VLMEVALKIT_VAL_NAME}.tsv")
    if build.test is not None:
        test_name = safe_custom_name(f"{build.name}_TEST")
        _link_or_copy(build.test, lmu / f"{test_name}.tsv")
        written.append(lmu / f"{test_name}.tsv")
    root = final_out / "LMUData"
    work = final_out / "outputs"
    lines = [f"# Running {build.name} with VLMEvalKit", "",
             "From a VLMEvalKit checkout (`pip install -e .`); MODEL is any name from "
             "`vlmeval/config.py`, e.g. `Qwen2-VL-7B-Instruct`.", ""]
    if build.val is not None:
        lines += ["## VAL: accuracy with task / department / granularity tables", "", "```bash",
                  f"LMUData={root} python run.py --data {VLMEVALKIT_VAL_NAME} --model MODEL \\",
                  f"    --work-dir {work}", "```", "",
                  f"Tables: `{work}/MODEL/<run id>/MODEL_{VLMEVALKIT_VAL_NAME}_acc.csv` and "
                  f"`..._clinical vqa task_acc.csv`, `..._department_acc.csv`, "
                  f"`..._perceptual granularity_acc.csv` (fractions, as VLMEvalKit writes "
                  "them). The same predictions scored by gmai-eval (percent, intervals):", "",
                  "```bash",
                  f"gmai-eval score --data {build.val} \\",
                  f"    --pred {work}/MODEL/<run id>/MODEL_{VLMEVALKIT_VAL_NAME}.xlsx", "```", ""]
    if test_name is not None:
        lines += ["## TEST: inference in VLMEvalKit, scoring with the answer key", "",
                  "```bash",
                  f"LMUData={root} python run.py --data {test_name} --model MODEL --mode infer \\",
                  f"    --work-dir {work}",
                  f"gmai-eval score --data {build.test} --answers "
                  f"{build.key or '<the TEST answer key>'} \\",
                  f"    --pred {work}/MODEL/<run id>/MODEL_{test_name}.xlsx", "```", ""]
    lines += ["## Why these names", "", VLMEVALKIT_NOTE]
    if build.test is not None and test_name != f"{build.name}_TEST":
        lines += ["", f"This build's TEST name `{build.name}_TEST` contains one of those "
                      f"substrings, so it is exported as `{test_name}`."]
    (out / "COMMANDS.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(out / "COMMANDS.md")
    return written


def main(argv: list[str]) -> int:
    """``gmai-build export BUILD --format FMT --out DIR``."""
    import argparse

    p = argparse.ArgumentParser(prog="gmai-build export",
                                description="Export a build for HF datasets, lmms-eval or "
                                            "VLMEvalKit (the build is left untouched).")
    p.add_argument("build", type=Path, help="a gmai-build output folder")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, type=Path, help="folder to write into")
    args = p.parse_args(argv)
    written = export(args.build, args.format, args.out)
    for path in written:
        print(path)
    name = Build.find(args.build).name
    if args.format == "vlmevalkit" and safe_custom_name(name) != name:
        print(f"gmai-build: note: '{name}' contains a name VLMEvalKit treats as circular "
              f"evaluation (MMBench/CCBench/circular/MMCR); TEST is exported as "
              f"'{safe_custom_name(name + '_TEST')}' (see COMMANDS.md)")
    guide = {"lmms-eval": "lmms_eval/*/README.md", "vlmevalkit": "COMMANDS.md"}.get(args.format)
    if guide:
        print(f"gmai-build: how to run it: {args.out}/{guide}")
    return 0
