"""The build: sources.yaml -> converters -> slices -> cases -> questions -> split -> outputs.

Items of a source are processed in parallel worker processes (read, normalise, standardise,
render); the main process parks rendered PNGs in an on-disk spool, then selects, writes and
publishes. Only metadata stays in memory, so memory does not grow with image count or size.
"""

from __future__ import annotations

import bisect
import hashlib
import multiprocessing as mp
import os
import platform
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import __version__
from .cases import CaseMaker, stable_id
from .circular import remove_stale as remove_stale_circular
from .circular import write_circular
from .config import BuildSettings, Config, SourceConfig
from .converters import Converter, Item, get_converter
from .converters.base import Note
from .coverage import coverage_lines, write_coverage
from .dedup import near_duplicate_pairs
from .errors import BuildError, ConfigError
from .lifecycle import failpoint, worker_pool
from .outdir import OutputFolder
from .privacy import Privacy, redact_error, relative_to_root, resolve_salt
from .questions import (
    AnswerBalance,
    DistractorPools,
    Question,
    QuestionPool,
    make_question,
    reuse_question,
)
from .rebuild import Reuse, pair_staleness, previous_questions, summarize
from .report import SKIPPED, Entry, summary_section
from .samples import (
    BOX_LEVEL,
    CONTOUR_LEVEL,
    DET_2D,
    IMAGE_LEVEL,
    MASK_LEVEL,
    Case,
    Sample,
    Slice2D,
)
from .sanity import asked_boxes, check_nonfinite, is_constant, unasked_targets, why_no_case
from .slicing import to_slices
from .split import VAL, assign_splits, group_key
from .taxonomy import LabelMap, Vocabulary, load_vocabulary
from .templates import answer_leaks
from .writer import (
    ANSWER_KEY_COLUMNS,
    BUILD_INFO,
    MANIFEST,
    TEST_COLUMNS,
    TSV_COLUMNS,
    ImageSpool,
    answer_key_row,
    b64,
    summary_markdown,
    summary_tables,
    test_views,
    write_json,
    write_jsonl,
    write_tsv,
)


@dataclass
class SourceContext:
    """What a worker needs to turn an item of one source into cases."""

    config: SourceConfig
    converter: Converter
    label_map: LabelMap
    maker: CaseMaker
    privacy: Privacy
    on_error: str = "fail"
    items: list[Item] = field(default_factory=list)
    report: list[Entry] = field(default_factory=list)  # discovery skips and notes

    # Privacy: what leaves the worker carries tokens, never paths, ids or UIDs --------------
    def file_token(self, file: str | Path | None) -> str:
        """How outputs name a file of this source (relative to the root, then a token)."""
        if file is None:
            return "(source)"
        rel = relative_to_root(Path(file), self.config.root) if Path(file).is_absolute() \
            else Path(file).as_posix()
        if rel is None:  # outside the root (allow_outside_root): never recorded as a path
            return self.privacy.file(self.config.name, Path(file).as_posix())
        return self.privacy.file(self.config.name, rel, self.config.identifying_paths)

    def message_name(self, file: str | Path) -> str:
        """How a terminal message names a file: its token, or its path with --show-paths."""
        return str(file) if self.privacy.show_paths else self.file_token(file)

    def protect(self, sample: Sample, raw_group: str) -> None:
        """Replace the sample's group, id and files by salted tokens (in place)."""
        name = self.config.name
        sample.group = self.privacy.group(name, raw_group)
        sample.sample_id = self.privacy.sample_id(name, sample.sample_id)
        sample.files = tuple(self.file_token(f) for f in sample.files)

    def redact(self, exc: BuildError, item: Item | None = None) -> BuildError:
        known = item.paths if item is not None else ()
        labels = {raw for it in self.items for raw in it.labels or ()}
        return redact_error(exc, self.privacy, self.config.root,
                            self.config.identifying_paths, known, self.config.name, labels)

    def entry(self, note: Note, item: Item | None = None) -> Entry:
        reason = self.redact(BuildError(note.reason, source=self.config.name), item).reason
        sample = self.privacy.sample_id(self.config.name, item.key) if item is not None else ""
        return Entry(self.config.name, note.kind, self.file_token(note.file), reason, note.count,
                     sample)


def make_privacy(config: Config, show_paths: bool = False) -> Privacy:
    salt, _ = resolve_salt(config.build.salt)
    return Privacy(salt, show_paths)


