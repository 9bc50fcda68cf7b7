"""Run a model over a TSV: resumable, append-only predictions, optional data-parallel shards.

Predictions go to ``OUT/<model>/<split>/predictions.jsonl`` (one JSON object per item), or to
``predictions.rank{R}.jsonl`` for rank R of a data-parallel run. Each batch is appended,
flushed and fsync'ed as soon as it completes, so a crash or kill loses at most the batch in
flight. A re-run reads every ``predictions*.jsonl`` in the folder, skips finished items (failed
API calls are retried), cuts off a partially written last line, and appends the rest.

Invalid rows (no options, an answer that is not an option, an undecodable image, an index that
occurs twice) never reach the model: each gets a record with ``method: "invalid"`` and its
reason, and is reported at the end of the run.

Fingerprint: ``run.json`` in the folder records the TSV's SHA-256, the model spec and the
prompt/extraction settings. A re-run whose fingerprint differs stops with a message saying
what changed instead of mixing predictions for different questions or settings.

Sharding: rank R of W takes the rows whose 0-based row number ``i`` has ``i % W == R``
(``RANK``/``WORLD_SIZE`` from torchrun). Rank 0 waits for every rank's ``.done`` marker, then
merges the shards into ``predictions.jsonl``; ``gmai-eval merge`` does the same by hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .adapters import Model, Output, prediction_spec
from .data import Index, Item, duplicate_indices, iter_items
from .extract import extract
from .prompt import PromptBuilder

log = logging.getLogger(__name__)
MERGED = "predictions.jsonl"
FINGERPRINT = "run.json"


class FingerprintMismatch(RuntimeError):
    """A prediction folder holds predictions for another TSV, model or prompt."""


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """SHA-256 of a file, read in 4 MiB blocks (a 9 GB TSV takes seconds, not memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def check_fingerprint(pred_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Record ``fingerprint`` in ``pred_dir/run.json``, or stop if the stored one differs.

    A folder with predictions but no ``run.json`` (made before fingerprints existed) is adopted
    with a warning.
    """
    path = pred_dir / FINGERPRINT
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FingerprintMismatch(f"{path} is unreadable ({err}); remove it or use a new "
                                      "--out") from err
        changed = [k for k in fingerprint if stored.get(k) != fingerprint[k]]
        if changed:
            what = "; ".join(f"{k}: stored {stored.get(k)!r}, now {fingerprint[k]!r}"
                             for k in changed)
            raise FingerprintMismatch(
                f"{pred_dir} holds predictions made with a different {', '.join(changed)} "
                f"({what}). Refusing to resume: use a new --out (or name= in the model spec), "
                "or delete that folder to start over.")
        return
    if prediction_files(pred_dir):
        log.warning("%s has predictions but no %s (older gmai-eval): adopting them for this "
                    "TSV and model", pred_dir, FINGERPRINT)
    tmp = pred_dir / f".{FINGERPRINT}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(fingerprint, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Shard:
    """This process's place in a data-parallel run."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        """Read torchrun's ``RANK``/``WORLD_SIZE`` (defaults: a single process)."""
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))

    @property
    def filename(self) -> str:
        return MERGED if self.world == 1 else f"predictions.rank{self.rank}.jsonl"


def split_name(data: str | Path) -> str:
    """The split's name: the TSV's file name without extension."""
    return Path(data).name.removesuffix(".tsv").removesuffix(".TSV")


def repair_tail(path: Path) -> None:
    """Cut a partially written last line (a kill mid-write) so appends start on a new line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        # Scan back for the last newline.
        pos, block = size, 1 << 16
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            pos = start
        f.truncate(0)


def read_records(path: Path) -> list[dict[str, Any]]:
    """All complete JSON records of a predictions file (a broken last line is ignored)."""
    records = []
    if not path.exists():
        return records
    with path.open(encoding="utf-8") as f:
        lines = f.readlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n != len(lines) - 1 or line.endswith("\n"):
                log.warning("%s:%d: unreadable record skipped", path, n + 1)
    return records


def best_records(paths: Iterable[Path]) -> dict[Index, dict[str, Any]]:
    """One record per index: the last successful one, else the last failed one."""
    best: dict[Index, dict[str, Any]] = {}
    for path in paths:
        for rec in read_records(path):
            old = best.get(rec["index"])
            if old is None or not rec.get("error") or old.get("error"):
                best[rec["index"]] = rec
    return best


def prediction_files(pred_dir: Path) -> list[Path]:
    """The merged file first, then the rank shards."""
    merged = pred_dir / MERGED
    ranks = sorted(pred_dir.glob("predictions.rank*.jsonl"))
    return ([merged] if merged.exists() else []) + ranks


def finished(pred_dir: Path) -> set[Index]:
    """Indexes that already have a successful prediction (or were found invalid)."""
    return {i for i, r in best_records(prediction_files(pred_dir)).items() if not r.get("error")}


def make_record(item: Item, out: Output, prompt_question: str,
                judge: Callable[[str], str] | None, lenient: bool) -> dict[str, Any]:
    """Turn a model output into a stored record (extracting the letter from free text)."""
    rec: dict[str, Any] = {"index": item.index, "ordinal": item.ordinal}
    if out.invalid:
        rec.update(prediction=None, method="invalid", invalid=out.invalid)
    elif out.error:
        rec.update(prediction=None, method="error", error=out.error)
    elif out.letter is not None:
        rec.update(prediction=out.letter, method=out.method or "direct")
    else:
        ext = extract(out.reply or "", dict(item.options), prompt_question, judge, lenient)
        rec.update(prediction=ext.letter, method=ext.method)
    rec["reply"] = out.reply
    if out.scores is not None:
        rec["scores"] = out.scores
    rec["answer"] = item.answer
    return rec


def item_problem(item: Item, duplicates: set[Index]) -> str | None:
    """Why ``item`` is invalid (see ``Item.problem``), duplicates of its index included."""
    if item.index in duplicates:
        return f"index {item.index!r} occurs more than once in the TSV"
    return item.problem()


def _write(f: Any, records: list[dict[str, Any]]) -> None:
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    f.flush()
    os.fsync(f.fileno())


def predict(
    data: str | Path,
    model: Model,
    out_dir: str | Path,
    *,
    answers: dict[Index, str] | None = None,
    prompt: PromptBuilder | None = None,
    judge: Callable[[str], str] | None = None,
    lenient: bool = False,
    shard: Shard | None = None,
    chunksize: int = 32,
    keep_na_text: bool = False,
    limit: int | None = None,
    spec: str | None = None,
    judge_spec: str | None = None,
) -> Path:
    """Predict every unfinished item of this shard; return the prediction folder.

    Raises ``FingerprintMismatch`` when the folder holds predictions for another TSV, model
    spec or prompt/extraction setting.
    """
    shard = shard or Shard()
    prompt = prompt or PromptBuilder()
    pred_dir = Path(out_dir) / model.name / split_name(data)
    pred_dir.mkdir(parents=True, exist_ok=True)
    check_fingerprint(pred_dir, {
        "tsv_sha256": file_sha256(data),
        "model": prediction_spec(spec) if spec else model.name,
        "prompt": prompt.fingerprint(),
        "lenient": lenient,
        "judge": judge_spec,
        "keep_na_text": keep_na_text,
    })
    duplicates = duplicate_indices(data)
    invalid: list[tuple[Index, str]] = []
    (pred_dir / f"rank{shard.rank}.done").unlink(missing_ok=True)
    done = finished(pred_dir)
    path = pred_dir / shard.filename
    repair_tail(path)
    n_new, t0, last_log = 0, time.monotonic(), time.monotonic()
    with path.open("a", encoding="utf-8") as f:
        batch: list[Item] = []

        def flush() -> None:
            nonlocal n_new
            problems = [item_problem(i, duplicates) for i in batch]
            invalid.extend((i.index, p) for i, p in zip(batch, problems, strict=True) if p)
            ok = [i for i, p in zip(batch, problems, strict=True) if not p]
            answered = iter(model.predict(ok, [prompt(i) for i in ok]) if ok else [])
            outs = [Output(invalid=p) if p else next(answered) for p in problems]
            _write(f, [make_record(i, o, i.question, judge, lenient)
                       for i, o in zip(batch, outs, strict=True)])
            n_new += len(batch)
            batch.clear()

        items = iter_items(data, chunksize=chunksize, answers=answers,
                           keep_na_text=keep_na_text, shard=(shard.rank, shard.world))
        for item in items:
            if item.index in done:
                continue
            if limit is not None and n_new + len(batch) >= limit:
                break
            batch.append(item)
            if len(batch) >= model.batch_size:
                flush()
                if time.monotonic() - last_log > 30:
                    rate = n_new / (time.monotonic() - t0)
                    log.info("%s: %d new predictions (%.2f/s)", model.name, n_new, rate)
                    last_log = time.monotonic()
        if batch:
            flush()
    log.info("%s on %s: %d new, %d already done (rank %d/%d)", model.name, split_name(data),
             n_new, len(done), shard.rank, shard.world)
    if invalid:
        log.warning("%s: %d invalid rows reported and skipped (not asked, not scored): %s",
                    split_name(data), len(invalid),
                    "; ".join(f"index {i}: {p}" for i, p in invalid[:10]))
    marker = {"run_id": os.environ.get("TORCHELASTIC_RUN_ID", ""), "time": time.time()}
    (pred_dir / f"rank{shard.rank}.done").write_text(json.dumps(marker))
    return pred_dir


def wait_for_ranks(pred_dir: Path, world: int, timeout: float = 7 * 24 * 3600,
                   poll: float = 2.0) -> None:
    """Block until every rank of this run has written its ``.done`` marker."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    deadline = time.monotonic() + timeout
    while True:
        missing = []
        for r in range(world):
            marker = pred_dir / f"rank{r}.done"
            try:
                if json.loads(marker.read_text()).get("run_id", "") != run_id:
                    missing.append(r)
            except (FileNotFoundError, json.JSONDecodeError):
                missing.append(r)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"ranks {missing} did not finish")
        time.sleep(poll)


def merge(pred_dir: str | Path) -> Path:
    """Merge ``predictions.jsonl`` and all rank shards into ``predictions.jsonl`` (atomic)."""
    pred_dir = Path(pred_dir)
    best = best_records(prediction_files(pred_dir))
    records = sorted(best.values(), key=lambda r: r.get("ordinal", 0))
    tmp = pred_dir / (MERGED + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        _write(f, records)
    os.replace(tmp, pred_dir / MERGED)
    return pred_dir / MERGED
