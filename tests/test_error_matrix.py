"""The matrix of issue 9 points 6-8: input kind -> message -> outcome, through the CLI.

Every row builds a real project (chest X-rays in class folders) into an output folder that
already holds a build, breaks one file the user writes, runs ``gmai-build`` and checks the
one-line message (file, key path, reason), the exit status, that no traceback is printed and
that the published build is untouched with nothing left behind. Kills, signals and rebuilds
have their own modules (test_crash_safety.py, test_rebuild.py); the fuzzing is in
test_fuzz_yaml.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from gmai_build.cli import main
from gmai_build.questions import DEFAULT_POOL
from helpers import leftovers, published, write_yaml, xray_class_folders, xray_source

MAP = "department: Pulmonary Medicine\nlabels:\n  normal: normal\n  pneumonia: pneumonia\n"

# (row id, file written, bytes, what the message must say after "gmai-build: error: <file>: ")
ROWS = [
    ("sources not UTF-8", "sources.yaml", b"build: {name: M}\nsources: \xff\n",
     "line 2: not UTF-8 text (byte 0xff at offset 26); save the sources file as UTF-8"),
    ("sources YAML syntax", "sources.yaml", b"build: {name: M\nsources: [\n",
     "line 2, column 8: not valid YAML: while parsing a flow mapping did not find expected ',' "
     "or '}'"),
    ("sources impossible date", "sources.yaml", b"build: 2024-13-45\n",
     "not valid YAML: month must be in 1..12"),
    ("sources nested 3000 deep", "sources.yaml", b"[" * 3000,
     "line 1, column 1001: not valid YAML: while increasing flow level exceeded maximum nesting "
     "depth"),
    ("sources a list", "sources.yaml", b"- a\n- b\n",
     "expected a mapping with 'build' and 'sources' keys"),
    ("sources empty", "sources.yaml", b"",
     "expected a mapping with 'build' and 'sources' keys"),
    ("label map not UTF-8", "map.yaml", b"labels:\n  normal: normal\n  pneumonia: pneum\xf6nia\n",
     "line 3: not UTF-8 text (byte 0xf6 at offset 43); save the label map as UTF-8"),
    ("label map a list", "map.yaml", b"- normal\n- pneumonia\n",
     "expected a label map (a mapping of keys), found a list"),
    ("label map empty", "map.yaml", b"",
     "expected a label map (a mapping of keys), found an empty file"),
    ("label map labels a list", "map.yaml", b"labels: [normal, pneumonia]\n",
     "labels: Input should be a valid dictionary, found a list"),
    ("label map target a list", "map.yaml", b"labels:\n  normal: [normal]\n  pneumonia: pneumonia\n",
     "labels.normal: expected a canonical label (text), 'drop', or {label, task?, department?}, "
     "found a list"),
    ("label map override task a list (was: unhashable list)", "map.yaml",
     b"labels:\n  normal: {label: normal, task: [Disease Diagnosis]}\n  pneumonia: pneumonia\n",
     "labels.normal.task: Input should be a valid string, found a list"),
    ("label map department a list", "map.yaml",
     b"department: [Pulmonary Medicine]\nlabels: {normal: normal, pneumonia: pneumonia}\n",
     "department: Input should be a valid string, found a list"),
    ("label map yes/no key", "map.yaml", b"labels:\n  yes: normal\n  pneumonia: pneumonia\n",
     "labels.true: the raw label true is not text (YAML reads yes/no/on/off as true/false); "
     "quote it in the YAML"),
    ("label map new_labels a number", "map.yaml",
     b"new_labels: 5\nlabels: {normal: normal, pneumonia: pneumonia}\n",
     "new_labels: Input should be a valid list, found a number"),
    ("label map synonyms a number", "map.yaml",
     b"new_labels: [{label: opacity, task: Disease Diagnosis, department: none, synonyms: 3}]\n"
     b"labels: {normal: normal, pneumonia: pneumonia}\n",
     "new_labels[0].synonyms: Input should be a valid list, found a number"),
    ("label map number key at top", "map.yaml", b"1: x\nlabels: {normal: normal}\n",
     "the key 1 must be text (quote it in the YAML)"),
    ("vocabulary not UTF-8", "vocab.yaml", b"labels:\n  - {label: opacit\xe9}\n",
     "line 2: not UTF-8 text (byte 0xe9 at offset 26); save the vocabulary file as UTF-8"),
    ("vocabulary labels a mapping", "vocab.yaml", b"labels:\n  opacity: 1\n",
     "labels: Input should be a valid list, found a mapping"),
    ("vocabulary label a number", "vocab.yaml", b"labels:\n  - {label: 5, task: Disease Diagnosis}\n",
     "labels[0].label: Input should be a valid string, found a number"),
    ("vocabulary modalities text", "vocab.yaml",
     b"labels:\n  - {label: normal, modalities: X-ray}\n",
     "labels[0].modalities: Input should be a valid list, found text"),
    ("pool not UTF-8", "pool.yaml", b"\x80templates: []\n",
     "line 1: not UTF-8 text (byte 0x80 at offset 0); save the question pool as UTF-8"),
    # (the pool's own checks, templates.py, report every problem of the file at once)
    ("pool templates a number", "pool.yaml", b"templates: 3\n",
     "templates: Input should be a valid list"),
    ("pool template text a list", "pool.yaml",
     b"templates:\n  - {id: a, granularity: Image Level, text: [x]}\n",
     "templates[0].text: Input should be a valid string"),
    ("pool template lone brace", "pool.yaml",
     b"templates:\n  - {id: a, granularity: Image Level, text: 'a } b?'}\n",
     "templates[0].text: text is not a valid format string (Single '}' encountered in format "
     "string); write braces as {{ }}"),
    # (named by sources.yaml, which checks that the path is a file before anything reads it)
    ("a label map that is a folder", "map.yaml", None,
     "sources[0].label_map: label map 'map.yaml' not found (looked for "),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("matrix")
    xray_class_folders(root / "imgs", {"normal": 4, "pneumonia": 4})
    (root / "map.yaml").write_text(MAP)
    (root / "vocab.yaml").write_text("labels: []\n")
    (root / "pool.yaml").write_text(DEFAULT_POOL.read_text())
    write_yaml(root / "sources.yaml", {
        "build": {"name": "M", "vocabulary": ["vocab.yaml"], "question_pool": "pool.yaml"},
        "sources": [xray_source()]})
    assert main(["--sources", str(root / "sources.yaml"), "--out", str(root / "out"),
                 "--no-progress"]) == 0
    return root


@pytest.mark.parametrize("row, name, content, message", ROWS, ids=[r[0] for r in ROWS])
def test_matrix(built: Path, tmp_path: Path, capsys, row: str, name: str,
                content: bytes | None, message: str) -> None:
    import shutil

    root = tmp_path / "p"
    shutil.copytree(built, root, symlinks=True)
    out = root / "out"
    before = published(out)
    target = root / name
    if content is None:
        target.unlink()
        target.mkdir()
    else:
        target.write_bytes(content)
    capsys.readouterr()
    code = main(["--sources", str(root / "sources.yaml"), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if name != "pool.yaml":
        assert len(lines) == 1, err  # one message
    named = root / "sources.yaml" if content is None else target
    assert lines[0].startswith(f"gmai-build: error: {named}: {message}"), err
    assert published(out) == before and not leftovers(out)


def test_matrix_rows_start_from_a_valid_project(built: Path, tmp_path: Path, capsys) -> None:
    """Each row breaks exactly one thing: the untouched project builds."""
    assert main(["validate", "--sources", str(built / "sources.yaml")]) == 0
    assert yaml.safe_load((built / "map.yaml").read_text())["labels"]["normal"] == "normal"