def configure_converter(conv: Converter, src: SourceConfig, build: BuildSettings,
                        label_map: LabelMap | None) -> str:
    """Give a converter the source's policies (build defaults, source overrides); returns the
    source's on_error. Shared by the build and ``validate``, so both judge paths alike."""
    on_error = src.on_error or build.on_error
    conv.configure(on_error=on_error, allow_outside_root=src.allow_outside_root,
                   max_pixels=src.max_pixels or build.max_pixels, max_voxels=build.max_voxels,
                   wanted=None if label_map is None
                   else (lambda raw, m=label_map: m.lookup(raw) is not None))
    return on_error


def prepare(
    config: Config, show_paths: bool = False
) -> tuple[Vocabulary, dict[str, SourceContext], QuestionPool]:
    """Load vocabulary, label maps, question pool and converters: fails before any work."""
    vocab = load_vocabulary(config.build.vocabulary)
    privacy = make_privacy(config, show_paths)
    b = config.build
    contexts = {}
    for src in config.sources:
        label_map = LabelMap(src.label_map, src.name, vocab, src.modality)
        conv = get_converter(src.format)(src.name, src.root, src.options)  # type: ignore[arg-type]
        on_error = configure_converter(conv, src, b, label_map)
        contexts[src.name] = SourceContext(src, conv, label_map, CaseMaker(src, label_map),
                                           privacy, on_error)
    pool = QuestionPool(config.build.question_pool)
    leaks = answer_leaks(pool, vocab)  # a template naming a label points at one option
    if leaks:
        raise ConfigError("\n".join(leaks))
    return vocab, contexts, pool


def discover(ctx: SourceContext) -> list[Item]:
    """The items of a source, every path they name confined to its root; errors redacted."""
    conv = ctx.converter
    conv.take_notes()
    try:
        with warnings.catch_warnings():  # library warnings may quote file names or values
            warnings.simplefilter("ignore")
            found = list(conv.discover())
        items = []
        for item in found:
            try:
                for p in item.paths:
                    conv.path(p)
            except BuildError as exc:
                conv.bad_item(exc.reason, exc.file)
                continue
            items.append(item)
    except BuildError as exc:
        raise ctx.redact(exc) from None
    except Exception as exc:  # a converter bug or unreadable layout: still name the source
        raise ctx.redact(BuildError(f"cannot list items: {type(exc).__name__}: {exc}",
                                    source=ctx.config.name, file=ctx.config.root)) from None
    ctx.report = [ctx.entry(n) for n in conv.take_notes()]
    if not items:
        skipped = sum(e.kind == SKIPPED for e in ctx.report)
        if skipped and ctx.on_error == "skip":
            return []  # every item was skipped: listed in the summary, the rest is built
        raise BuildError("no images found" + (f" ({skipped} skipped: " + "; ".join(
            sorted({e.reason for e in ctx.report if e.kind == SKIPPED})[:3]) + ")"
            if skipped else ""), source=ctx.config.name)
    keys = [i.key for i in items]
    if len(set(keys)) != len(keys):
        dup = next(k for k, n in Counter(keys).items() if n > 1)
        raise ctx.redact(BuildError(f"two items share the key '{dup}'", source=ctx.config.name))
    return items


def check_known_labels(ctx: SourceContext, items: list[Item]) -> None:
    """Raw labels known at discovery must all be in the label map (fails fast, before reading).

    All unknown labels of the source are reported at once, with an example file for each.
    """
    unknown: dict[str, str] = {}
    for item in items:
        for raw in item.labels or ():
            try:
                ctx.label_map.lookup(raw)
            except BuildError:
                unknown.setdefault(str(raw), item.paths[0] if item.paths else item.key)
    if unknown:
        listing = ", ".join(f"{raw!r} (e.g. {ctx.message_name(file)})"
                            for raw, file in sorted(unknown.items()))
        raise BuildError(
            f"{len(unknown)} raw label(s) not in label map {ctx.label_map.path}: {listing}; "
            "map each to a canonical label or to 'drop' (or set 'default: drop')",
            source=ctx.config.name,
        )


# Worker side ---------------------------------------------------------------------------------
_CONTEXT: SourceContext | None = None


@dataclass
class ItemResult:
    """What one item gives: its cases, and what was skipped or changed on the way."""

    cases: list[Case]
    report: list[Entry] = field(default_factory=list)


