"""``gmai-build audit BUILD``: proof that the benchmark cannot be solved without the image.

Reads a build folder (its ``*_VAL.tsv``, ``*_TEST.tsv``, the TEST answer key beside it and the
manifest when present) or single TSV files, and reports:

* blind baselines that never look at the image, each beside its chance expectation: every
  fixed letter, always the last option, the longest and the shortest option, the most frequent
  letter per option count (in-sample: the best any fixed-letter strategy can do), the option
  most similar to the question text, the option that most often was the answer in the other
  split (learnt VAL -> TEST and back; leave-one-out with one split: vocabulary distractors
  that are never answers show up here; reported, and gated only with ``--strict``) and
  the option whose tree placement matches the row's task / department columns (a TEST column
  that gives the answer away shows up here);
* answer letters per option count, and option counts per granularity;
* exact and near-duplicate images across VAL and TEST (perceptual hash of the image without
  overlay from the manifest; of the published image when there is no manifest);
* options related to each other by the vocabulary (synonym, spelling variant, part, whole,
  kind, parent kind): a second right answer, or two options a blind solver can rule out.

It exits 1 when a blind baseline beats chance by more than ``--margin`` points on at least
``--min-questions`` questions (a whole split, or the questions with one option count), when an
answer letter's share for an option count strays more than ``--margin`` points from uniform on
as many questions, when VAL and TEST share a (near-)duplicate image, or when options are
related; 0 otherwise. A chance expectation is what a rule that ignores the answer scores when
the answer's position is uniform: 1/n per question with n options (0 for a letter beyond n).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .dedup import DEFAULT_MAX_DISTANCE
from .errors import BuildError
from .manifest import MANIFEST, ManifestRecord, iter_manifest

LETTERS = "ABCDE"
FIXED_LETTER = {f"always {x}": x for x in LETTERS}
# Columns a TSV shows beside the question; none may name the answer (GMAI-MMBench's TEST
# 'category' is the correct option's text).
META_COLUMNS = ("category", "l2-category", "clinical VQA task", "department",
                "perceptual granularity", "modality", "original task", "hint")
DEFAULT_MARGIN = 3.0
PRIOR = "answer prior of option text (learnt on the other split)"
DEFAULT_MIN_QUESTIONS = 100
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class AuditQuestion:
    """What a blind solver sees of a question, plus the answer and where it came from."""

    index: str
    split: str
    question: str
    options: list[str]
    answer: str | None
    granularity: str = ""
    task: str = ""
    department: str = ""
    modality: str = ""
    phash: str = ""
    group: str = ""
    columns: dict[str, str] = field(default_factory=dict)  # the row's other columns, as shown

    @property
    def n(self) -> int:
        return len(self.options)


@dataclass
class Baseline:
    name: str
    questions: int
    correct: int
    chance: float  # expected correct answers

    @property
    def accuracy(self) -> float:
        return 100 * self.correct / self.questions if self.questions else 0.0

    @property
    def chance_pct(self) -> float:
        return 100 * self.chance / self.questions if self.questions else 0.0

    @property
    def excess(self) -> float:
        return self.accuracy - self.chance_pct


@dataclass
class AuditReport:
    baselines: dict[str, list[Baseline]] = field(default_factory=dict)  # scope -> baselines
    letters: dict[str, dict[str, int]] = field(default_factory=dict)
    options: dict[str, dict[str, float]] = field(default_factory=dict)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# Reading ------------------------------------------------------------------------------------
def _read_tsv(path: Path) -> pd.DataFrame:
    head = pd.read_csv(path, sep="\t", nrows=0).columns
    cols = [c for c in head if c != "image"]
    return pd.read_csv(path, sep="\t", usecols=cols, dtype=str, keep_default_na=False)


def _images(path: Path) -> dict[str, str]:
    """index -> base64 image of a TSV (read only when there is no manifest to hash from)."""
    frame = pd.read_csv(path, sep="\t", usecols=["index", "image"], dtype=str,
                        keep_default_na=False)
    return dict(zip(frame["index"], frame["image"], strict=True))


def read_key(path: Path) -> pd.DataFrame:
    with open(path, encoding="utf-8") as f:
        sep = "\t" if "\t" in f.readline() else ","
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    if not {"index", "answer"} <= set(frame.columns):
        raise BuildError(f"answer key {path} needs columns index and answer")
    return frame.set_index("index")


def load_questions(
    paths: list[Path], answers: Path | None = None,
) -> tuple[list[AuditQuestion], list[str]]:
    """Questions of a build folder or of TSV files; notes on what could not be checked."""
    notes: list[str] = []
    tsvs: list[Path] = []
    manifest: dict[str, ManifestRecord] = {}
    for p in paths:
        if p.is_dir():
            tsvs += sorted(x for x in p.glob("*.tsv") if not x.name.endswith("_answers.tsv"))
            if answers is None and next(p.glob("*_TEST_answers.tsv"), None):
                answers = next(p.glob("*_TEST_answers.tsv"))
        elif p.is_file():
            tsvs.append(p)
        else:
            raise BuildError(f"{p}: no such build folder or TSV file")
        folder = p if p.is_dir() else p.parent
        if (folder / MANIFEST).is_file():  # groups and hashes without overlay
            hint = ("; restore the build's manifest.jsonl (the audit reads the groups and "
                    "image hashes of the questions from it)")
            for rec in iter_manifest(folder / MANIFEST, hint):
                manifest[str(rec.index)] = rec
    if not tsvs:
        raise BuildError(f"no TSV file found in {', '.join(map(str, paths))}")
    key = read_key(answers) if answers is not None else None
    out: list[AuditQuestion] = []
    for tsv in tsvs:
        frame = _read_tsv(tsv)
        split = "TEST" if "_TEST" in tsv.name else "VAL" if "_VAL" in tsv.name else tsv.stem
        if "answer" not in frame.columns and key is None:
            notes.append(f"{tsv.name}: no answer column and no answer key: not audited "
                         "(give --answers KEY)")
            continue
        # Columns matter only where the answer is not shown (TEST): VAL shows it anyway.
        shown = "answer" not in frame.columns
        need_hash = not manifest
        images = _images(tsv) if need_hash else {}
        for row in frame.to_dict("records"):
            idx = str(row["index"])
            known = manifest.get(idx)
            answer = row.get("answer") or None
            if key is not None and idx in key.index:
                answer = str(key.loc[idx, "answer"])
            options = [row[x] for x in LETTERS if row.get(x, "")]
            phash = known.image_phash if known is not None else ""
            if need_hash and images.get(idx):
                phash = _hash_b64(images[idx])
            out.append(AuditQuestion(
                index=idx, split=split, question=row.get("question", ""), options=options,
                answer=answer, granularity=row.get("perceptual granularity", ""),
                task=row.get("clinical VQA task", "") if shown else "",
                department=row.get("department", "") if shown else "",
                modality=row.get("modality", ""), phash=phash,
                group=f"{known.source}/{known.group}" if known is not None else "",
                columns={c: str(row[c]) for c in META_COLUMNS if c in row and shown},
            ))
    if not manifest:
        notes.append("no manifest: near duplicates are hashed from the published images "
                     "(overlays included), and groups are unknown")
    return [q for q in out if q.answer], notes


def _hash_b64(data: str) -> str:
    import base64

    from .dedup import image_phash
    from .render import decode_png

    return image_phash(decode_png(base64.b64decode(data)))


# Blind solvers ------------------------------------------------------------------------------
def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _argbest(values: list[float]) -> int:
    """Position of the largest value; ties go to the first (answer positions are uniform)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


