"""Score a CircularEval build with VLMEvalKit's own ``mcq_circular_eval`` and compare with gmai-eval.

VLMEvalKit is not a dependency: point ``--vlmevalkit`` at a checkout (the folder that holds
``vlmeval/``) and run this in an environment with its light requirements (pandas, numpy,
pillow, filelock, huggingface_hub, sty, validators, openpyxl, rich, tqdm, requests). Only
``vlmeval.smp``, ``vlmeval.utils`` and ``vlmeval/dataset/utils/multiple_choice.py`` are loaded;
``vlmeval/__init__.py`` (models, APIs) is not run.

    python scripts/vlmevalkit_circular_check.py --vlmevalkit /path/to/VLMEvalKit \
        --data BUILD/NAME_circular_TEST.tsv --answers BUILD/NAME_circular_TEST_answers.tsv \
        --pred results/MODEL/NAME_circular_TEST

It feeds VLMEvalKit the gmai-eval predictions (the raw reply where there is one, else the
letter), exactly as its inference would have written them, and prints VLMEvalKit's circular
accuracy beside gmai-eval's ``scores_circular.json``; it exits 1 when they differ.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import pandas as pd


def load_multiple_choice(root: Path) -> types.ModuleType:
    os.environ.setdefault("PRED_FORMAT", "tsv")  # its default, xlsx, needs xlsxwriter
    for name, sub in (("vlmeval", "vlmeval"), ("vlmeval.dataset", "vlmeval/dataset"),
                      ("vlmeval.dataset.utils", "vlmeval/dataset/utils")):
        module = types.ModuleType(name)
        module.__path__ = [str(root / sub)]
        sys.modules[name] = module
    return importlib.import_module("vlmeval.dataset.utils.multiple_choice")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vlmevalkit", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--answers", type=Path, help="answer key (TEST)")
    p.add_argument("--pred", required=True, type=Path, help="gmai-eval results/MODEL/SPLIT folder")
    args = p.parse_args()
    mc = load_multiple_choice(args.vlmevalkit.resolve())

    meta = pd.read_csv(args.data, sep="\t").drop(columns=["image"])
    if args.answers:
        key = pd.read_csv(args.answers, sep="\t")
        meta = meta.drop(columns=[c for c in ("answer",) if c in meta]).merge(
            key[["index", "answer"]], on="index")
    preds = {}
    for line in (args.pred / "predictions.jsonl").read_text().splitlines():
        rec = json.loads(line)
        preds[int(rec["index"])] = rec.get("reply") or rec.get("prediction") or ""
    data = meta.drop(columns=["answer"]).copy()
    data["prediction"] = [preds.get(int(i), "") for i in data["index"]]
    with tempfile.TemporaryDirectory() as tmp:
        scored = mc.mcq_circular_eval(None, data, meta, 1, str(Path(tmp) / "result.pkl"),
                                      args.data.stem)
    n, hits = len(scored), int(scored["hit"].sum())
    ours = json.loads((args.pred / "scores_circular.json").read_text())
    print(f"VLMEvalKit mcq_circular_eval: {hits}/{n} = {100 * hits / n:.2f}%")
    print(f"gmai-eval scores_circular:    {ours['circular_correct']}/{ours['n']} = "
          f"{ours['circular_accuracy']:.2f}%")
    agree = (hits, n) == (ours["circular_correct"], ours["n"])
    task = "clinical VQA task"
    if task in scored and task in ours["groups"]:
        for value, part in scored.groupby(task):
            theirs = (int(part["hit"].sum()), len(part))
            mine = ours["groups"][task].get(str(value), {})
            same = theirs == (mine.get("circular_correct"), mine.get("n"))
            agree &= same
            print(f"  {value}: VLMEvalKit {theirs[0]}/{theirs[1]}, gmai-eval "
                  f"{mine.get('circular_correct')}/{mine.get('n')}{'' if same else '  <- differs'}")
    print("agree" if agree else "DIFFER")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