def _cases_of_item(item: Item) -> ItemResult:
    """Read, normalise and render one item (worker side); every drop comes back as an entry.

    A bad item is an error (``on_error: fail``) or one skipped entry (``skip``); the error
    names the file by its token and carries no path, identifier or UID (privacy.redact_error).
    """
    ctx = _CONTEXT
    assert ctx is not None
    src, conv = ctx.config, ctx.converter
    conv.take_notes()
    group = group_key(item.key, item.group or item.key, src.patient_key)
    first = item.paths[0] if item.paths else None
    try:
        cases: list[Case] = []
        with warnings.catch_warnings():  # library warnings may quote file names or values
            warnings.simplefilter("ignore")
            for sample in conv.load(item):
                ctx.protect(sample, group_key(item.key, sample.group or group, src.patient_key))
                cases.extend(_cases_of_sample(ctx, sample, first))
        return ItemResult(cases, [ctx.entry(n, item) for n in conv.take_notes()])
    except Exception as exc:
        if not isinstance(exc, BuildError):
            exc = BuildError(f"{type(exc).__name__}: {exc}", source=src.name,
                             file=conv.root / first if first else src.root)
        err = ctx.redact(exc, item)
        if ctx.on_error != "skip" or isinstance(exc, ConfigError):  # a map problem, not a sample's
            raise err from None
        conv.take_notes()  # notes of a skipped item describe nothing published
        return ItemResult([], [Entry(src.name, SKIPPED, ctx.file_token(exc.file or first),
                                     err.reason, 1, ctx.privacy.sample_id(src.name, item.key))])


def _cases_of_sample(ctx: SourceContext, sample: Sample, first: str | None) -> list[Case]:
    """The cases of one protected sample; constant slices and empty results are recorded."""
    src, conv = ctx.config, ctx.converter
    nonfinite = check_nonfinite(sample)
    slices: list[Slice2D] = to_slices(sample, src)
    nonfinite += sum(int(s.extra.pop("nonfinite_pixels", 0)) for s in slices)
    if nonfinite:
        if src.intensity.nonfinite == "error":
            raise BuildError(f"{nonfinite} NaN/inf pixel value(s) (intensity.nonfinite: error; "
                             "'floor' shows them black)", source=src.name, file=first)
        conv.note(f"{nonfinite} NaN/inf pixel value(s) ignored in percentiles and shown at the "
                  "window floor", first, nonfinite)
    for reason, count in _sample_notes(sample):
        conv.note(reason, first, count)
    kept = []
    for s in slices:
        if is_constant(s.rgb):
            where = f" ({s.axis} slice {s.slice_index})" if s.axis else ""
            conv.note(f"image{where} is constant after intensity mapping: not published", first,
                      kind=SKIPPED)
        else:
            kept.append(s)
    cases: list[Case] = []
    for s in kept:
        made = list(ctx.maker.cases(s))
        cases.extend(made)
        unasked = len(asked_boxes(s, ctx.label_map)) - sum(
            c.original_task == DET_2D and c.granularity == BOX_LEVEL for c in made)
        if unasked > 0:
            conv.note(f"{unasked} box(es) not asked: ambiguous (overlapping a box of another "
                      "label) or empty", first, unasked, kind=SKIPPED)
    unasked = unasked_targets(sample, kept, ctx.label_map) if slices == kept else []
    for raw in unasked:
        conv.note(f"target '{raw}' is smaller than slicing.min_area ({src.slicing.min_area} "
                  "pixels) on every slice: not asked", first, kind=SKIPPED)
    if not cases and not unasked and slices == kept:
        why = why_no_case(sample, slices, src, ctx.label_map)
        if why:
            conv.note(why, first, kind=SKIPPED)
    return cases


def _sample_notes(sample: Sample) -> list[tuple[str, int]]:
    """Changes a converter made to a sample that it keeps (declared in ``Sample.extra``)."""
    out = []
    clipped = sample.extra.get("clipped_boxes") or []
    if clipped:
        out.append((f"{len(clipped)} box(es) clipped to the image", len(clipped)))
    for warning in sample.extra.get("dicom_warnings") or []:
        out.append((f"DICOM: {warning}", 1))
    return out


class CapTracker:
    """Lets workers skip drawing cases that the per-label cap can no longer select.

    For each (label, cap family) it keeps the ``cap`` best ranks among the rendered units seen
    so far; a new unit ranked worse than all of them can never be selected (ranks are fixed
    hashes, and previous-build questions are always kept), so drawing and encoding it would be
    wasted. The result is identical to rendering everything: only the work changes.
    """

    def __init__(self, cap: int, seed: int, previous: dict[str, dict], shared: dict | None = None):
        self.cap, self.seed, self.previous = cap, seed, previous
        self.thresholds: dict = {} if shared is None else shared  # key -> worst kept rank
        self._best: dict[tuple[str, str], list[str]] = defaultdict(list)

    def keep(self, pair_id: str, case_id: str, label: str, granularity: str) -> bool:
        if case_id in self.previous:
            return True
        threshold = self.thresholds.get(f"{label}\x1f{cap_family(granularity)}")
        return threshold is None or rank(self.seed, pair_id) <= threshold

    def seen(self, case: Case) -> None:
        """Main process: record a rendered case's unit and tighten the threshold."""
        if not case.rendered:
            return
        key = (case.label, cap_family(case.granularity))
        best = self._best[key]
        r = rank(self.seed, case.pair_id)
        if r in best:
            return
        bisect.insort(best, r)
        if len(best) > self.cap:
            best.pop()
        if len(best) == self.cap:
            self.thresholds[f"{key[0]}\x1f{key[1]}"] = best[-1]