Solver = Callable[[AuditQuestion], str | None]


def fixed_rules(questions: list[AuditQuestion]) -> dict[str, Solver]:
    """Rules that see only the question text and options (plus, learned ones, the answers of
    the OTHER questions: leave-one-out, so no question is scored on its own answer)."""
    rules: dict[str, Solver] = {
        name: (lambda q, x=x: x) for name, x in FIXED_LETTER.items()
    }
    rules["always last"] = lambda q: LETTERS[q.n - 1]
    rules["longest option"] = lambda q: LETTERS[_argbest([len(o) for o in q.options])]
    rules["shortest option"] = lambda q: LETTERS[_argbest([-len(o) for o in q.options])]

    def similar(q: AuditQuestion) -> str:
        qw = _words(q.question)
        return LETTERS[_argbest([len(qw & _words(o)) / max(1, len(_words(o)))
                                 for o in q.options])]

    rules["most similar to question"] = similar

    letter_counts: dict[int, Counter[str]] = defaultdict(Counter)
    for q in questions:
        letter_counts[q.n][q.answer or ""] += 1

    def frequent(q: AuditQuestion) -> str:
        c = letter_counts[q.n]
        return max(LETTERS[:q.n], key=lambda x: (c[x], -LETTERS.index(x)))

    rules["most frequent letter"] = frequent

    # Per split: how often each option text is the answer, and how often it is shown.
    as_answer: dict[str, Counter[str]] = defaultdict(Counter)
    shown: dict[str, Counter[str]] = defaultdict(Counter)
    for q in questions:
        right = q.options[LETTERS.index(q.answer)] if q.answer in LETTERS[:q.n] else ""
        as_answer[q.split][right] += 1
        shown[q.split].update(q.options)
    splits = sorted(as_answer)

    def prior(q: AuditQuestion) -> str:
        """Learnt where a solver could learn it: on the other split(s) (VAL -> TEST and back);
        with a single split, leave-one-out on the other questions."""
        right = q.options[LETTERS.index(q.answer)] if q.answer in LETTERS[:q.n] else ""
        learn = [s for s in splits if s != q.split] or [q.split]
        rates = []
        for o in q.options:
            a = sum(as_answer[s][o] for s in learn) - (len(splits) == 1 and o == right)
            n = sum(shown[s][o] for s in learn) - (len(splits) == 1)
            rates.append(a / n if n > 0 else 0.0)
        return LETTERS[_argbest(rates)]

    rules[PRIOR] = prior
    return rules


