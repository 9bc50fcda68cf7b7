"""Read predictions made anywhere, for ``gmai-eval score``: ours, VLMEvalKit's, plain JSONL.

Accepted ``--pred``:

- a ``gmai-eval`` result folder (``predictions*.jsonl``, and ``run.json`` whose TSV fingerprint
  must match the TSV being scored);
- a VLMEvalKit result file (``.xlsx``, ``.csv``, ``.tsv`` or ``.json``) with ``index`` and
  ``prediction``
  (the model's raw reply, as VLMEvalKit stores it);
- a JSONL file whose records have ``index`` and ``reply`` (free text) or ``prediction``, or
  lmms-eval's ``--log_samples`` records (``doc.index`` and ``filtered_resps``).

Records of our own format (they carry ``method``) keep their letter. Everything else is a reply
and goes through the same extraction as a live run (VLMEvalKit's exact matching; ``--lenient``
and ``--judge`` apply). The TSV's options are used, and where the prediction file repeats the
question or option texts they must equal the TSV's: a result file made for other questions
under the same indexes is refused instead of being scored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .data import Index, is_missing, iter_metadata, normalize_index
from .extract import extract
from .runner import FINGERPRINT, best_records, file_sha256, prediction_files

TABLE_SUFFIXES = (".xlsx", ".csv", ".tsv")


class PredictionsError(ValueError):
    """Predictions that cannot be scored against this TSV (the message says why)."""


@dataclass
class Loaded:
    """Prediction records by index, and how the file matched the TSV."""

    records: dict[Index, dict[str, Any]]
    rows: int  # prediction rows read
    matched: int  # of those, rows whose index is a question of the TSV
    questions: int  # questions in the TSV
    unmatched: list[Index] = field(default_factory=list)

    def summary(self, source: str) -> str:
        extra = (f"; {len(self.unmatched)} prediction rows have no such index in the TSV "
                 f"(e.g. {self.unmatched[:5]})" if self.unmatched else "")
        return (f"{source}: {self.matched} of {self.rows} prediction rows matched the TSV's "
                f"{self.questions} questions{extra}")


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".xlsx":
        try:
            return pd.read_excel(path)
        except ImportError as err:
            raise PredictionsError(f"{path}: reading .xlsx needs openpyxl (pip install "
                                   "openpyxl)") from err
    sep = "\t" if path.suffix == ".tsv" else ","
    return pd.read_csv(path, sep=sep, keep_default_na=False, dtype=str)


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as err:
                raise PredictionsError(f"{path}:{n}: not a JSON record ({err})") from err
            if not isinstance(rec, dict):
                raise PredictionsError(f"{path}:{n}: expected a JSON object")
            rows.append(_lmms_eval_sample(rec))
    return pd.DataFrame(rows)


def _lmms_eval_sample(rec: dict[str, Any]) -> dict[str, Any]:
    """An lmms-eval ``--log_samples`` record (``doc``, ``filtered_resps``) as index + reply;
    other records unchanged."""
    doc = rec.get("doc")
    if "index" in rec or not isinstance(doc, dict) or "index" not in doc:
        return rec
    reply: Any = rec.get("filtered_resps", rec.get("resps"))
    while isinstance(reply, list) and reply:
        reply = reply[0]
    return {"index": doc["index"], "reply": "" if reply is None or reply == [] else str(reply),
            **{k: doc[k] for k in ("question", *"ABCDE") if k in doc}}


def _read_json(path: Path) -> pd.DataFrame:
    """VLMEvalKit's ``PRED_FORMAT=json`` result: a JSON list of records."""
    try:
        records = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except ValueError as err:
        raise PredictionsError(f"{path}: not JSON ({err})") from err
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise PredictionsError(f"{path}: expected a JSON list of records (VLMEvalKit's "
                               "PRED_FORMAT=json)")
    return pd.DataFrame(records)


def _norm_text(value: Any) -> str:
    return "" if is_missing(value) else " ".join(str(value).split())


