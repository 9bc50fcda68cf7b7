"""Worker stage: items of one source -> cases (read, normalise, standardise, select, render).

A :class:`Task` carries everything a worker needs -- the source's context, a chunk of its items
and the selection rule -- and pickles, so any executor (a spawned process pool, Ray) can run
:func:`run_task`; nothing is inherited by fork or read from a module global. Results come back
per item, in item order, with the PNGs already encoded (and a perceptual hash of each picture)
and the item's own input files hashed for provenance (the worker has just read them: they are
in the page cache). The PNGs' sha256 is taken later, by the TSV pieces that read them anyway.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from .bulkio import BulkWriter
from .cases import CaseMaker
from .converters import Item
from .errors import BuildError, ConfigError
from .report import SKIPPED, Entry
from .resources import tune_worker_process
from .samples import BOX_LEVEL, DET_2D, Case, Sample, Slice2D
from .sanity import asked_boxes, check_nonfinite, is_constant, unasked_targets, why_no_case
from .selection import RenderRule
from .slicing import to_slices
from .sources import SourceContext
from .split import group_key


@dataclass
class Task:
    """A chunk of one source's items for a worker.

    ``hash_files[n]`` lists the files of ``items[n]`` whose checksum the worker reports (those no
    other item names; the driver hashes shared files such as a COCO JSON once).
    """

    ctx: SourceContext
    items: list[Item]
    rule: RenderRule
    hash_files: list[list[str]]
    images: Path  # the file this task writes its images to (the PNGs, back to back)


def run_task(task: Task) -> list[ItemResult]:
    """The results of a task's items, in order. The rule tightens as the items are rendered.

    Images never travel back to the driver: each PNG is written to the task's own file (a
    retried task rewrites it), and the case carries its offset and size there (``Case.image``).
    The driver only files metadata; the TSV pieces base64-encode each PNG from this file into
    its row (:mod:`gmai_build.assembly`: on the workers too, and the files are a quarter smaller
    than base64).
    """
    tune_worker_process()
    rule = task.rule.snapshot()
    maker = copy.copy(task.ctx.maker)
    maker.keep = rule.keep
    out = []
    with BulkWriter(task.images) as images:
        for item, files in zip(task.items, task.hash_files):
            result = cases_of_item(task.ctx, maker, item)
            for n, case in enumerate(result.cases):
                rule.seen(case)
                if case.rendered:
                    result.cases[n] = replace(case, png=b"", image=(images.tell(), len(case.png)))
                    images.write(case.png)
            skipped = not result.cases and any(e.kind == SKIPPED for e in result.report)
            if not skipped:  # a skipped item's files are not inputs of the build
                result.inputs = input_checksums(task.ctx, files)
            out.append(result)
    return out


def input_checksums(ctx: SourceContext, files: list[str]) -> dict[str, str]:
    """sha256 of input files for build.json, by token; a file gone unreadable is a named error.
    (Entries that are not plain files, such as a DICOM series folder, have none.)"""
    out = {}
    for entry in files:
        path = ctx.converter.path(entry)
        if not path.is_file():
            continue
        try:
            out[ctx.file_token(entry)] = sha256_file(path)
        except OSError as exc:
            raise ctx.redact(BuildError(f"cannot read the file for its checksum: {exc.strerror}",
                                        source=ctx.config.name, file=path)) from None
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ItemResult:
    """What one item gives: its cases, and what was skipped or changed on the way."""

    cases: list[Case]
    report: list[Entry] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)  # file token -> sha256 (see Task)


def cases_of_item(ctx: SourceContext, maker: CaseMaker, item: Item) -> ItemResult:
    """Read, normalise and render one item (worker side); every drop comes back as an entry.

    A bad item is an error (``on_error: fail``) or one skipped entry (``skip``); the error
    names the file by its token and carries no path, identifier or UID (privacy.redact_error).
    """
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
                cases.extend(_cases_of_sample(ctx, maker, sample, first))
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


def _cases_of_sample(
    ctx: SourceContext, maker: CaseMaker, sample: Sample, first: str | None
) -> list[Case]:
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
        made = list(maker.cases(s))
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


