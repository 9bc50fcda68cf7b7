"""Check `gmai-build export --format vlmevalkit` and `gmai-eval score` against VLMEvalKit itself.

    python scripts/check_against_vlmevalkit.py --vlmevalkit /path/to/VLMEvalKit --build BUILD \
        --work /tmp/check [--stub-torchvision]

1. exports BUILD in VLMEvalKit's layout;
2. in a subprocess that imports VLMEvalKit from the given checkout: `build_dataset` must resolve
   `GMAI-MMBench_VAL` to `GMAIMMBenchDataset` and the custom TEST name to `CustomMCQDataset`;
   free-text replies in 14 styles (bare letters, "The answer is X because ...", option texts,
   refusals, two letters, full-width punctuation, ...) are written as a VLMEvalKit result file
   (`MODEL_GMAI-MMBench_VAL.xlsx`) and scored by `GMAIMMBenchDataset.evaluate` (exact matching);
3. scores the same file with `gmai-eval score` and compares every question's hit and every
   task / department / granularity accuracy. Exit status 1 on any difference.

VLMEvalKit's dataset package imports torchvision in modules unrelated to multiple choice;
`--stub-torchvision` replaces it by an inert stub where no torchvision build matches the
installed torch (CPU-only machines). VLMEvalKit needs `xlsxwriter` to write its result files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = r'''
import json, os, random, sys
import pandas as pd
if sys.argv[4] == "1":
    import importlib.abc, importlib.machinery, types
    from transformers.utils import import_utils
    import_utils.is_torchvision_available()  # cache "absent" before the stub exists

    class _Any:
        def __getattr__(self, n):
            if n.startswith("__"):
                raise AttributeError(n)
            return _Any()

        def __call__(self, *a, **k):
            return _Any()

    class _Stub(types.ModuleType):
        def __getattr__(self, n):
            if n.startswith("__"):
                raise AttributeError(n)
            return _Any()

    class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = _Stub(spec.name)
            module.__path__ = []
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, _Finder())
from vlmeval.dataset import build_dataset

work, test_name = sys.argv[1], sys.argv[2]
out = {"val_class": None, "test_class": None}
ds = build_dataset("GMAI-MMBench_VAL")
out["val_class"] = type(ds).__name__
if test_name:
    out["test_class"] = type(build_dataset(test_name)).__name__
data = ds.data.drop(columns=["image"])
rng = random.Random(int(sys.argv[3]))
TEMPLATES = ["{L}", "{L}.", "({L})", "The answer is {L} because the image shows it clearly.",
             "The correct answer is **{L}**. Here's why: the findings fit.", "{T}",
             "I think it is {T}.", "Cannot determine the answer", "{L} or {M}",
             "the answer is {l}", "答案：（{L}）。",
             "{L} is what I would say after looking very carefully at the whole image here",
             "Let me think step by step. The answer is {L}. The rest follows.", "Answer: {L}"]
preds = []
for _, row in data.iterrows():
    letters = [c for c in "ABCDE" if c in row and isinstance(row[c], str) and row[c] != ""]
    pick = row["answer"] if rng.random() < 0.5 else rng.choice(letters)
    other = rng.choice([c for c in letters if c != pick] or [pick])
    preds.append(rng.choice(TEMPLATES).format(L=pick, M=other, l=pick.lower(), T=row[pick]))
data["prediction"] = preds
eval_file = os.path.join(work, "M_GMAI-MMBench_VAL.xlsx")
data.to_excel(eval_file, index=False)
acc = ds.evaluate(eval_file, model="exact_matching", nproc=1)
out["overall"] = float(acc["Overall"].iloc[0])
res = pd.read_excel(eval_file.replace(".xlsx", "_exact_matching_result.xlsx"))
out["hits"] = {str(i): int(h) for i, h in zip(res["index"], res["hit"])}
for g in ["clinical vqa task", "department", "perceptual granularity"]:
    table = pd.read_csv(eval_file.replace(".xlsx", f"_{g}_acc.csv"))
    out[g] = {k: float(v) for k, v in table.iloc[0].items() if k not in ("split", "Overall")}
print("RESULT" + json.dumps(out))
'''
GROUPS = {"clinical vqa task": "clinical VQA task", "department": "department",
          "perceptual granularity": "perceptual granularity"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vlmevalkit", required=True, type=Path, help="a VLMEvalKit checkout")
    p.add_argument("--build", required=True, type=Path)
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stub-torchvision", action="store_true")
    p.add_argument("--pythonpath", default="", help="extra paths for VLMEvalKit's dependencies")
    args = p.parse_args()
    import pandas as pd
    from gmai_build.export import Build, export, safe_custom_name
    from gmai_eval.cli import main as eval_main
    from gmai_eval.predictions import load_predictions

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    export(args.build, "vlmevalkit", work / "export")
    build = Build.find(args.build)
    test_name = safe_custom_name(f"{build.name}_TEST") if build.test else ""
    env = dict(os.environ, LMUData=str(work / "export" / "LMUData"),
               PYTHONPATH=os.pathsep.join(x for x in (str(args.vlmevalkit), args.pythonpath) if x))
    proc = subprocess.run([sys.executable, "-c", PROBE, str(work), test_name, str(args.seed),
                           "1" if args.stub_torchvision else "0"], env=env, cwd=work,
                          capture_output=True, text=True)
    if proc.returncode != 0 or "RESULT" not in proc.stdout:
        print(proc.stderr[-4000:], file=sys.stderr)
        return 2
    vk = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert eval_main(["score", "--data", str(build.val), "--pred",
                      str(work / "M_GMAI-MMBench_VAL.xlsx"), "--scale", "fraction",
                      "--out", str(work / "gmai")]) == 0
    ours = json.loads((work / "gmai" / "scores.json").read_text())
    loaded = load_predictions(work / "M_GMAI-MMBench_VAL.xlsx", build.val)
    key = pd.read_csv(build.val, sep="\t", usecols=["index", "answer"], dtype=str)
    answers = dict(zip(key["index"], key["answer"], strict=True))
    preds = {str(i): int(r["prediction"] == answers[str(i)]) for i, r in loaded.records.items()}
    item_diffs = [i for i in vk["hits"] if vk["hits"][i] != preds.get(i)]
    group_diffs = [(g, k, v, ours["groups"][GROUPS[g]][k]["accuracy"])
                   for g in GROUPS for k, v in vk[g].items()
                   if abs(v - ours["groups"][GROUPS[g]][k]["accuracy"]) > 1e-12]
    n_groups = sum(len(vk[g]) for g in GROUPS)
    print(f"VLMEvalKit classes: GMAI-MMBench_VAL -> {vk['val_class']}, {test_name or '-'} -> "
          f"{vk['test_class']}")
    print(f"questions: {len(vk['hits'])}; per-question hits differing: {len(item_diffs)}")
    print(f"overall: VLMEvalKit {vk['overall']:.6f}, gmai-eval {ours['accuracy']:.6f}")
    print(f"task/department/granularity values: {n_groups}; differing: {len(group_diffs)}")
    for diff in group_diffs[:10]:
        print("  DIFF", diff)
    ok = (not item_diffs and not group_diffs and abs(vk["overall"] - ours["accuracy"]) < 1e-12
          and vk["val_class"] == "GMAIMMBenchDataset"
          and (not test_name or vk["test_class"] == "CustomMCQDataset"))
    print("AGREE" if ok else "DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
