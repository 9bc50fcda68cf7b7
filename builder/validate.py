"""``gmai-build validate``: find what the build would reject, without decoding any pixels.

Checks, and reports *every* problem found (not only the first):

* the sources file (keys, formats, options, modalities, paths: :func:`~gmai_build.config.load_config`);
* a source from a dataset card (``dataset:``) must match the card's documented ``layout``
  (otherwise: "laid out wrongly", with what was expected and what the folder holds); an
  ``optional: true`` source whose root is absent is reported missing, and the build skips it;
* the vocabulary files, each source's label map and the question pool, entry by entry;
* every source's layout: the converter lists its items as the build does (tables parsed,
  annotation files parsed, DICOM headers read with ``stop_before_pixels``, so SEG and RTSTRUCT
  references to their image series are resolved), then every file an item names must exist and
  stay inside the source root (or inside a folder that the source's options name explicitly),
  and a 2D image's header must be one Pillow reads; the converter then checks what headers
  tell (:meth:`~gmai_build.converters.base.Converter.problems_without_pixels`: a box outside
  its image, a declared image size that differs, a mask of another size than its image, a
  SEG on another grid than its series);
  paths go through the converter's own :meth:`~gmai_build.converters.base.Converter.path`, the
  same resolution the build reads through;
* every raw label that a table, annotation file or DICOM header declares
  (:meth:`~gmai_build.converters.base.Converter.declared_labels`) must be in the label map.

A warning (not an error) names a label that the source's modality is not listed for in the
vocabulary, with the label, the modality and the label map. What only the pixels tell (mask
values, image sizes, unreadable images) is left to the build.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .cards import layout_problems
from .cli import add_output_flags, add_path_flag, quiet
from .config import BuildSettings, Config, SourceConfig, load_config
from .converters import Converter, Item, get_converter
from .errors import BuildError, ConfigError
from .image2d import IMAGE_SUFFIXES, image_size
from .privacy import redact_lines
from .questions import QuestionPool
from .sources import configure_converter, make_privacy
from .taxonomy import LabelMap, StandardLabel, Vocabulary, _base_vocabulary_files
from .templates import check_pool

MAX_LISTED = 20  # per source and kind of problem; the rest is counted


@dataclass
class Findings:
    """What validation found: errors fail it, warnings do not, notes say what was checked."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    names: dict[str, set[str]] = field(default_factory=dict)  # source -> path parts it named
    labels: dict[str, set[str]] = field(default_factory=dict)  # source -> raw labels it named

    def add_errors(self, exc: BuildError | str) -> None:
        self.errors.extend(str(exc).splitlines())


def validate(sources: Path, show_paths: bool = False) -> Findings:
    """Check a sources file and everything it names; never raises for a user's mistake.

    Input files are named by the tokens the build uses (``show_paths``: by their paths), and
    no DICOM UID or path component is printed (:func:`gmai_build.privacy.redact_lines`).
    """
    found = Findings()
    try:
        config = load_config(sources)
    except ConfigError as exc:
        found.add_errors(exc)
        return found
    vocab = _vocabulary(config, found)
    try:
        pool = QuestionPool(config.build.question_pool)
    except ConfigError as exc:
        found.add_errors(exc)
    else:  # texts giving answers away stop the build; thin cells and lexical cues are warnings
        report = check_pool(pool, vocab)
        found.errors.extend(report.errors)
        found.warnings.extend(report.gaps + report.cues)
    wrong = 0
    layout_errors: list[str] = []  # a public card's documented layout: nothing to redact
    for src in config.sources:
        card = config.cards.get(src.name)
        problems = layout_problems(card, src.root) if card is not None else []
        if problems:  # the card's documented layout is not there: say what was expected
            wrong += 1
            layout_errors += [f"source '{src.name}': laid out wrongly: {p}" for p in problems]
            continue
        with warnings.catch_warnings():  # library warnings may quote header values
            warnings.simplefilter("ignore")
            _check_source(src, vocab, found, config.build)
    found.notes += [f"missing: {line}" for line in config.skipped]
    if config.cards or config.skipped:
        present = len(config.cards) - wrong
        found.notes.append(f"datasets from cards: {present} present, {len(config.skipped)} missing "
                           f"(optional, skipped), {wrong} laid out wrongly")
    try:
        privacy = make_privacy(config, show_paths)
    except ConfigError as exc:
        found.add_errors(exc)
        return found
    roots = {src.name: (Path(src.root).absolute(), src.identifying_paths) for src in config.sources}
    for kind in ("errors", "warnings", "notes"):
        setattr(found, kind, redact_lines(getattr(found, kind), roots, privacy, found.names,
                                          found.labels))
    found.errors += layout_errors
    return found


