"""The build: sources.yaml -> discovery -> reading -> selection -> questions -> split -> outputs.

Each stage lives in its own module and works on plain, typed values:

============================  ===============================================================
:mod:`~gmai_build.sources`    discovery: contexts, items, known labels (fails before reading)
:mod:`~gmai_build.reading`    cache lookups, worker tasks on an executor, PNG files
:mod:`~gmai_build.work`       worker side: read, normalise, standardise, select, render
:mod:`~gmai_build.executors`  where tasks run: this process, a spawned pool, Ray
:mod:`~gmai_build.store`      the build's working set on disk: cases, questions (SQLite)
:mod:`~gmai_build.selection`  the per-label cap, on metadata
:mod:`~gmai_build.split`      VAL/TEST by group, duplicates kept together
:mod:`~gmai_build.asking`     questions, distractors, answer letters, reuse, numbering
:mod:`~gmai_build.records`    the manifest record, streamed in index order; TSV rows
:mod:`~gmai_build.outputs`    TSVs, answer key and manifest from that stream
:mod:`~gmai_build.provenance` build.json
============================  ===============================================================

This module only runs them in order, inside the output folder's lock, and publishes the staging
folder in one atomic step (:mod:`gmai_build.outdir`). Cases and questions live in the store,
not in lists: the driver's memory does not grow with the corpus.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .asking import CaseBook, make_questions
from .assembly import ImageSlice
from .cache import CACHE_DIR, SourceCache, SourceResult, shared_files_key
from .circular import remove_stale as remove_stale_circular
from .circular import write_circular
from .config import Config
from .coverage import CoverageCounts, coverage_lines, write_coverage
from .errors import BuildError
from .executors import WORKER_STAGE, Executor, default_workers, executor
from .manifest import MANIFEST, ManifestRecord
from .outdir import OutputFolder
from .outputs import write_outputs
from .privacy import Privacy
from .provenance import build_info, check_same_salt
from .questions import QuestionPool
from .reading import read_sources
from .rebuild import ChangeLog, Changes, previous_questions
from .records import records, split_report
from .render import PNG_PARAMS
from .report import summary_section
from .resources import keep_freed_memory, release_freed_memory
from .selection import select_by_cap
from .sources import SourceContext, check_known_labels, discover, prepare
from .split import plan_split
from .store import STORE, BuildStore, PreviousQuestions, StoredQuestion
from .taxonomy import LABEL_MAPS, Vocabulary
from .templates import DEFAULT_POOL
from .writer import BUILD_INFO, SummaryCounts, summary_markdown, write_json


@dataclass(frozen=True)
class RunOptions:
    """How to run a build (never what it builds: outputs do not depend on these)."""

    workers: int | None = None  # None: build.workers, else one per core
    executor: str = "local"  # local | ray
    ray_address: str | None = None
    cache: bool = True
    progress: bool = True


def build(
    config: Config,
    out_dir: Path,
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    show_paths: bool = False,
    rebuild: bool = False,
    notify: Callable[[str], None] | None = None,
    run: RunOptions | None = None,
    started: Executor | None = None,
) -> dict[str, Any]:
    """Run the whole build and publish it into ``out_dir`` atomically; returns the summary.

    ``log`` gets the full summary; ``notify`` (default: ``log``) what a user must be told:
    debris of an interrupted build removed, questions regenerated or removed since the
    previous build (rebuild.py). ``rebuild`` ignores the build already in ``out_dir``.
    ``started``: the executor to run on, already started by the caller (the CLI starts local
    workers before it reads the config); the build closes it once its workers are done.
    """
    notify = notify or log
    run = run or RunOptions(workers=workers, progress=progress)
    keep_freed_memory()  # the driver's image buffers too (resources.py)
    with ExitStack() as workers_running:
        # Workers start first: they import the stages while this process checks the config.
        if started is not None:
            ex: Executor = started
            workers_running.callback(started.close)
        else:
            ex = workers_running.enter_context(executor(
                run.executor, build_workers(config, run), run.ray_address, preload=WORKER_STAGE))
        vocab, contexts, pool = prepare(config, show_paths)
        privacy = next(iter(contexts.values())).privacy
        for ctx in contexts.values():  # cheap checks for every source before any image is read
            ctx.items = discover(ctx)
            check_known_labels(ctx, ctx.items)

        folder = OutputFolder(out_dir)
        with folder.locked():
            removed = folder.remove_leftovers()
            if removed:
                notify(f"removed what an interrupted build left in {out_dir}: "
                       f"{', '.join(removed)}")
            if not rebuild:
                check_same_salt(out_dir, privacy, config)
            with folder.staging() as stage:
                try:
                    with BuildStore(stage / STORE) as store:
                        previous = previous_questions(None if rebuild else out_dir, store)
                        scratch = stage / ".images"
                        scratch.mkdir()
                        cache = SourceCache(out_dir / CACHE_DIR if run.cache else None, scratch)
                        cache.remove_partial()
                        sources = read_sources(contexts, config, previous, ex, cache,
                                               run.progress, _build_key(config), store)
                        release_freed_memory()  # (what one worker's tasks kept, in this process)
                        cache.prune(set(contexts))
                        summary, changes = _write(stage, config, vocab, pool, contexts, sources,
                                                  store, previous, rebuild, privacy, ex)
                        workers_running.close()
                    (stage / STORE).unlink()
                    shutil.rmtree(scratch)
                    folder.publish(stage, last=MANIFEST)  # every file of the stage, in one step
                except OSError as exc:  # the output side: disk full, permissions, a quota
                    raise BuildError(f"cannot write the build into {out_dir}: "
                                     f"{exc.strerror or exc}; the previous build is unchanged"
                                     ) from None
    if not config.build.circular:  # (publish already dropped the links of files it no longer has)
        remove_stale_circular(out_dir, config.build.name)
    log(summary_markdown(summary, config.build.name))
    log(coverage_lines(out_dir))
    cached = _cache_line(sources, run.cache)
    log(cached)
    if any(s.cached for s in sources):
        notify(cached)
    for line in changes.lines():
        notify(line)
    return summary


def build_workers(config: Config, run: RunOptions) -> int:
    """How many workers a build runs: ``--workers``, else ``build.workers``, else one per core."""
    if run.workers is not None:
        return run.workers
    return config.build.workers or default_workers()


def _write(
    stage: Path, config: Config, vocab: Vocabulary, pool: QuestionPool,
    contexts: dict[str, SourceContext], sources: list[SourceResult], store: BuildStore,
    previous: PreviousQuestions, rebuild: bool, privacy: Privacy, ex: Executor,
) -> tuple[dict[str, Any], Changes]:
    """Selection, split, questions and every file of the build into ``stage``, from the cases
    the reading stage filed in ``store`` (the executor's workers write the TSVs); returns the
    summary and what changed."""
    b = config.build
    select_by_cap(store, b.per_label_cap)
    book = CaseBook(store, {x for s in sources for x in s.seen},
                    sum((s.skipped for s in sources), Counter()),
                    {s.name for s in sources if s.n_cases})
    splits, split = plan_split(store, config, previous)
    skipped = make_questions(book, vocab, pool, config, previous, splits)
    split = split_report(store, split)

    counts, coverage = SummaryCounts(), CoverageCounts(vocab)
    change_log = ChangeLog(previous, rebuild)

    def observe(r: ManifestRecord, q: StoredQuestion) -> None:
        counts.add(r)
        coverage.add(r)
        change_log.add(r, q.regenerated)

    folders = {s.name: s.images for s in sources}

    def image_of(q: StoredQuestion) -> ImageSlice:
        assert q.image_file is not None, "a selected case was not drawn"
        return ImageSlice(folders[q.case.source] / q.image_file, q.image_offset, q.image_size)

    write_outputs(stage, b.name, records(store, vocab, b.seed), image_of, observe, ex)
    summary = counts.tables()
    summary["skipped"] = dict(sorted(skipped.items()))
    summary.update(summary_section([e for s in sources for e in s.report]))
    summary["split"] = split
    changes = change_log.finish(store, {n: ctx.label_map for n, ctx in contexts.items()})
    info = build_info(config, {s.name: s.inputs for s in sources}, summary, previous)
    info["salt_check"] = privacy.check_value
    info["changes"] = changes.to_json()
    write_json(stage / "summary.json", summary)
    (stage / "summary.md").write_text(summary_markdown(summary, b.name))
    write_json(stage / BUILD_INFO, info)
    if b.circular:
        write_circular(stage, b.name)
    write_coverage(stage, coverage.report(), b.name)
    return summary, changes


def _build_key(config: Config) -> dict[str, object]:
    """Build settings and shared files that reach the workers (part of each cache key)."""
    b = config.build
    files = [*b.vocabulary, b.question_pool or DEFAULT_POOL, *sorted(LABEL_MAPS.rglob("*.yaml"))]
    return {"seed": b.seed, "cap": b.per_label_cap, "png": list(PNG_PARAMS),
            "files": shared_files_key(files)}


def _cache_line(sources: list[SourceResult], enabled: bool) -> str:
    if not enabled:
        return "cache: off (--no-cache): every source was read"
    hits = [s.name for s in sources if s.cached]
    return (f"cache: {len(hits)} of {len(sources)} source(s) reused"
            + (f" ({', '.join(hits)})" if hits else "") + f"; {len(sources) - len(hits)} read")
