"""Reading stage (driver side): every source's items -> case metadata and image files.

Sources whose cache entry still holds are reused as they are; the others are cut into
:class:`~gmai_build.work.Task` chunks that the executor runs, in order, with a bounded number in
flight. Each task writes its images into the source's folder (the cache entry being made, or
scratch space with ``--no-cache``); the driver only files what comes back: the metadata of each
case that may be asked about goes to the build's store (:mod:`gmai_build.store`) and to the
cache entry's case log, where each image lies with it; labels seen, counts, checksums and
entries stay with the source's result. Results are in source and item order whatever the
executor or worker count, so the build is byte-identical across them.
"""

from __future__ import annotations

import sqlite3
import sys
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .cache import (
    CASES,
    DROPPED,
    CachedSource,
    CaseLog,
    DroppedIds,
    SourceCache,
    SourceResult,
    StaleEntry,
    fingerprint,
)
from .config import Config
from .converters import Item
from .errors import BuildError
from .executors import Executor
from .lifecycle import failpoint
from .report import SKIPPED
from .samples import Case, LabelSeen
from .selection import RenderRule, prefilter_items
from .sources import SourceContext
from .store import BuildStore, PreviousQuestions, filing_order
from .work import Task, input_checksums, run_task


@dataclass
class SourceRun:
    """A source being read by this build."""

    ctx: SourceContext
    index: int  # its place in the config (the store files cases in that order)
    items: list[Item]
    key: str  # cache fingerprint
    rule: RenderRule
    folder: Path  # where its tasks write their images
    dropped: DroppedIds
    log: CaseLog  # the cache entry's copy of its kept cases
    result: SourceResult
    shared: set[str] = field(default_factory=set)  # files named by several items
    skipped_files: set[str] = field(default_factory=set)


def chunk_size(source_items: int, remaining: int, workers: int) -> int:
    """Items in the next task of a source of ``source_items``, given the items of the build not
    yet sent: up to 16 (to amortise the context each task carries), at least 4 tasks per
    worker and source (a source of few heavy items, such as CT volumes, is spread over every
    worker), and fewer as the end of the build nears, so that the workers run out of work
    together instead of one finishing a long last task alone (guided scheduling)."""
    spread = 4 * max(1, workers)
    return max(1, min(16, source_items // spread, remaining // spread))


def read_sources(
    contexts: dict[str, SourceContext], config: Config, previous: PreviousQuestions,
    executor: Executor, cache: SourceCache, progress: bool, build_key: dict[str, object],
    store: BuildStore,
) -> list[SourceResult]:
    """The reading result of every source, in config order; their cases go to ``store``."""
    b = config.build
    results: dict[str, SourceResult] = {}
    runs: list[SourceRun] = []
    for index, (name, ctx) in enumerate(contexts.items()):
        items = prefilter_items(ctx, ctx.items, b.per_label_cap, b.seed, previous)
        key = fingerprint(ctx, ctx.items, build_key)
        read_ids = frozenset(ctx.privacy.sample_id(name, i.key) for i in items)  # no paths kept
        hit = _reuse(cache.load(name, key, read_ids, previous), index, store, b.seed)
        if hit is not None:
            results[name] = hit
            continue
        always = previous.of_source(name)
        uses = Counter(p for item in items for p in item.paths)
        folder = cache.open_folder(name, key)
        run = SourceRun(ctx.for_workers(), index, items, key,
                        RenderRule(b.per_label_cap, b.seed, always=always),
                        folder, DroppedIds(folder / DROPPED),
                        CaseLog(folder / CASES if cache.enabled else None),
                        SourceResult(name, report=list(ctx.report), items_read=read_ids),
                        shared={p for p, n in uses.items() if n > 1})
        results[name] = run.result
        if items:
            runs.append(run)
        else:  # every item was skipped at discovery: nothing to read
            _finish(run, cache)
    if runs:
        _run_tasks(runs, executor, cache, progress, store, b.seed)
    store.flush()
    return [results[name] for name in contexts]


def _reuse(hit: CachedSource | None, index: int, store: BuildStore,
           seed: int) -> SourceResult | None:
    """A cache hit's cases into the store; None (nothing filed) if the entry turns out stale."""
    if hit is None:
        return None
    try:
        for n, (case, image_file) in enumerate(hit.cases()):
            store.add_case(case, filing_order(index, n), seed, image_file)
    except StaleEntry:
        store.remove_source(hit.result.name)
        return None
    return hit.result


def _tasks(runs: list[SourceRun], workers: int, sent: deque) -> Iterator[Task]:
    """Chunks of every source in order; each carries its source's rule as it is now."""
    remaining = sum(len(run.items) for run in runs)
    for run in runs:
        start = number = 0
        while start < len(run.items):
            chunk = run.items[start:start + chunk_size(len(run.items), remaining, workers)]
            start += len(chunk)
            remaining -= len(chunk)
            images = f"images-{number:06d}.png"
            number += 1
            sent.append((run, chunk, images))
            yield Task(run.ctx, chunk, run.rule.snapshot(),
                       [[p for p in item.paths if p not in run.shared] for item in chunk],
                       run.folder / images)


def _run_tasks(runs: list[SourceRun], executor: Executor, cache: SourceCache,
               progress: bool, store: BuildStore, seed: int) -> None:
    sent: deque = deque()
    total = sum(len(r.items) for r in runs)
    bar = tqdm(total=total, unit="item", disable=not progress, file=sys.stderr)
    results = executor.imap(run_task, _tasks(runs, executor.workers, sent))
    try:
        for item_results in results:
            run, chunk, images = sent.popleft()
            out = run.result
            for item, got in zip(chunk, item_results):
                out.report.extend(got.report)
                out.inputs.update(got.inputs)
                if any(e.kind == SKIPPED for e in got.report) and not got.cases:
                    run.skipped_files.update(item.paths)
                for c in got.cases:
                    keep(run, c, images, store, seed)
                bar.update(1)
                failpoint("reading")
            if chunk[-1] is run.items[-1]:
                _finish(run, cache)
        store.flush()
    except sqlite3.IntegrityError as exc:  # a case id filed twice
        raise BuildError(f"two cases were filed with one id ({exc})") from None
    finally:
        results.close()
        bar.close()
        for run in runs:
            run.dropped.close()
            run.log.close()


def keep(run: SourceRun, c: Case, images: str, store: BuildStore, seed: int) -> None:
    """File one case: its metadata goes to the store if it may be asked about (memory then
    holds neither the corpus's cases nor what the cap selects), its label to the pools."""
    out = run.result
    out.n_cases += 1
    out.seen.add(LabelSeen.of(c))
    if c.skipped:
        out.skipped[f"{c.source}: {c.skipped}"] += 1
    if c.rendered:
        out.image_files.add(images)
        run.rule.seen(c)
    if c.rendered or c.case_id in run.rule.always:
        image_file = images if c.rendered else None
        store.add_case(c, filing_order(run.index, out.n_kept), seed, image_file)
        run.log.add(c, image_file)
        out.n_kept += 1
    else:  # (on disk, for the cache's check that a later build's previous questions are here)
        run.dropped.add(c.case_id)


def _finish(run: SourceRun, cache: SourceCache) -> None:
    """A source is read: hash the files several items share (once), store it in the cache."""
    run.dropped.close()
    run.log.close()
    shared = sorted(run.shared - run.skipped_files)
    run.result.inputs.update(input_checksums(run.ctx, shared))
    run.result.inputs = dict(sorted(run.result.inputs.items()))
    run.result.images = run.folder
    cache.store(run.result, run.key)