def load_predictions(
    pred: str | Path,
    data: str | Path,
    *,
    lenient: bool = False,
    judge: Callable[[str], str] | None = None,
    keep_na_text: bool = False,
) -> Loaded:
    """Prediction records for the questions of ``data``; raises ``PredictionsError``."""
    pred = Path(pred)
    meta: dict[Index, dict[str, Any]] = {}
    for chunk in iter_metadata(data, keep_na_text=keep_na_text):
        letters = [c for c in chunk.columns if len(c) == 1 and c.isupper()]
        for rec in chunk.to_dict("records"):
            meta[normalize_index(rec["index"])] = {
                "question": _norm_text(rec.get("question")),
                "options": {k: str(rec[k]) for k in letters if not is_missing(rec[k])},
            }
    if pred.is_dir():
        records = _own_folder(pred, data)
        frame = None
        for rec in records.values():  # bare replies (no method) are extracted like any reply
            info = meta.get(rec["index"])
            if "method" not in rec and info is not None:
                ext = extract(str(rec.get("reply", rec.get("prediction"))),
                              dict(info["options"]), info["question"], judge, lenient)
                rec.update(prediction=ext.letter, method=ext.method)
    elif not pred.exists():
        raise PredictionsError(f"{pred}: no such file or folder")
    elif pred.suffix == ".jsonl":
        frame = _read_jsonl(pred)
    elif pred.suffix in TABLE_SUFFIXES:
        frame = _read_table(pred)
    elif pred.suffix == ".json":
        frame = _read_json(pred)
    else:
        raise PredictionsError(f"{pred}: unknown predictions format (give a gmai-eval result "
                               "folder, .jsonl, or a VLMEvalKit .xlsx/.csv/.tsv/.json)")
    if frame is not None:
        records = _from_frame(pred, frame, meta, lenient, judge)
    unmatched = [i for i in records if i not in meta]
    matched = {i: r for i, r in records.items() if i in meta}
    loaded = Loaded(matched, len(records), len(matched), len(meta), unmatched)
    if not matched:
        raise PredictionsError(
            f"{pred}: none of its {len(records)} prediction rows has an index of {data} "
            f"(e.g. prediction indexes {list(records)[:5]}, TSV indexes {list(meta)[:5]}); "
            "are these predictions for another split or build?")
    return loaded


def _own_folder(pred_dir: Path, data: str | Path) -> dict[Index, dict[str, Any]]:
    files = prediction_files(pred_dir)
    if not files:
        others = sorted(p.name for p in pred_dir.iterdir()
                        if p.suffix in (*TABLE_SUFFIXES, ".jsonl"))
        hint = f"; give the file itself, e.g. --pred {pred_dir / others[0]}" if others else ""
        raise PredictionsError(f"{pred_dir}: no predictions*.jsonl in this folder (not a "
                               f"gmai-eval result folder){hint}")
    stamp = pred_dir / FINGERPRINT
    if stamp.exists():
        stored = json.loads(stamp.read_text(encoding="utf-8")).get("tsv_sha256")
        if stored and stored != file_sha256(data):
            raise PredictionsError(
                f"{pred_dir} holds predictions for a different TSV than {data} (SHA-256 "
                f"{stored[:12]}... recorded in {FINGERPRINT}, {file_sha256(data)[:12]}... now)")
    return best_records(files)


def _from_frame(pred: Path, frame: pd.DataFrame, meta: dict[Index, dict[str, Any]],
                lenient: bool, judge: Callable[[str], str] | None) -> dict[Index, dict[str, Any]]:
    # VLMEvalKit lower-cases every column name except the option letters.
    frame = frame.rename(columns={c: c if c in "ABCDEFGHIJ" and len(c) == 1 else c.lower()
                                  for c in frame.columns})
    text_col = "reply" if "reply" in frame.columns else "prediction"
    if "index" not in frame.columns or text_col not in frame.columns:
        raise PredictionsError(f"{pred}: needs columns 'index' and 'prediction' (VLMEvalKit "
                               f"result) or 'reply'; found {list(frame.columns)[:12]}")
    disagree: list[str] = []
    records: dict[Index, dict[str, Any]] = {}
    for n, rec in enumerate(frame.to_dict("records")):
        index = normalize_index(rec["index"])
        info = meta.get(index)
        if info is not None:
            disagree.extend(_disagreement(index, rec, info))
        if "method" in rec and "prediction" in rec and not is_missing(rec.get("method")):
            out = {k: v for k, v in rec.items() if not is_missing(v)}
            out.setdefault("prediction", None)
        else:
            # VLMEvalKit: data['prediction'] = [str(x) for x in data['prediction']]
            reply = str(rec.get(text_col))
            if info is None:
                out = {"prediction": None, "method": "imported", "reply": reply}
            else:
                ext = extract(reply, dict(info["options"]), info["question"], judge, lenient)
                out = {"prediction": ext.letter, "method": ext.method, "reply": reply}
        out["index"] = index
        out["ordinal"] = n
        records[index] = out
    if disagree:
        raise PredictionsError(
            f"{pred} and the TSV disagree on {len(disagree)} field(s) under the same index, "
            f"so these predictions were made for other questions: {'; '.join(disagree[:5])}")
    return records


def _disagreement(index: Index, rec: dict[str, Any], info: dict[str, Any]) -> list[str]:
    out = []
    if "question" in rec and _norm_text(rec["question"]) != info["question"]:
        out.append(f"index {index}: question {_norm_text(rec['question'])[:60]!r} vs "
                   f"{info['question'][:60]!r}")
    for letter, text in info["options"].items():
        if letter in rec and not is_missing(rec[letter]) and _norm_text(rec[letter]) != \
                _norm_text(text):
            out.append(f"index {index}: option {letter} {_norm_text(rec[letter])[:40]!r} vs "
                       f"{_norm_text(text)[:40]!r}")
    return out
