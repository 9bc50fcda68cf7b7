"""CircularEval copies: every question again with its options rotated, for VLMEvalKit's
circular evaluation (a question counts only when the model answers all its rotations).

VLMEvalKit's conventions (``vlmeval/dataset/utils/multiple_choice.py``, ``mcq_circular_eval``):
the original question keeps its ``index``; rotation ``k`` of it has ``index + k * 1_000_000``;
``g_index`` (the original's index, also ``index % 1e6`` when the column is absent) groups the
rotations; a dataset takes the circular branch when its name contains "circular"
(``vlmeval/dataset/image_mcq.py``). So the copies go to their own files,
``<name>_circular_VAL.tsv``, ``<name>_circular_TEST.tsv`` and ``<name>_circular_TEST_answers.tsv``,
beside the unchanged vanilla ones. Rotation ``k`` of options ``[o0 .. on-1]`` is
``[ok .. on-1, o0 .. ok-1]`` (MMBench's order); the image and the question text stay the same.

The copies are derived from the staged vanilla TSVs row by row, so they carry exactly the
vanilla columns (plus ``g_index``) whatever those are.
"""

from __future__ import annotations

from pathlib import Path

from .errors import BuildError
from .writer import read_tsv_rows, tsv_writer

OFFSET = 1_000_000
LETTERS = "ABCDE"
GROUP_COLUMN = "g_index"


def circular_files(name: str) -> dict[str, str]:
    """Vanilla output file -> its circular counterpart."""
    return {f"{name}_{part}.tsv": f"{name}_circular_{part}.tsv"
            for part in ("VAL", "TEST", "TEST_answers")}


def rotate(options: list[str], answer: str | None, k: int) -> tuple[list[str], str | None]:
    """Options shifted left by ``k``; the answer letter follows its option."""
    n = len(options)
    rotated = options[k:] + options[:k]
    if answer is None or answer not in LETTERS[:n]:
        return rotated, answer
    return rotated, LETTERS[(LETTERS.index(answer) - k) % n]


def _copies(path: Path, out: Path, counts: dict[int, int] | None) -> dict[int, int]:
    """Write the rotations of one TSV; returns index -> option count.

    With ``counts`` (an answer key) the number of rotations comes from the questions' file.
    """
    rows = read_tsv_rows(path)
    header = next(rows)
    col = {c: i for i, c in enumerate(header)}
    letters = [c for c in LETTERS if c in col]
    seen: dict[int, int] = {}
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = tsv_writer(f)
        w.writerow([*header, GROUP_COLUMN])
        for row in rows:
            index = int(row[col["index"]])
            if index >= OFFSET:
                raise BuildError(f"index {index} is not below {OFFSET}: CircularEval numbers "
                                 f"rotation k as index + k * {OFFSET} (VLMEvalKit's convention)",
                                 file=path.name)
            options = [row[col[c]] for c in letters if row[col[c]] != ""]
            n = counts[index] if counts is not None else len(options)
            seen[index] = n
            answer = row[col["answer"]] if "answer" in col else None
            for k in range(n):
                new = list(row)
                new[col["index"]] = str(index + k * OFFSET)
                if counts is None:
                    rotated, _ = rotate(options, None, k)
                    for j, c in enumerate(letters):
                        new[col[c]] = rotated[j] if j < n else ""
                if answer is not None:
                    new[col["answer"]] = rotate([""] * n, answer, k)[1] or ""
                w.writerow([*new, str(index)])
    return seen


def write_circular(stage: Path, name: str) -> list[str]:
    """Rotated copies of the staged vanilla VAL, TEST and TEST answer key; returns their names."""
    files = circular_files(name)
    val, test, key = list(files)
    _copies(stage / val, stage / files[val], None)
    counts = _copies(stage / test, stage / files[test], None)
    _copies(stage / key, stage / files[key], counts)
    return list(files.values())


def remove_stale(out_dir: Path, name: str) -> None:
    """A build without CircularEval must not leave an older build's circular files behind."""
    for circular in circular_files(name).values():
        (out_dir / circular).unlink(missing_ok=True)