def column_rule(column: str) -> Solver:
    """The option whose text is the value of ``column`` (or contained in it)."""

    def named(q: AuditQuestion) -> str | None:
        value = " ".join(q.columns.get(column, "").lower().split())
        if not value:
            return None
        scores = [2.0 if " ".join(o.lower().split()) == value
                  else 1.0 if " ".join(o.lower().split()) in value else 0.0 for o in q.options]
        return LETTERS[_argbest(scores)] if max(scores) > 0 else None

    return named


def metadata_rule() -> Solver:
    """The option whose tree placement (task, department) matches the row's columns."""
    from .taxonomy import load_vocabulary

    vocab = load_vocabulary()

    def match(q: AuditQuestion) -> str | None:
        if not q.task and not q.department:
            return None
        scores = []
        for o in q.options:
            entry = vocab.resolve(o)
            if entry is None:
                scores.append(0.0)
                continue
            task, dept = entry.placement(q.modality)
            scores.append(float(bool(q.task) and task == q.task)
                          + float(bool(q.department) and dept == q.department))
        return LETTERS[_argbest(scores)]

    return match


def score(questions: list[AuditQuestion], name: str, rule: Solver) -> Baseline:
    """Accuracy of a rule (no opinion: 'A') and its chance expectation: 1/n per question, or
    for a fixed letter 1/n where the question has that letter and 0 where it has not."""
    correct = 0
    chance = 0.0
    fixed = FIXED_LETTER.get(name)
    for q in questions:
        correct += (rule(q) or "A") == q.answer
        if fixed is None or LETTERS.index(fixed) < q.n:
            chance += 1 / q.n
    return Baseline(name, len(questions), correct, chance)


# The audit ----------------------------------------------------------------------------------
def gated(name: str, strict: bool) -> bool:
    """Learnt baselines (a label prior trained on the other split) fail the audit only with
    ``--strict``: a build whose pools are small must fill options from the vocabulary, whose
    labels are never answers, and a solver trained on VAL learns exactly that."""
    return strict or name != PRIOR