def iter_cases(
    ctx: SourceContext, items: list[Item], workers: int, tracker: CapTracker
) -> Iterator[ItemResult]:
    """Cases per item, in item order (deterministic whatever the number of workers)."""
    global _CONTEXT
    _CONTEXT = ctx
    ctx.maker.keep = tracker.keep
    if workers <= 1 or len(items) < 4 or "fork" not in mp.get_all_start_methods():
        yield from map(_cases_of_item, items)
        return
    # fork: workers inherit the context (converter, label map, tracker) without pickling it;
    # the tracker's thresholds live in a manager so that workers see them tighten.
    # Both die with this process (even on SIGKILL) and leave Ctrl-C to it: see lifecycle.py.
    with worker_pool(mp.get_context("fork"), workers, tracker.thresholds) as (pool, shared):
        tracker.thresholds = shared
        try:
            chunk = max(1, min(16, len(items) // (4 * workers)))
            yield from pool.imap(_cases_of_item, items, chunksize=chunk)
        finally:
            try:
                tracker.thresholds = dict(shared)
            except Exception:  # unwinding from Ctrl-C mid-call: thresholds only save work
                tracker.thresholds = {}




# Selection -----------------------------------------------------------------------------------
def cap_family(granularity: str) -> str:
    """Mask and contour cases of one target are capped (and kept) together."""
    return "segmentation" if granularity in (MASK_LEVEL, CONTOUR_LEVEL) else granularity


def rank(seed: int, pair_id: str) -> str:
    return hashlib.sha256(f"{seed}:rank:{pair_id}".encode()).hexdigest()


def prefilter_items(
    ctx: SourceContext, items: list[Item], cap: int, seed: int, previous: dict[str, dict]
) -> list[Item]:
    """Skip reading images that the per-label cap would drop anyway (labels known up front).

    Keeps, per canonical label, the ``cap`` best-ranked items (same ranking as the final cap,
    so the result is identical to reading everything) plus any item a previous build used.
    """
    if any(item.labels is None for item in items):
        return items
    best: dict[str, list[tuple[str, int]]] = defaultdict(list)
    keep: set[int] = set()
    for n, item in enumerate(items):
        labels_seen: set[str] = set()  # as CaseMaker: the first raw label of a canonical label
        for raw in item.labels or ():
            std = ctx.label_map.lookup(raw, file=item.paths[0] if item.paths else None)
            if std is None or std.label in labels_seen:
                continue
            labels_seen.add(std.label)
            sample_id = ctx.privacy.sample_id(ctx.config.name, item.key)
            pair_id = stable_id(ctx.config.name, sample_id, raw, "image")
            if stable_id(pair_id, IMAGE_LEVEL) in previous:
                keep.add(n)
            best[std.label].append((rank(seed, pair_id), n))
    for entries in best.values():
        keep.update(n for _, n in sorted(entries)[:cap])
    return [items[n] for n in sorted(keep)]


def select_by_cap(cases: list[Case], cap: int, seed: int, previous: dict[str, dict]) -> list[Case]:
    """At most ``cap`` targets per (label, granularity family); previous questions first."""
    units: dict[tuple[str, str], dict[str, list[Case]]] = defaultdict(lambda: defaultdict(list))
    for c in cases:
        units[(c.label, cap_family(c.granularity))][c.pair_id].append(c)
    chosen: set[str] = set()
    for by_pair in units.values():
        order = sorted(
            by_pair,
            key=lambda p: (not any(c.case_id in previous for c in by_pair[p]), rank(seed, p)),
        )
        chosen.update(order[:cap])
    return [c for c in cases if c.pair_id in chosen]


# The build -----------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


@dataclass
class Collected:
    """What the reading stage leaves: case metadata, where each PNG is, and input checksums."""

    cases: list[Case] = field(default_factory=list)
    refs: dict[str, tuple[int, int]] = field(default_factory=dict)  # case id -> spool slot
    image_sha256: dict[str, str] = field(default_factory=dict)  # case id -> PNG checksum
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> token -> sha256
    report: list[Entry] = field(default_factory=list)  # skipped samples and notes


def collect_cases(
    contexts: dict[str, SourceContext], config: Config, previous: dict[str, dict],
    spool: ImageSpool, workers: int, progress: bool,
) -> Collected:
    """Read every source (in parallel), park rendered PNGs in the spool, keep metadata only."""
    b = config.build
    out = Collected()
    seen: set[str] = set()
    tracker = CapTracker(b.per_label_cap, b.seed, previous)
    for ctx in contexts.values():
        src = ctx.config
        items = prefilter_items(ctx, ctx.items, b.per_label_cap, b.seed, previous)
        bar = tqdm(total=len(items), desc=src.name, unit="item", disable=not progress,
                   file=sys.stderr)
        out.report.extend(ctx.report)
        skipped_files: set[str] = set()
        # Closed here, even on Ctrl-C: the pool stops now, not whenever the generator is collected
        results = iter_cases(ctx, items, workers, tracker)
        try:
            for item, result in zip(items, results):
                out.report.extend(result.report)
                if any(e.kind == SKIPPED for e in result.report) and not result.cases:
                    skipped_files.update(item.paths)
                for c in result.cases:
                    if c.case_id in seen:
                        raise BuildError(f"two cases share the id {c.case_id} ({c.sample_id})",
                                         source=src.name)
                    seen.add(c.case_id)
                    if c.rendered:
                        out.refs[c.case_id] = spool.put(c.png)
                        out.image_sha256[c.case_id] = c.png_sha256  # hashed in the worker
                    tracker.seen(c)
                    out.cases.append(replace(c, png=b""))
                bar.update(1)
                failpoint("reading")
        finally:
            results.close()
        bar.close()
        files = sorted({p for item in items for p in item.paths} - skipped_files)
        out.inputs[src.name] = dict(sorted(
            (ctx.file_token(p), input_checksum(ctx, p))
            for p in files if ctx.converter.path(p).is_file()
        ))
    return out


def input_checksum(ctx: SourceContext, entry: str) -> str:
    """sha256 of an input file for build.json; a file gone unreadable is a named error."""
    path = ctx.converter.path(entry)
    try:
        return sha256_file(path)
    except OSError as exc:
        raise ctx.redact(BuildError(f"cannot read the file for its checksum: {exc.strerror}",
                                    source=ctx.config.name, file=path)) from None


def make_questions(
    cases: list[Case], vocab: Vocabulary, pool: QuestionPool, config: Config,
    previous: dict[str, dict], splits: dict[tuple[str, str], str] | None = None,
) -> tuple[list[Question], set[str], Counter[str], Reuse]:
    """Cap, then one question per selected case: previous questions reused as they were.

    Previous questions whose answer, task, options or template changed are regenerated
    (rebuild.py). Returns the questions, the ids of the reused ones, skipped cases counted by
    reason, and which previous questions were regenerated (and why) or could not be made.
    ``splits`` ((source, group) -> split, from :func:`plan_split`) lets answer letters balance
    within each split, so VAL and TEST are each unbiased on their own.
    """
    b = config.build
    skipped: Counter[str] = Counter(f"{c.source}: {c.skipped}" for c in cases if c.skipped)
    selected = select_by_cap(askable_cases(cases), b.per_label_cap, b.seed, previous)
    assert all(c.rendered for c in selected), "the cap tracker skipped a selectable case"
    pools = DistractorPools(cases, vocab, pool)  # all labels seen, not only the capped
    split_map = splits or {}
    balance = AnswerBalance(lambda c: split_map.get((c.source, c.group), ""))
    questions: list[Question] = []
    reuse = Reuse(pair_staleness(selected, previous, pools, pool, b.options))
    reused = [c for c in selected if c.case_id in previous and c.case_id not in reuse.regenerated]
    # The mask and contour questions of one target share their options and answer letter.
    partners: dict[str, Question] = {}
    for c in reused:
        questions.append(reuse_question(c, previous[c.case_id], balance,
                                        partner=c.pair_id in partners, pools=pools))
        if cap_family(c.granularity) == "segmentation":
            partners.setdefault(c.pair_id, questions[-1])
    reused_ids = {c.case_id for c in reused}
    # Sources in name order, not config order: reordering sources.yaml changes no question.
    for c in sorted(selected, key=lambda c: c.source):
        if c.case_id in reused_ids:
            continue
        q = make_question(c, pools, pool, b.seed, b.options, balance,
                          partner=partners.get(c.pair_id))
        if q is None:
            why = (" (Image Level: distractors are the source's other labels, and it has none)"
                   if c.granularity == IMAGE_LEVEL else f" ({c.granularity})")
            skipped[f"{c.source}: no distractor for '{c.label}'{why}"] += 1
            reuse.unanswerable.add(c.case_id)
            continue
        questions.append(q)
        if cap_family(c.granularity) == "segmentation":
            partners.setdefault(c.pair_id, q)
    check_every_source_asks(config, questions, cases, skipped)
    if not questions:
        raise BuildError("no question could be made: every source yields none ("
                         + "; ".join(f"{k} x{n}" for k, n in sorted(skipped.items())) + ")")
    return questions, reused_ids, skipped, reuse


def askable_cases(cases: list[Case]) -> list[Case]:
    """Cases fit to ask about (not skipped for size, ambiguity...)."""
    return [c for c in cases if not c.skipped]


def plan_split(
    cases: list[Case], config: Config, previous: dict[str, dict],
) -> tuple[dict[tuple[str, str], str], dict[str, Any]]:
    """The split of every group that will have questions, before any question is made.

    Exact and near-duplicate pictures (perceptual hash without overlay) link their groups,
    which then share one split (:func:`gmai_build.split.assign_splits`). Returns the splits and
    the report for the summary (near-duplicate pairs name case ids; numbering adds indices).
    """
    b = config.build
    selected = select_by_cap(askable_cases(cases), b.per_label_cap, b.seed, previous)
    images: dict[tuple[str, str, str], Case] = {}  # one entry per distinct picture
    for c in selected:
        images.setdefault((c.source, c.group, c.phash), c)
    firsts = [images[k] for k in sorted(images)]
    pairs = near_duplicate_pairs([c.phash for c in firsts],
                                 [(c.source, c.group) for c in firsts], b.near_duplicate_distance)
    links = [((firsts[i].source, firsts[i].group), (firsts[j].source, firsts[j].group))
             for i, j, _ in pairs]
    before = {(r["source"], r["group"]): r["split"] for r in previous.values()}
    plan = assign_splits({(c.source, c.group) for c in selected}, b.val_fraction, before, links)
    # The report names questions by case id here and by index once numbered: never by sample
    # id or group, which may be identifying folder names.
    report = {
        "val_fraction": b.val_fraction,
        "near_duplicates": [
            {"a_case": firsts[i].case_id, "b_case": firsts[j].case_id, "distance": d}
            for i, j, d in pairs
        ],
        "kept_together": [list(unit) for unit in plan.together],
    }
    return plan.splits, report


def check_every_source_asks(
    config: Config, questions: list[Question], cases: list[Case], skipped: Counter[str],
) -> None:
    """A source that yields no question is an error naming it and why (unless allowed)."""
    asked = {q.case.source for q in questions}
    with_cases = {c.source for c in cases}
    for src in config.sources:
        if src.name in asked or src.allow_no_questions:
            continue
        reasons = [f"{k.split(': ', 1)[1]} ({n} case(s))" for k, n in sorted(skipped.items())
                   if k.startswith(f"{src.name}: ")]
        why = ("; ".join(reasons) if reasons else "its items had no labelled target"
               if src.name not in with_cases else "every case was left out by the per-label cap")
        raise BuildError(f"the source yields no question: {why}; fix the source or its label "
                         "map, or set 'allow_no_questions: true' for it", source=src.name)


def number_and_split(
    questions: list[Question], reused_ids: set[str], previous: dict[str, dict],
    config: Config, image_sha256: dict[str, str], splits: dict[tuple[str, str], str],
    report: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Manifest records sorted by index (reused questions keep theirs, new ones follow), and
    the split report completed: VAL share of groups, groups per source, pairs by index."""
    b = config.build
    next_index = max((r["index"] for r in previous.values()), default=-1) + 1
    records = []
    for q in questions:
        c = q.case
        if c.case_id in previous:  # reused or regenerated: the same target keeps its index
            index = previous[c.case_id]["index"]
        else:
            index, next_index = next_index, next_index + 1
        split = splits[(c.source, c.group)]
        records.append(_record(q, index, split, b.seed, image_sha256[c.case_id]))
    records.sort(key=lambda r: r["index"])
    _check_no_leak(records)
    index_of = {r["case_id"]: r["index"] for r in records}
    asked = {(r["source"], r["group"]): r["split"] for r in records}
    per_source: dict[str, dict[str, int]] = {}
    for (src, _), split in sorted(asked.items()):
        per_source.setdefault(src, {"VAL": 0, "TEST": 0})[split] += 1
    n_val = sum(v == VAL for v in asked.values())
    pairs = [{"a": index_of.get(p["a_case"]), "b": index_of.get(p["b_case"]),
              "distance": p["distance"]} for p in report["near_duplicates"]]
    first_index: dict[tuple[str, str], int] = {}
    for r in records:
        first_index.setdefault((r["source"], r["group"]), r["index"])
    together = [sorted(first_index[tuple(g)] for g in unit if tuple(g) in first_index)
                for unit in report["kept_together"]]
    return records, {
        **report,
        "kept_together": [t for t in together if len(t) > 1],
        "groups": len(asked),
        "val_groups": n_val,
        "val_share_groups": round(100 * n_val / max(1, len(asked)), 2),
        "groups_per_source": per_source,
        "near_duplicates": pairs,
    }


def write_outputs(
    stage: Path, config: Config, records: list[dict[str, Any]], spool: ImageSpool,
    refs: dict[str, tuple[int, int]], summary: dict[str, Any], build_info: dict[str, Any],
) -> list[str]:
    """TSVs, answer key, manifest, summary and build info into the staging folder."""
    name = config.build.name
    val_rows = [r for r in records if r["split"] == VAL]
    test_rows = [r for r in records if r["split"] != VAL]

    def rows(recs: list[dict[str, Any]], blind: bool = False) -> Iterator[dict[str, Any]]:
        for r in recs:  # images stream from the spool, one row at a time
            row = _tsv_row(r, spool.get(refs[r["case_id"]]))
            yield {**row, **r["test_view"]} if blind else row

    write_tsv(stage / f"{name}_VAL.tsv", TSV_COLUMNS, rows(val_rows))
    failpoint("writing")
    write_tsv(stage / f"{name}_TEST.tsv", TEST_COLUMNS, rows(test_rows, blind=True))
    write_tsv(stage / f"{name}_TEST_answers.tsv", ANSWER_KEY_COLUMNS,
              (answer_key_row(r) for r in test_rows))
    write_jsonl(stage / MANIFEST, records)
    write_json(stage / "summary.json", summary)
    (stage / "summary.md").write_text(summary_markdown(summary, name))
    write_json(stage / BUILD_INFO, build_info)
    return [f"{name}_VAL.tsv", f"{name}_TEST.tsv", f"{name}_TEST_answers.tsv",
            "summary.json", "summary.md", BUILD_INFO, MANIFEST]


def build(
    config: Config,
    out_dir: Path,
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    show_paths: bool = False,
    rebuild: bool = False,
    notify: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole build and publish it into ``out_dir`` atomically; returns the summary.

    ``log`` gets the full summary; ``notify`` (default: ``log``) what a user must be told:
    debris of an interrupted build removed, questions regenerated or removed since the
    previous build (rebuild.py). ``rebuild`` ignores the build already in ``out_dir``.
    """
    notify = notify or log
    n_workers = workers if workers is not None else (config.build.workers or default_workers())
    vocab, contexts, pool = prepare(config, show_paths)
    privacy = next(iter(contexts.values())).privacy
    for ctx in contexts.values():  # cheap checks for every source before any image is read
        ctx.items = discover(ctx)
        check_known_labels(ctx, ctx.items)

    folder = OutputFolder(out_dir)
    with folder.locked():
        removed = folder.remove_leftovers()
        if removed:
            notify(f"removed what an interrupted build left in {out_dir}: {', '.join(removed)}")
        if not rebuild:
            check_same_salt(out_dir, privacy, config)
        previous = {} if rebuild else previous_questions(out_dir)
        with folder.staging() as stage:
            spool = ImageSpool(stage / "images.spool")
            try:
                got = collect_cases(contexts, config, previous, spool, n_workers, progress)
                splits, split_report = plan_split(got.cases, config, previous)
                questions, reused_ids, skipped, reuse = make_questions(
                    got.cases, vocab, pool, config, previous, splits)
                records, split_report = number_and_split(questions, reused_ids, previous, config,
                                                         got.image_sha256, splits, split_report)
                test_views(records, vocab)
                summary = summary_tables(records)
                summary["skipped"] = dict(sorted(skipped.items()))
                summary.update(summary_section(got.report))
                summary["split"] = split_report
                changes = summarize(previous, records, reuse, got.cases,
                                    {n: ctx.label_map for n, ctx in contexts.items()}, rebuild)
                info = _build_info(config, got.inputs, summary, previous)
                info["salt_check"] = privacy.check_value
                info["changes"] = changes.to_json()
                write_outputs(stage, config, records, spool, got.refs, summary, info)
                if config.build.circular:
                    write_circular(stage, config.build.name)
                write_coverage(stage, records, config.build.name, vocab)
            finally:
                spool.close()
                spool.path.unlink(missing_ok=True)
            folder.publish(stage, last=MANIFEST)  # every file of the stage, in one step
    if not config.build.circular:  # (publish already dropped the links of files it no longer has)
        remove_stale_circular(out_dir, config.build.name)
    log(summary_markdown(summary, config.build.name))
    log(coverage_lines(out_dir))
    for line in changes.lines():
        notify(line)
    return summary


def check_same_salt(out_dir: Path, privacy: Privacy, config: Config) -> None:
    """Refuse to add to a build made with another salt: every token (and index) would change."""
    import json

    info_path = out_dir / BUILD_INFO
    if not (out_dir / MANIFEST).is_file() or not info_path.is_file():
        return
    try:
        old = json.loads(info_path.read_text(encoding="utf-8")).get("salt_check")
    except (OSError, ValueError, AttributeError):
        return
    if old is None:
        raise BuildError(
            f"{out_dir} was built by a gmai-build without salted identifiers: its questions "
            "cannot be matched to this build's; build into a new folder")
    if old != privacy.check_value:
        where = "build.salt" if config.build.salt else "the per-user key (no build.salt given)"
        raise BuildError(
            f"{out_dir} was built with another salt than {where}: its groups, sample ids and "
            "question identities would all change. Use the salt of that build (build.salt), or "
            "build into a new folder")


def _check_no_leak(records: list[dict[str, Any]]) -> None:
    splits: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        splits[(r["source"], r["group"])].add(r["split"])
    leaked = [k for k, v in splits.items() if len(v) > 1]
    if leaked:  # cannot happen (a split is a function of the group): an invariant, not a check
        raise BuildError(f"group {leaked[0][1]} would be in both VAL and TEST", source=leaked[0][0])


def _record(q: Question, index: int, split: str, seed: int, image_sha256: str) -> dict[str, Any]:
    c = q.case
    return {
        "index": index,
        "case_id": c.case_id,
        "pair_id": c.pair_id,
        "split": split,
        "source": c.source,
        "sample_id": c.sample_id,
        "files": list(c.files),
        "group": c.group,
        "raw_label": c.raw_label,
        "category": c.label,
        "task": c.task,
        "department": c.department,
        "modality": c.modality,
        "granularity": c.granularity,
        "original_task": c.original_task,
        "axis": c.axis,
        "slice_index": c.slice_index,
        "region": c.region,
        "template_id": q.template_id,
        "question": q.question,
        "options": q.options,
        "answer": q.answer,
        "seed": seed,
        "image_sha256": image_sha256,
        "image_phash": c.phash,
    }


def _tsv_row(r: dict[str, Any], png: bytes) -> dict[str, Any]:
    row = {
        "index": r["index"],
        "question": r["question"],
        "answer": r["answer"],
        "category": r["category"],
        "clinical VQA task": r["task"],
        "department": r["department"],
        "perceptual granularity": r["granularity"],
        "modality": r["modality"],
        "original task": r["original_task"],
        "image": b64(png),
    }
    for letter, text in zip("ABCDE", r["options"]):
        row[letter] = text
    return row


def _settings(config: Config) -> dict[str, Any]:
    """Build settings for build.json: no salt, no output folder, config files by name only
    (their folders may name a person; their content is what counts)."""
    settings = config.build.model_dump(mode="json", exclude={"out", "salt"})
    if config.build.question_pool is not None:
        settings["question_pool"] = config.build.question_pool.name
    settings["vocabulary"] = [p.name for p in config.build.vocabulary]
    return settings


def _build_info(config: Config, inputs, summary, previous) -> dict[str, Any]:
    import cv2
    import numpy as np

    return {
        "tool": "gmai-build",
        "tool_version": __version__,
        "config_file": config.path.name,
        "config_sha256": config.config_hash,
        "seed": config.build.seed,
        "settings": _settings(config),
        "sources": [
            {"name": s.name, "format": s.format, "modality": s.modality, "license": s.license,
             "citation": s.citation, "label_map_sha256": sha256_file(s.label_map)}
            for s in config.sources
        ],
        "input_sha256": inputs,
        "libraries": {"python": platform.python_version(), "numpy": np.__version__,
                      "opencv": cv2.__version__},
        "questions": summary["total"],
        "incremental": bool(previous),
    }
