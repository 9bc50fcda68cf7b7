"""Discovery stage: the sources of a config, ready to be read.

:func:`prepare` loads what every stage needs (vocabulary, label maps, question pool,
converters) and fails before any work; :func:`discover` lists a source's items with every path
confined to its root; :func:`check_known_labels` stops on raw labels the map does not know
before any image is read. A :class:`SourceContext` is everything a worker needs for one source,
and it pickles: executors send it with each task (no fork, no module global).
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from .cases import CaseMaker
from .config import BuildSettings, Config, SourceConfig
from .converters import Converter, Item, get_converter
from .converters.base import Note
from .errors import BuildError, ConfigError
from .privacy import Privacy, redact_error, relative_to_root, resolve_salt
from .questions import QuestionPool
from .report import SKIPPED, Entry
from .samples import Sample
from .taxonomy import LabelMap, Vocabulary, load_vocabulary
from .templates import answer_leaks


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
    raw_labels: frozenset[str] = frozenset()  # known at discovery: readable in messages

    def for_workers(self) -> SourceContext:
        """The context a task carries: without the item list and discovery notes (a task names
        its own items; carrying all of them made each task grow with the source)."""
        return replace(self, items=[], report=[])

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
        labels = self.raw_labels or {raw for it in self.items for raw in it.labels or ()}
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
                   wanted=None if label_map is None else label_map.wants)
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
    ctx.raw_labels = frozenset(str(raw) for item in items for raw in item.labels or ())
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


