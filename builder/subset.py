"""``gmai-build subset``: the questions of a build that sit on chosen branches of the tree.

GMAI-MMBench's "customised evaluation": pick tasks, departments, modalities, granularities,
sources or labels, and get VLMEvalKit-ready files for just those questions.

    gmai-build subset --from build/ --out subset/ --department Urology --modality CT --modality MRI

Filters combine with AND across keys and OR within one key (``--modality CT --modality MRI`` is
CT or MRI). Values are matched case-insensitively against the build's own values, and a value the
build does not have is an error that lists what it has. The subset keeps the build's indices and
exact columns (rows are copied as written, including the answer key's columns and, when the build
has them, the CircularEval files), and gets its own manifest, summary and ``subset.json``
(filters, source build, counts). Outputs are published atomically.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .circular import OFFSET
from .errors import BuildError
from .manifest import MANIFEST, ManifestRecord, read_manifest, write_manifest
from .outdir import OutputFolder
from .taxonomy import normalize_key
from .writer import (
    BUILD_INFO,
    read_tsv_rows,
    summary_markdown,
    summary_tables,
    tsv_writer,
    write_json,
)

# CLI option -> the record's value it matches exactly (case-insensitive).
EXACT_KEYS: dict[str, Callable[[ManifestRecord], str]] = {
    "task": lambda r: r.task,
    "department": lambda r: r.department,
    "modality": lambda r: r.modality,
    "granularity": lambda r: r.granularity,
    "source": lambda r: r.source,
}
SUBSET_INFO = "subset.json"
NO_DEPARTMENT = "none"  # how the empty department is spelled on the command line


@dataclass
class Selection:
    """Wanted values per manifest field (OR within a field, AND across), and label substrings."""

    exact: dict[str, list[str]] = field(default_factory=dict)
    label_contains: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, list[str]]:
        out = {k: list(v) for k, v in self.exact.items() if v}
        if self.label_contains:
            out["label_contains"] = list(self.label_contains)
        return out

    def matches(self, record: ManifestRecord) -> bool:
        for key, wanted in self.exact.items():
            if wanted and normalize_key(EXACT_KEYS[key](record) or NO_DEPARTMENT) not in {
                    normalize_key(w) for w in wanted}:
                return False
        label = record.category.lower()
        return not self.label_contains or any(s.lower() in label for s in self.label_contains)


def read_build(build: Path) -> tuple[str, list[ManifestRecord]]:
    """The build's name and its manifest records (index order)."""
    manifest = build / MANIFEST
    if not manifest.is_file():
        raise BuildError(f"no build here: {manifest} is missing (give the folder a build wrote)",
                         file=build)
    records = read_manifest(manifest, "; restore the build's manifest.jsonl (it lists the "
                            "build's questions), or build the folder again")
    name = None
    for info, key in ((build / BUILD_INFO, ("settings", "name")), (build / SUBSET_INFO, ("name",))):
        if name is None and info.is_file():
            data = json.loads(info.read_text(encoding="utf-8"))
            for part in key:
                data = data.get(part, {}) if isinstance(data, dict) else {}
            name = data if isinstance(data, str) else None
    if name is None:
        vals = [p.name.removesuffix("_VAL.tsv") for p in build.glob("*_VAL.tsv")
                if "_circular_" not in p.name]
        if len(vals) != 1:
            raise BuildError("cannot tell the build's name (no build.json, and not exactly one "
                             "*_VAL.tsv)", file=build)
        name = vals[0]
    return name, sorted(records, key=lambda r: r.index)


def check_values(selection: Selection, records: Sequence[ManifestRecord]) -> None:
    """Every wanted value exists in the build; otherwise say which values it has."""
    problems = []
    for key, wanted in selection.exact.items():
        have = sorted({EXACT_KEYS[key](r) or NO_DEPARTMENT for r in records})
        keys = {normalize_key(h) for h in have}
        for w in wanted:
            if normalize_key(w) not in keys:
                close = difflib.get_close_matches(w, have, n=1, cutoff=0.5)
                problems.append(f"--{key} '{w}': not in this build"
                                + (f" (did you mean '{close[0]}'?)" if close else "")
                                + f"; it has: {', '.join(have)}")
    if problems:
        raise BuildError("; ".join(problems))


def _copy_rows(src: Path, dst: Path, keep: set[int]) -> int:
    """Copy the header and the rows whose question (or rotation's original) is kept."""
    rows = read_tsv_rows(src)
    header = next(rows)
    at = header.index("index")
    n = 0
    with open(dst, "w", encoding="utf-8", newline="") as f:
        w = tsv_writer(f)
        w.writerow(header)
        for row in rows:
            if int(row[at]) % OFFSET in keep:
                w.writerow(row)
                n += 1
    return n


def write_subset(build: Path, out: Path, selection: Selection, name: str | None = None) -> dict:
    """Write the subset of ``build`` chosen by ``selection`` into ``out``; returns subset.json."""
    build_name, records = read_build(build)
    check_values(selection, records)
    chosen = [r for r in records if selection.matches(r)]
    if not chosen:
        raise BuildError(f"no question of {build} matches {selection.describe()}")
    name = name or f"{build_name}_subset"
    keep = {r.index for r in chosen}
    files: dict[str, int] = {}
    folder = OutputFolder(out)  # the same atomic layout as a build (outdir.py)
    with folder.locked():
        folder.remove_leftovers()
        with folder.staging() as stage:
            for src in sorted(build.glob(f"{build_name}_*.tsv")):
                target = name + src.name[len(build_name):]
                files[target] = _copy_rows(src, stage / target, keep)
            write_manifest(stage / MANIFEST, chosen)
            summary = summary_tables(chosen)
            write_json(stage / "summary.json", summary)
            (stage / "summary.md").write_text(summary_markdown(summary, name), encoding="utf-8")
            info = {
                "tool": "gmai-build subset",
                "from": str(build.resolve()),
                "from_name": build_name,
                "name": name,
                "filters": selection.describe(),
                "questions": len(chosen),
                "rows": files,
            }
            write_json(stage / SUBSET_INFO, info)
            folder.publish(stage, last=MANIFEST)
    return info


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="gmai-build subset",
        description="Write the questions of a build on chosen tree branches as a VLMEvalKit-ready "
        "build (AND across options, OR within a repeated option).")
    p.add_argument("--from", dest="build", required=True, type=Path, help="a build's folder")
    p.add_argument("--out", required=True, type=Path, help="folder for the subset")
    p.add_argument("--name", help="file name prefix of the subset (default: <build name>_subset)")
    for key in EXACT_KEYS:
        p.add_argument(f"--{key}", action="append", default=[], metavar="VALUE",
                       help=f"keep this {key} (repeatable)"
                       + ("; 'none' for questions without a department" if key == "department"
                          else ""))
    p.add_argument("--label-contains", action="append", default=[], metavar="TEXT",
                   help="keep labels containing TEXT, case-insensitive (repeatable)")
    args = p.parse_args(argv)
    if args.name is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", args.name):
        raise BuildError(f"--name '{args.name}': use letters, digits, '_', '.', '-'")
    if args.build.resolve() == args.out.resolve():
        raise BuildError("--out must differ from --from (the subset would replace the build)")
    selection = Selection({k: getattr(args, k) for k in EXACT_KEYS}, args.label_contains)
    info = write_subset(args.build, args.out, selection, args.name)
    print(f"gmai-build subset: {info['questions']} questions -> {args.out} "
          + ", ".join(f"{f}: {n} rows" for f, n in info["rows"].items()))
    return 0
