"""Reading stage (driver side): every source's items -> case metadata and image files.

Sources whose cache entry still holds are reused as they are; the others are cut into
:class:`~gmai_build.work.Task` chunks that the executor runs, in order, with a bounded number in
flight. Each task writes its images into the source's folder (the cache entry being made, or
scratch space with ``--no-cache``); the driver only files what comes back: case metadata and
where each image lies, checksums, entries. Results are in source and item order whatever the
executor or worker count, so the build is byte-identical across them.
"""

from __future__ import annotations

import sys
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .cache import DROPPED, DroppedIds, SourceCache, SourceResult, fingerprint
from .config import Config
from .converters import Item
from .errors import BuildError
from .executors import Executor
from .lifecycle import failpoint
from .manifest import ManifestRecord
from .report import SKIPPED
from .samples import Case, LabelSeen
from .selection import RenderRule, prefilter_items
from .sources import SourceContext
from .work import Task, input_checksums, run_task


@dataclass
class SourceRun:
    """A source being read by this build."""

    ctx: SourceContext
    items: list[Item]
    key: str  # cache fingerprint
    rule: RenderRule
    folder: Path  # where its tasks write their images
    dropped: DroppedIds
    result: SourceResult
    shared: set[str] = field(default_factory=set)  # files named by several items
    skipped_files: set[str] = field(default_factory=set)


def chunk_size(remaining: int, workers: int) -> int:
    """Items in the next task, given the items of the build not yet sent: up to 16 (to amortise
    the context each task carries), fewer as the end nears, so that the workers run out of work
    together instead of one finishing a long last task alone (guided scheduling)."""
    return max(1, min(16, remaining // (4 * max(1, workers))))


def read_sources(
    contexts: dict[str, SourceContext], config: Config, previous: Mapping[str, ManifestRecord],
    executor: Executor, cache: SourceCache, progress: bool, build_key: dict[str, object],
) -> list[SourceResult]:
    """The reading result of every source, in config order."""
    b = config.build
    results: dict[str, SourceResult] = {}
    runs: list[SourceRun] = []
    for name, ctx in contexts.items():
        items = prefilter_items(ctx, ctx.items, b.per_label_cap, b.seed, previous)
        key = fingerprint(ctx, ctx.items, build_key)
        read_ids = frozenset(ctx.privacy.sample_id(name, i.key) for i in items)  # no paths kept
        hit = cache.load(name, key, read_ids, previous)
        if hit is not None:
            results[name] = hit
            continue
        always = frozenset(cid for cid, r in previous.items() if r.source == name)
        uses = Counter(p for item in items for p in item.paths)
        folder = cache.open_folder(name, key)
        run = SourceRun(ctx.for_workers(), items, key, RenderRule(b.per_label_cap, b.seed, always=always),
                        folder, DroppedIds(folder / DROPPED),
                        SourceResult(name, report=list(ctx.report),
                                     items_read=read_ids),
                        shared={p for p, n in uses.items() if n > 1})
        results[name] = run.result
        if items:
            runs.append(run)
        else:  # every item was skipped at discovery: nothing to read
            _finish(run, cache)
    if runs:
        _run_tasks(runs, executor, cache, progress)
    return [results[name] for name in contexts]


def _tasks(runs: list[SourceRun], workers: int, sent: deque) -> Iterator[Task]:
    """Chunks of every source in order; each carries its source's rule as it is now."""
    remaining = sum(len(run.items) for run in runs)
    for run in runs:
        start = number = 0
        while start < len(run.items):
            chunk = run.items[start:start + chunk_size(remaining, workers)]
            start += len(chunk)
            remaining -= len(chunk)
            images = f"images-{number:06d}.b64"
            number += 1
            sent.append((run, chunk, images))
            yield Task(run.ctx, chunk, run.rule.snapshot(),
                       [[p for p in item.paths if p not in run.shared] for item in chunk],
                       run.folder / images)


def _run_tasks(runs: list[SourceRun], executor: Executor, cache: SourceCache,
               progress: bool) -> None:
    seen: set[str] = set()
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
                    if c.case_id in seen:
                        raise BuildError(f"two cases share the id {c.case_id} ({c.sample_id})",
                                         source=out.name)
                    seen.add(c.case_id)
                    keep(out, run, c, images)
                bar.update(1)
                failpoint("reading")
            if chunk[-1] is run.items[-1]:
                _finish(run, cache)
    finally:
        results.close()
        bar.close()
        for run in runs:
            run.dropped.close()


def keep(out: SourceResult, run: SourceRun, c: Case, images: str) -> None:
    """File one case: its PNG, and its metadata if it may be asked about (memory then grows
    with what the cap can select, not with the corpus)."""
    out.n_cases += 1
    out.seen.add(LabelSeen.of(c))
    if c.skipped:
        out.skipped[f"{c.source}: {c.skipped}"] += 1
    if c.rendered:
        out.refs[c.case_id] = (images, *c.image)
        out.image_sha256[c.case_id] = c.png_sha256  # hashed in the worker
        run.rule.seen(c)
    if c.rendered or c.case_id in run.rule.always:
        out.cases.append(c)
    else:  # (on disk, for the cache's check that a later build's previous questions are here)
        run.dropped.add(c.case_id)


def _finish(run: SourceRun, cache: SourceCache) -> None:
    """A source is read: hash the files several items share (once), store it in the cache."""
    run.dropped.close()
    shared = sorted(run.shared - run.skipped_files)
    run.result.inputs.update(input_checksums(run.ctx, shared))
    run.result.inputs = dict(sorted(run.result.inputs.items()))
    run.result.images = run.folder
    cache.store(run.result, run.key)
