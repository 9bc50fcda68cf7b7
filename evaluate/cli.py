"""The ``gmai-eval`` command.

    gmai-eval --data BUILD/x_VAL.tsv --model SPEC [--model SPEC ...] --out results/
    gmai-eval --data BUILD/x_TEST.tsv --answers x_TEST_key.csv --model SPEC --out results/
    gmai-eval merge results/MODEL/SPLIT [--data X.tsv [--answers KEY]]
    gmai-eval score --data X.tsv --pred results/MODEL/SPLIT [--answers KEY]
    gmai-eval compare results/*/SPLIT [--out results/comparison]

See evaluate/README.md for model specs, outputs, resuming and multi-GPU runs.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path
from typing import Any

from .adapters import Model, load_model, parse_spec
from .circular import score_circular
from .data import Index, answer_counts, load_answer_key
from .prompt import PromptBuilder
from .runner import Shard, merge, predict, split_name, wait_for_ranks
from .scoring import collect, compare, write_scores

log = logging.getLogger("gmai_eval")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers", action="append", default=[],
                   help="answer key (CSV/TSV with index,answer); once, or once per --data")
    p.add_argument("--keep-na-text", action="store_true",
                   help="keep option texts like 'None'/'NA' (VLMEvalKit reads them as empty)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")


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


def _keys(paths: list[str], n_data: int) -> list[dict[Index, str] | None]:
    if not paths:
        return [None] * n_data
    if len(paths) == 1:
        return [load_answer_key(paths[0])] * n_data
    if len(paths) != n_data:
        raise SystemExit("give --answers once, or once per --data")
    return [load_answer_key(p) for p in paths]


def _score(data: str, pred_dir: Path, answers: dict[Index, str] | None, args: Any,
           extra: dict[str, Any]) -> dict[str, Any] | None:
    df = collect(data, pred_dir, answers, keep_na_text=args.keep_na_text)
    if df.empty or df["answer"].isna().all():
        log.warning("%s: no answers (TEST without --answers?): predictions only", data)
        return None
    title = f"{extra.get('model', pred_dir.parent.name)} on {split_name(data)}"
    res = write_scores(df, pred_dir, title, args.bootstrap, args.seed, extra)
    log.info("%s: accuracy %.2f%% [%.2f, %.2f] (n=%d)", title, res["accuracy"], *res["ci95"],
             res["n"])
    print(f"{title}: {res['accuracy']:.2f}% (95% CI {res['ci95'][0]:.2f}-{res['ci95'][1]:.2f},"
          f" n={res['n']}) -> {pred_dir}")
    circ = score_circular(data, df, pred_dir, title)
    if circ is not None:
        res["circular"] = {k: v for k, v in circ.items() if k != "groups"}
        print(f"{title}: circular accuracy {circ['circular_accuracy']:.2f}% (n={circ['n']} questions,"
              f" {circ['rows']} rows) beside vanilla {circ['vanilla_accuracy']:.2f}% on the originals")
    return res


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
    shard = Shard.from_env()
    prompt = PromptBuilder.from_file(args.prompt_template)
    judge = None
    if args.judge:
        judge_model = load_model(args.judge)
        judge = getattr(judge_model, "chat", None)
        if judge is None:
            raise SystemExit("--judge must be an openai:URL#MODEL spec")
    out = Path(args.out)
    scored: dict[str, list[Path]] = {}
    for spec in args.model:
        per_data = parse_spec(spec).kind.startswith("most-frequent")
        model: Model | None = None
        for data, key in zip(args.data, keys, strict=True):
            if model is None or per_data:
                model = load_model(spec, mode=args.mode, batch=args.batch,
                                   answer_counts=answer_counts(data, key) if per_data else None,
                                   **({"device": args.device} if args.device else {}))
            pred_dir = predict(data, model, out, answers=key, prompt=prompt, judge=judge,
                               lenient=args.lenient, shard=shard, chunksize=args.chunksize,
                               keep_na_text=args.keep_na_text, limit=args.limit)
            if shard.world > 1:
                if shard.rank != 0:
                    continue
                wait_for_ranks(pred_dir, shard.world)
                merge(pred_dir)
            extra = {"model": model.name, "spec": spec, "split": split_name(data),
                     "data": str(data), "world_size": shard.world}
            if _score(data, pred_dir, key, args, extra) is not None:
                scored.setdefault(split_name(data), []).append(pred_dir / "scores.json")
        _free(model)
    for split, files in scored.items():
        if len(files) > 1:
            table = compare(files, out / f"comparison_{split}")
            print(f"comparison of {len(files)} models on {split} -> "
                  f"{out / f'comparison_{split}'}\n{table.head(1).to_string(index=False)}")
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
            key = load_answer_key(args.answers[0]) if args.answers else None
            _score(args.data, Path(d), key, args, {"model": Path(d).parent.name,
                                                    "split": split_name(args.data)})
    return 0


def cmd_score(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gmai-eval score", description="Score stored predictions.")
    p.add_argument("--data", required=True)
    p.add_argument("--pred", required=True, help="results/MODEL/SPLIT folder")
    _common(p)
    args = p.parse_args(argv)
    key = load_answer_key(args.answers[0]) if args.answers else None
    res = _score(args.data, Path(args.pred), key, args,
                 {"model": Path(args.pred).parent.name, "split": split_name(args.data)})
    return 0 if res is not None else 1


def cmd_compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gmai-eval compare",
                                description="Compare scored models side by side.")
    p.add_argument("results", nargs="+", help="result folders or scores.json files")
    p.add_argument("--out", default=None, help="write comparison.csv/.md here")
    args = p.parse_args(argv)
    files: list[Path] = []
    for r in args.results:
        path = Path(r)
        files.extend([path] if path.is_file() else sorted(path.rglob("scores.json")))
    if not files:
        raise SystemExit("no scores.json found")
    table = compare(files, Path(args.out) if args.out else None)
    print(table.to_string(index=False))
    return 0


COMMANDS = {"merge": cmd_merge, "score": cmd_score, "compare": cmd_compare, "run": cmd_run}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return cmd_run(argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