def _vocabulary(config: Config, found: Findings) -> Vocabulary:
    """The base vocabulary plus the build's extra files; problems of every file are recorded."""
    vocab = Vocabulary()
    for path in (*_base_vocabulary_files(), *config.build.vocabulary):
        try:
            vocab.add_file(path)
        except ConfigError as exc:
            found.add_errors(exc)
    return vocab


def _check_source(src: SourceConfig, vocab: Vocabulary, found: Findings,
                  build: BuildSettings | None = None) -> None:
    errors_before = len(found.errors)
    label_map: LabelMap | None = None
    try:
        label_map = LabelMap(src.label_map, src.name, vocab, src.modality)
    except ConfigError as exc:
        found.add_errors(exc)
    converter_class = get_converter(src.format)
    options = converter_class.Options.model_validate(src.options)  # load_config already did
    converter = converter_class(src.name, src.root, options)
    configure_converter(converter, src, build or BuildSettings(), label_map)
    items = _discover(converter, src, found)
    found.names[src.name] = {part for item in items or () for p in (*item.paths, item.key)
                             for part in (*Path(p).parts, Path(p).as_posix())}
    found.labels[src.name] = {raw for item in items or () for raw in item.labels or ()}
    for note in converter.take_notes():  # under on_error: skip, what the build would leave out
        if note.kind == "skipped":
            found.warnings.append(f"source '{src.name}': would be skipped: {note.reason}"
                                  + (f" (file {note.file})" if note.file else ""))
    if items is None:
        return
    n_files = _check_files(converter, src, items, found)
    if label_map is None:
        return
    n_labels = _check_labels(converter, src, items, label_map, vocab, found)
    if len(found.errors) == errors_before:
        found.notes.append(f"{src.name}: {src.format}, {len(items)} items, label map OK "
                           f"({n_labels} raw labels checked, {n_files} files exist)")


def _discover(converter: Converter, src: SourceConfig, found: Findings) -> list[Item] | None:
    """The source's items as the build lists them, or None (problem recorded)."""
    try:
        items = list(converter.discover())
    except BuildError as exc:
        found.add_errors(exc)
        return None
    except Exception as exc:  # a converter bug or an unreadable layout: still name the source
        found.errors.append(f"source '{src.name}': file {src.root}: cannot list items: "
                            f"{type(exc).__name__}: {exc}")
        return None
    if not items:
        found.errors.append(f"source '{src.name}': file {src.root}: no images found")
        return None
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            found.errors.append(f"source '{src.name}': two items share the key '{item.key}'")
            return None
        seen.add(item.key)
    return items


def allowed_folders(converter: Converter) -> list[Path]:
    """The source root, and absolute folders that the source's options name explicitly."""
    folders = [converter.root]
    for value in converter.options.model_dump().values():
        if isinstance(value, str) and os.path.isabs(value):
            path = Path(value)
            folders.append(path if path.is_dir() else path.parent)
    return [Path(os.path.normpath(os.path.abspath(f))) for f in folders]


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    """Lexically inside one of the folders (``..`` resolved; symlinked datasets stay valid)."""
    normal = Path(os.path.normpath(os.path.abspath(path)))
    return any(normal == f or normal.is_relative_to(f) for f in folders)