def audit(questions: list[AuditQuestion], margin: float = DEFAULT_MARGIN,
          min_questions: int = DEFAULT_MIN_QUESTIONS,
          max_distance: int = DEFAULT_MAX_DISTANCE, strict: bool = False) -> AuditReport:
    report = AuditReport()
    rules = fixed_rules(questions)
    rules["option placed like the row's task/department"] = metadata_rule()
    for column in META_COLUMNS:
        if any(q.columns.get(column) for q in questions):
            rules[f"option named by column '{column}'"] = column_rule(column)
    scopes: dict[str, list[AuditQuestion]] = {"all": questions}
    for split in sorted({q.split for q in questions}):
        scopes[split] = [q for q in questions if q.split == split]
    for n in sorted({q.n for q in questions}):
        scopes[f"{n} options"] = [q for q in questions if q.n == n]
    for scope, qs in scopes.items():
        if not qs or (scope != "all" and len(qs) == len(questions)):
            continue  # the same questions as "all"
        report.baselines[scope] = [score(qs, name, rule) for name, rule in rules.items()]
        for b in report.baselines[scope]:
            if b.questions >= min_questions and b.excess > margin and gated(b.name, strict):
                report.failures.append(
                    f"{scope}: '{b.name}' scores {b.accuracy:.1f}% on {b.questions} questions, "
                    f"{b.excess:.1f} points above chance ({b.chance_pct:.1f}%)")
    for n in sorted({q.n for q in questions}):
        c = Counter(q.answer for q in questions if q.n == n)
        report.letters[str(n)] = {x: c[x] for x in LETTERS[:n]}
        total = sum(c.values())
        for x in LETTERS[:n]:
            off = 100 * c[x] / total - 100 / n
            if total >= min_questions and abs(off) > margin:
                report.failures.append(f"{n} options: answer {x} in {100 * c[x] / total:.1f}% "
                                       f"of {total} questions (uniform {100 / n:.1f}%)")
    by_gran: dict[str, list[int]] = defaultdict(list)
    for q in questions:
        by_gran[q.granularity or "(unknown)"].append(q.n)
    report.options = {g: {"questions": len(v), "mean_options": round(sum(v) / len(v), 3)}
                      for g, v in sorted(by_gran.items())}
    report.near_duplicates = cross_split_duplicates(questions, max_distance)
    if report.near_duplicates:
        report.failures.append(f"{len(report.near_duplicates)} (near-)duplicate image pair(s) "
                               "across VAL and TEST")
    report.violations = relation_violations(questions)
    if report.violations:
        report.failures.append(f"{len(report.violations)} question(s) with related options")
    return report


def cross_split_duplicates(questions: list[AuditQuestion],
                           max_distance: int) -> list[dict[str, Any]]:
    from .dedup import near_duplicate_pairs

    images: dict[tuple[str, str], AuditQuestion] = {}
    for q in questions:
        if q.phash:
            images.setdefault((q.split, q.phash), q)
    firsts = list(images.values())
    groups = [q.group or f"{q.split}:{q.index}" for q in firsts]
    pairs = near_duplicate_pairs([q.phash for q in firsts], groups, max_distance)
    return [{"a": firsts[i].index, "a_split": firsts[i].split, "b": firsts[j].index,
             "b_split": firsts[j].split, "distance": d}
            for i, j, d in pairs if firsts[i].split != firsts[j].split]


def relation_violations(questions: list[AuditQuestion]) -> list[dict[str, Any]]:
    from .relations import load_relations

    rel = load_relations()
    out = []
    for q in questions:
        for i, a in enumerate(q.options):
            for b in q.options[i + 1:]:
                why = rel.relation(a, b)
                if why:
                    out.append({"index": q.index, "split": q.split, "a": a, "b": b,
                                "relation": why})
    return out


