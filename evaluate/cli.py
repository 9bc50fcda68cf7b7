"""The ``gmai-eval`` command.

    gmai-eval --data BUILD/x_VAL.tsv --model SPEC [--model SPEC ...] --out results/
    gmai-eval --data BUILD/x_TEST.tsv --answers x_TEST_key.csv --model SPEC --out results/
    gmai-eval merge results/MODEL/SPLIT [--data X.tsv [--answers KEY]]
    gmai-eval score --data X.tsv --pred results/MODEL/SPLIT|FILE [--answers KEY]
    gmai-eval compare results/ [--out results/comparison]

See evaluate/README.md for model specs, outputs, resuming and multi-GPU runs.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any

from gmai_build.manifest import ManifestError

from .adapters import Model, load_model, parse_spec
from .circular import score_circular
from .data import Index, answer_counts, load_answer_key, load_key_groups
from .openai_adapter import LogprobsUnsupported
from .predictions import PredictionsError, load_predictions
from .prompt import PromptBuilder
from .runner import (
    FingerprintMismatch,
    Shard,
    best_records,
    merge,
    predict,
    prediction_files,
    split_name,
    wait_for_ranks,
)
from .scoring import SCALES, collect, compare, manifest_sources, write_scores

log = logging.getLogger("gmai_eval")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers", action="append", default=[],
                   help="answer key (CSV/TSV with index,answer[,category]); once, or once per "
                        "--data ('-': none for that split); a category column in the key wins "
                        "over the TSV's")
    p.add_argument("--keep-na-text", action="store_true",
                   help="keep option texts like 'None'/'NA' (VLMEvalKit reads them as empty)")
    p.add_argument("--scale", choices=sorted(SCALES), default="percent",
                   help="accuracies in percent (default) or fractions 0-1 (as VLMEvalKit)")


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gmai-eval", description="Score VLMs on GMAI-MMBench TSVs.")
    p.add_argument("--data", action="append", required=True, help="TSV split (repeatable)")
    p.add_argument("--model", action="append", required=True,
                   help="hf:PATH[?mode=..&batch=..] | openai:URL#MODEL | random | first | "
                        "most-frequent-letter (repeatable)")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--mode", choices=["generate", "loglik"], default=None,
                   help="default mode for hf: models (a spec's ?mode= wins)")
    p.add_argument("--batch", type=int, default=None, help="default batch size")
    p.add_argument("--device", default=None, help="hf: models' device (default: cuda if any)")
    p.add_argument("--prompt-template", default=None,
                   help="file with a format string using {question} {options} {hint}")
    p.add_argument("--judge", default=None,
                   help="openai:URL#MODEL used only when rule-based extraction fails")
    p.add_argument("--lenient", action="store_true",
                   help="also normalise full-width punctuation before extraction")
    p.add_argument("--chunksize", type=int, default=32, help="TSV rows read at a time")
    p.add_argument("--limit", type=int, default=None, help="predict at most N new items")
    _common(p)
    return p


class EvalUsageError(ValueError):
    """A command line that cannot work (the message says what to change)."""


Key = tuple[dict[Index, str], dict[Index, dict[str, str]]]


def _load_key(path: str) -> Key:
    return load_answer_key(path), load_key_groups(path)


def _keys(paths: list[str], n_data: int) -> list[Key | None]:
    """One key per --data: none, the same for all, or one each (``-``: none for that one)."""
    if not paths:
        return [None] * n_data
    if len(paths) == 1:
        return [None if paths[0] == "-" else _load_key(paths[0])] * n_data
    if len(paths) != n_data:
        raise EvalUsageError("give --answers once, or once per --data ('-' for a split that "
                             "has its answers, e.g. --data X_VAL.tsv --answers - --data "
                             "X_TEST.tsv --answers X_TEST_answers.tsv)")
    return [None if p == "-" else _load_key(p) for p in paths]


def _score(data: str, records: dict[Index, dict[str, Any]], out_dir: Path, key: Key | None,
           args: Any, extra: dict[str, Any]) -> dict[str, Any] | None:
    answers, groups = key if key is not None else (None, None)
    df = collect(data, records, answers, groups, keep_na_text=args.keep_na_text)
    if df.empty or df["answer"].isna().all():
        log.warning("%s: no answers (TEST without --answers?): predictions only", data)
        return None
    title = f"{extra.get('model', out_dir.parent.name)} on {split_name(data)}"
    res = write_scores(df, out_dir, title, args.scale, extra)
    unit, digits = ("%", 2) if args.scale == "percent" else ("", 4)
    apart = ", ".join(f"{k} {res[k]}" for k in ("api_failed", "missing", "judge_failed",
                                                "invalid") if res[k])
    print(f"{title}: {res['accuracy']:.{digits}f}{unit} (95% CI {res['ci95'][0]:.{digits}f}-"
          f"{res['ci95'][1]:.{digits}f}, n={res['n']}{'; ' + apart if apart else ''}) -> {out_dir}")
    circ = score_circular(data, df, out_dir, title)
    if circ is not None:  # a CircularEval file: circular accuracy beside the vanilla one
        res["circular"] = {k: v for k, v in circ.items() if k != "groups"}
        print(f"{title}: circular accuracy {circ['circular_accuracy']:.2f}% (n={circ['n']} questions,"
              f" {circ['rows']} rows) beside vanilla {circ['vanilla_accuracy']:.2f}% on the originals")
    return res


def _own_records(pred_dir: Path) -> dict[Index, dict[str, Any]]:
    return best_records(prediction_files(pred_dir))


def _free(model: Any) -> None:
    del model
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def cmd_run(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    keys = _keys(args.answers, len(args.data))
    for data in args.data:  # a broken build manifest beside a TSV fails before any model runs
        manifest_sources(data)
    shard = Shard.from_env()
    prompt = PromptBuilder.from_file(args.prompt_template)
    judge = None
    if args.judge:
        judge_model = load_model(args.judge)
        judge = getattr(judge_model, "chat", None)
        if judge is None:
            raise EvalUsageError("--judge must be an openai:URL#MODEL spec")
    out = Path(args.out)
    scored: list[Path] = []
    for spec in args.model:
        per_data = parse_spec(spec).kind.startswith("most-frequent")
        model: Model | None = None
        for data, key in zip(args.data, keys, strict=True):
            if model is None or per_data:
                counts = answer_counts(data, key[0] if key else None) if per_data else None
                model = load_model(spec, mode=args.mode, batch=args.batch,
                                   answer_counts=counts,
                                   **({"device": args.device} if args.device else {}))
            pred_dir = predict(data, model, out, answers=key[0] if key else None,
                               prompt=prompt, judge=judge, lenient=args.lenient, shard=shard,
                               chunksize=args.chunksize, keep_na_text=args.keep_na_text,
                               limit=args.limit, spec=spec, judge_spec=args.judge)
            if shard.world > 1:
                if shard.rank != 0:
                    continue
                wait_for_ranks(pred_dir, shard.world)
                merge(pred_dir)
            extra = {"model": model.name, "spec": spec, "split": split_name(data),
                     "data": str(data), "world_size": shard.world}
            if _score(data, _own_records(pred_dir), pred_dir, key, args, extra) is not None:
                scored.append(pred_dir / "scores.json")
        _free(model)
    if len(scored) > 1:
        # One table for every model and split (VAL, and TEST scored with its key).
        table = compare(scored, out / "comparison", scale=args.scale)
        print(f"comparison of {len(scored)} results -> {out / 'comparison'}\n"
              f"{table.head(1).to_string(index=False)}")
    return 0


def cmd_merge(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gmai-eval merge",
                                description="Merge rank shards (and score if --data is given).")
    p.add_argument("pred_dir", nargs="+", help="results/MODEL/SPLIT folder(s)")
    p.add_argument("--data", default=None)
    _common(p)
    args = p.parse_args(argv)
    for d in args.pred_dir:
        path = merge(d)
        print(f"merged -> {path}")
        if args.data:
            key = _load_key(args.answers[0]) if args.answers else None
            _score(args.data, _own_records(Path(d)), Path(d), key, args,
                   {"model": Path(d).parent.name, "split": split_name(args.data)})
    return 0


def cmd_score(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="gmai-eval score",
        description="Score predictions made by gmai-eval, VLMEvalKit or anything else.")
    p.add_argument("--data", required=True, help="the TSV the predictions answer")
    p.add_argument("--pred", required=True,
                   help="a gmai-eval results/MODEL/SPLIT folder, a VLMEvalKit result file "
                        "(.xlsx/.csv/.tsv with index, prediction) or a .jsonl with index and "
                        "reply (or prediction)")
    p.add_argument("--out", default=None,
                   help="where scores go (default: the folder itself, or FILE_scores/ beside "
                        "a file)")
    p.add_argument("--name", default=None, help="model name in the scores (default: from path)")
    p.add_argument("--lenient", action="store_true", help="see gmai-eval --help")
    p.add_argument("--judge", default=None, help="openai:URL#MODEL for undecidable replies")
    _common(p)
    args = p.parse_args(argv)
    key = _load_key(args.answers[0]) if args.answers else None
    pred = Path(args.pred)
    judge = None
    if args.judge:
        judge = getattr(load_model(args.judge), "chat", None)
        if judge is None:
            raise EvalUsageError("--judge must be an openai:URL#MODEL spec")
    loaded = load_predictions(pred, args.data, lenient=args.lenient, judge=judge,
                              keep_na_text=args.keep_na_text)
    print(loaded.summary(str(pred)))
    if pred.is_dir():
        out_dir, name = Path(args.out or pred), args.name or pred.parent.name
    else:
        out_dir = Path(args.out or pred.with_name(pred.stem + "_scores"))
        name = args.name or pred.stem
    res = _score(args.data, loaded.records, out_dir, key, args,
                 {"model": name, "split": split_name(args.data), "predictions": str(pred),
                  "matched": loaded.matched, "prediction_rows": loaded.rows})
    return 0 if res is not None else 1


def cmd_compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gmai-eval compare",
                                description="Compare scored models side by side.")
    p.add_argument("results", nargs="+", help="result folders or scores.json files")
    p.add_argument("--out", default=None, help="write comparison.csv/.md here")
    p.add_argument("--scale", choices=sorted(SCALES), default="percent")
    args = p.parse_args(argv)
    files: list[Path] = []
    for r in args.results:
        path = Path(r)
        files.extend([path] if path.is_file() else sorted(path.rglob("scores.json")))
    if not files:
        raise EvalUsageError(f"no scores.json found under {' '.join(args.results)}")
    table = compare(files, Path(args.out) if args.out else None, scale=args.scale)
    print(table.to_string(index=False))
    return 0


COMMANDS = {"merge": cmd_merge, "score": cmd_score, "compare": cmd_compare, "run": cmd_run}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        return command(argv[1:]) if command else cmd_run(argv)
    except (EvalUsageError, PredictionsError, FingerprintMismatch, LogprobsUnsupported,
            ManifestError) as err:
        print(f"gmai-eval: error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # unreadable files, bad specs, malformed TSVs
        print(f"gmai-eval: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - one line for the user; GMAI_EVAL_DEBUG=1 shows more
        if os.environ.get("GMAI_EVAL_DEBUG"):
            raise
        print(f"gmai-eval: error: {type(err).__name__}: {err} (set GMAI_EVAL_DEBUG=1 for the "
              "traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gmai-eval: interrupted; finished predictions are kept (re-run to resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