def _check_files(converter: Converter, src: SourceConfig, items: list[Item],
                 found: Findings) -> int:
    """Every file an item names exists, stays inside the source root and has a readable header;
    then the converter's header checks. Returns the number of files found in order."""
    folders = allowed_folders(converter)
    problems: list[str] = []
    checked: set[str] = set()
    bad_files = 0
    for item in items:
        before = len(problems)
        for rel in item.paths:
            if rel in checked:
                continue
            checked.add(rel)
            try:
                path = converter.path(rel)
            except BuildError as exc:  # the converter's own confinement refused it
                problems.append(str(exc))
                continue
            if not src.allow_outside_root and not _inside(path, folders):
                problems.append(f"source '{src.name}': file {path}: lies outside the source root "
                                f"{src.root} (named by item '{item.key}')")
            elif not path.is_file():
                problems.append(f"source '{src.name}': file {path}: does not exist "
                                f"(named by item '{item.key}' of format {src.format})")
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                problem = image_header_problem(path)
                if problem:
                    problems.append(f"source '{src.name}': file {path}: {problem}")
        bad_files += len(problems) - before
        if len(problems) == before:  # its files are fine: what their headers tell
            problems += converter.problems_without_pixels(item)
    _record(found, problems, src.name, "file problems")
    return len(checked) - bad_files


def image_header_problem(path: Path) -> str | None:
    """Why a 2D image file is not one the build can read, judged from its header alone."""
    try:
        width, height = image_size(path)
    except ValueError as exc:
        return str(exc)
    return None if width > 0 and height > 0 else f"empty image ({width}x{height})"


def _check_labels(converter: Converter, src: SourceConfig, items: list[Item], label_map: LabelMap,
                  vocab: Vocabulary, found: Findings) -> int:
    """Declared raw labels are in the label map; warn on labels the modality does not list."""
    unknown: dict[str, str] = {}
    used: dict[str, StandardLabel] = {}
    complete = True
    problems: list[str] = []
    raw_seen: set[str] = set()
    for item in items:
        try:
            labels = converter.declared_labels(item)
        except BuildError as exc:
            problems.append(str(exc))
            continue
        if labels is None:
            complete = False  # mask values: only the pixels know
            continue
        for raw in labels:
            raw_seen.add(raw)
            try:
                std = label_map.lookup(raw)
            except BuildError:
                unknown.setdefault(str(raw), item.paths[0] if item.paths else item.key)
                continue
            if std is not None:
                used.setdefault(std.label, std)
    problems += [
        f"source '{src.name}': raw label {raw!r} (e.g. {example}) is not in label map "
        f"{label_map.path}; map it to a canonical label or to 'drop' (or set 'default: drop')"
        for raw, example in sorted(unknown.items())
    ]
    _record(found, problems, src.name, "label problems")
    targets = list(used.values()) if complete else label_map.targets
    for std in sorted(targets, key=lambda s: s.label):
        entry = vocab.resolve(std.label)
        if entry is not None and entry.modalities and src.modality not in entry.modalities:
            found.warnings.append(
                f"source '{src.name}': label '{std.label}' is used with modality '{src.modality}',"
                f" which the vocabulary does not list for it ({', '.join(entry.modalities)});"
                f" label map {label_map.path}")
    return len(raw_seen)


def _record(found: Findings, problems: list[str], source: str, what: str) -> None:
    found.errors.extend(problems[:MAX_LISTED])
    if len(problems) > MAX_LISTED:
        found.errors.append(f"source '{source}': ... and {len(problems) - MAX_LISTED} more {what}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="gmai-build validate",
        description="Check a sources.yaml, its label maps, vocabulary and question pool, and "
        "every file its sources name, without decoding pixels. All problems are reported.")
    p.add_argument("--sources", required=True, type=Path, help="the sources.yaml to check")
    add_path_flag(p)
    add_output_flags(p)
    args = p.parse_args(argv)
    silent = quiet(args)
    found = validate(args.sources, args.show_paths)
    for line in found.errors:
        print(f"error: {line}", file=sys.stderr)
    if not silent:
        for line in found.warnings:
            print(f"warning: {line}", file=sys.stderr)
        for line in found.notes:
            print(line)
    if found.errors:
        print(f"gmai-build validate: {args.sources}: {len(found.errors)} problem(s)", file=sys.stderr)
        return 1
    if not silent:
        extra = f", {len(found.warnings)} warning(s)" if found.warnings else ""
        print(f"{args.sources}: OK{extra}")
    return 0