def markdown(report: AuditReport, margin: float, min_questions: int,
             strict: bool = False) -> str:
    lines = ["# gmai-build audit", ""]
    lines += [f"- {n}" for n in report.notes]
    for scope, baselines in report.baselines.items():
        n = baselines[0].questions if baselines else 0
        lines += ["", f"## Blind baselines: {scope} ({n} questions)", "",
                  "| baseline (sees no image) | accuracy | chance | excess |",
                  "|---|---:|---:|---:|"]
        for b in baselines:
            over = b.questions >= min_questions and b.excess > margin
            flag = (" **FAIL**" if over and gated(b.name, strict)
                    else " (learnt: gated with --strict)" if over else "")
            lines.append(f"| {b.name} | {b.accuracy:.1f}% | {b.chance_pct:.1f}% | "
                         f"{b.excess:+.1f}{flag} |")
    lines += ["", "## Answer letters per option count", "",
              "| options | questions | A | B | C | D | E | uniform |", "|---:|---:|" + "---:|" * 6]
    for n, letters in report.letters.items():
        total = sum(letters.values())
        cells = [f"{letters[x]} ({100 * letters[x] / total:.1f}%)" if x in letters else ""
                 for x in LETTERS]
        lines.append(f"| {n} | {total} | " + " | ".join(cells) + f" | {100 / int(n):.1f}% |")
    lines += ["", "## Options per granularity", "", "| granularity | questions | mean options |",
              "|---|---:|---:|"]
    lines += [f"| {g} | {v['questions']} | {v['mean_options']:.2f} |"
              for g, v in report.options.items()]
    lines += ["", f"## Near-duplicate images across VAL and TEST: {len(report.near_duplicates)}"]
    lines += [f"- {p['a_split']} {p['a']} ~ {p['b_split']} {p['b']} (distance {p['distance']})"
              for p in report.near_duplicates[:100]]
    lines += ["", f"## Related options (vocabulary relations): {len(report.violations)}"]
    lines += [f"- {v['split']} {v['index']}: '{v['a']}' / '{v['b']}' ({v['relation']})"
              for v in report.violations[:100]]
    lines += ["", "## Verdict", ""]
    if not strict:
        lines.append("(The learnt label prior is reported but not gated; --strict gates it.)")
    if report.failures:
        lines += [f"- FAIL: {f}" for f in report.failures]
    else:
        lines.append(f"PASS: no gated blind baseline beats chance by more than {margin:g} points on "
                     f"{min_questions} or more questions; no cross-split duplicate; no related "
                     "options.")
    return "\n".join(lines) + "\n"


def to_json(report: AuditReport) -> dict[str, Any]:
    return {
        "baselines": {s: [{"name": b.name, "questions": b.questions, "correct": b.correct,
                           "accuracy": round(b.accuracy, 2), "chance": round(b.chance_pct, 2),
                           "excess": round(b.excess, 2)} for b in bs]
                      for s, bs in report.baselines.items()},
        "answer_letters_by_option_count": report.letters,
        "options_by_granularity": report.options,
        "near_duplicates": report.near_duplicates,
        "relation_violations": report.violations,
        "failures": report.failures,
        "notes": report.notes,
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="gmai-build audit",
        description="Blind baselines, letter balance, near duplicates and related options of a "
        "built benchmark. Exit 1 when it can be gamed.")
    p.add_argument("build", nargs="+", type=Path, help="build folder, or VAL/TEST TSV files")
    p.add_argument("--answers", type=Path, help="TEST answer key (default: the one in BUILD)")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help="points above chance a blind baseline may score (default 3)")
    p.add_argument("--min-questions", type=int, default=DEFAULT_MIN_QUESTIONS,
                   help="questions a scope needs before it can fail (default 100)")
    p.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE,
                   help="bits (of 256) two near-duplicate images' perceptual hashes may differ "
                   f"in (default {DEFAULT_MAX_DISTANCE}, as the build)")
    p.add_argument("--strict", action="store_true",
                   help="also fail on the learnt label prior (trained on the other split)")
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = p.parse_args(argv)
    questions, notes = load_questions(args.build, args.answers)
    if not questions:
        raise BuildError("no question with a known answer to audit: " + "; ".join(notes))
    report = audit(questions, args.margin, args.min_questions, args.max_distance, args.strict)
    report.notes = notes + report.notes
    sys.stdout.write(markdown(report, args.margin, args.min_questions, args.strict))
    if args.json:
        args.json.write_text(json.dumps(to_json(report), indent=2, sort_keys=True) + "\n")
    return 1 if report.failures else 0
