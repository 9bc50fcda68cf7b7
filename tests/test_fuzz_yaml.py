"""Fuzzing every YAML file a user writes: only the project's own errors, never a traceback.

For sources.yaml, label maps, vocabulary files and question pools, hypothesis generates
(1) byte-level damage of a valid file (bytes inserted, replaced, cut; invalid UTF-8 included),
(2) a valid file with one value anywhere replaced by a value of another type, a key removed or
an unknown key added, and (3) arbitrary YAML documents built from the file's own keys. The
loader must either accept the file or raise ConfigError naming the file; the CLI must answer
with exit status 0 or 1 and never print a traceback.

The default suite runs a few hundred examples per file and kind; ``-m slow`` runs ten times as
many (``test_*_thorough``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from gmai_build.config import load_config
from gmai_build.errors import ConfigError
from gmai_build.questions import DEFAULT_POOL, QuestionPool
from gmai_build.taxonomy import BUNDLED_SOURCE_MAPS, LabelMap, Vocabulary, load_vocabulary
from helpers import write_yaml, xray_class_folders
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = 300
THOROUGH = 3000
# The default suite replays the same examples on every run (a CI failure reproduces); the
# thorough runs draw new ones each time (print_blob: a failure prints how to replay it).
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
THOROUGH_FUZZ = settings(FUZZ, max_examples=THOROUGH, derandomize=False, print_blob=True)

# Values of any YAML type. Text avoids path-like characters so that a fuzzed sources.yaml can
# never point a source at "/" or "${HOME}" (the CLI test validates what it is given).
_TEXT = st.text(st.characters(blacklist_characters="/\\~${}", blacklist_categories=["Cs"]),
                max_size=12)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
    _TEXT, st.dates(), st.binary(max_size=6),
    st.sampled_from(["drop", "error", "none", "normal", "pneumonia", "Disease Diagnosis",
                     "Pulmonary Medicine", "X-ray", "Image Level", "{modality}", "}", "yes"]),
)
_KEYS = st.one_of(_TEXT, st.integers(-3, 3), st.booleans(), st.none(), st.sampled_from([
    "labels", "label", "task", "department", "new_labels", "default", "synonyms", "modalities",
    "placements", "templates", "id", "granularity", "text", "tasks", "options", "build", "sources",
    "name", "format", "root", "modality", "label_map", "license", "citation", "seed",
    "local_vocabulary_fallback", "per_label_cap", "vocabulary", "question_pool", "intensity",
]))
VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=12)


# The valid files the mutations start from ---------------------------------------------------
VALID_MAP: dict[str, Any] = {
    "department": "Pulmonary Medicine",
    "new_labels": [{"label": "lung opacity", "task": "Disease Diagnosis",
                    "department": "Pulmonary Medicine", "modalities": ["X-ray"],
                    "synonyms": ["opacity"]}],
    "default": "error",
    "labels": {"normal": "normal", "1": "pneumonia", "opaque": {"label": "lung opacity",
                                                                  "task": "Disease Diagnosis"},
               "other": "drop"},
}
VALID_VOCAB: dict[str, Any] = {"labels": [
    {"label": "lung opacity", "task": "Disease Diagnosis", "department": "Pulmonary Medicine",
     "modalities": ["X-ray"], "synonyms": ["opacity", "opacities"]},
    {"label": "pneumonia", "synonyms": ["lung infection"]},
]}
VALID_POOL = yaml.safe_load(DEFAULT_POOL.read_text())


def valid_sources(tmp: Path) -> dict[str, Any]:
    xray_class_folders(tmp / "imgs", {"normal": 2, "pneumonia": 2})
    valid_map = copy.deepcopy(VALID_MAP)
    valid_map["labels"]["pneumonia"] = "pneumonia"
    (tmp / "map.yaml").write_text(yaml.safe_dump(valid_map))
    return {"build": {"name": "F", "seed": 1, "per_label_cap": 5, "options": {"min": 2, "max": 4},
                      "vocabulary": [], "question_pool": str(DEFAULT_POOL)},
            "sources": [{"name": "xr", "format": "folder_per_class", "root": "imgs",
                         "modality": "X-ray", "label_map": "map.yaml", "license": "CC BY 4.0",
                         "citation": "x", "options": {}, "slicing": {"axis": "axial"}}]}


# Mutations -----------------------------------------------------------------------------------
def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a document (including the root)."""
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> Any:
    """A valid document with one value swapped for another type, a key dropped or one added."""
    doc = copy.deepcopy(valid)
    path = draw(st.sampled_from(_paths(doc)))
    if not path:
        return draw(VALUES)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(VALUES)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(_KEYS)] = draw(VALUES)
    else:
        parent.append(draw(VALUES))
    return doc


@st.composite
def damaged_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid file with a few byte-level edits (bad UTF-8 is the common case)."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "replace", "cut"]))
        chunk = draw(st.binary(min_size=1, max_size=4) | st.sampled_from(
            [b"\xff", b"\xc3", b"\xe2\x82", b"\x00", b"\t", b":", b"- ", b"[", b"{", b"&a", b"*a",
             b"!!binary", b"!!python/object"]))
        if kind == "insert":
            data[pos:pos] = chunk
        elif kind == "replace":
            data[pos:pos + len(chunk)] = chunk
        else:
            del data[pos:pos + draw(st.integers(1, 40))]
    return bytes(data)


def dump(data: Any) -> bytes:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode()


# The loaders under test ----------------------------------------------------------------------
_BASE_VOCAB = load_vocabulary()


def _clone(vocab: Vocabulary) -> Vocabulary:
    """A copy of the bundled vocabulary (a label map adds its new_labels to it)."""
    out = Vocabulary()
    out.__dict__.update({k: copy.copy(v) for k, v in vocab.__dict__.items()})
    return out


def check_loader(path: Path, content: bytes, load) -> None:
    path.write_bytes(content)
    try:
        load(path)
    except ConfigError as exc:
        assert str(path) in str(exc), f"the message does not name the file: {exc}"
        assert "Traceback" not in str(exc)


def load_label_map(path: Path) -> None:
    LabelMap(path, "xr", _clone(_BASE_VOCAB))


def load_vocabulary_file(path: Path) -> None:
    _clone(_BASE_VOCAB).add_file(path)  # as build.vocabulary files are read


def load_pool(path: Path) -> None:
    QuestionPool(path)


def load_sources(path: Path) -> None:
    load_config(path)


def check_cli(path: Path, content: bytes, capsys) -> None:
    """``gmai-build validate``: exit 0 or 1, messages naming files, never a traceback."""
    from gmai_build.cli import main

    path.write_bytes(content)
    capsys.readouterr()
    code = main(["validate", "--sources", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 1), err
    if code:  # the problems, naming their files (a label map the sources file points to...)
        assert err.strip() and str(path.parent) in err, err


# The tests: one per file and kind ----------------------------------------------------------
LOADERS = {"label map": (load_label_map, VALID_MAP), "vocabulary": (load_vocabulary_file, VALID_VOCAB),
           "question pool": (load_pool, VALID_POOL)}


@pytest.mark.parametrize("kind", list(LOADERS))
def test_damaged_bytes(kind: str, tmp_path: Path) -> None:
    load, valid = LOADERS[kind]

    @FUZZ
    @given(damaged_bytes(dump(valid)))
    def run(content: bytes) -> None:
        check_loader(tmp_path / "file.yaml", content, load)

    run()


@pytest.mark.parametrize("kind", list(LOADERS))
def test_wrong_types(kind: str, tmp_path: Path) -> None:
    load, valid = LOADERS[kind]

    @FUZZ
    @given(mutated(valid))
    def run(doc: Any) -> None:
        check_loader(tmp_path / "file.yaml", dump(doc), load)

    run()


@pytest.mark.parametrize("kind", list(LOADERS))
def test_arbitrary_documents(kind: str, tmp_path: Path) -> None:
    load, _ = LOADERS[kind]

    @settings(FUZZ, max_examples=EXAMPLES // 3)
    @given(VALUES)
    def run(doc: Any) -> None:
        check_loader(tmp_path / "file.yaml", dump(doc), load)

    run()


def test_sources_file_damaged_and_wrong_types(tmp_path: Path, capsys) -> None:
    valid = valid_sources(tmp_path)
    cfg = tmp_path / "sources.yaml"

    @FUZZ
    @given(st.one_of(damaged_bytes(dump(valid)), mutated(valid).map(dump)))
    def run(content: bytes) -> None:
        check_loader(cfg, content, load_sources)
        check_cli(cfg, content, capsys)

    run()


@pytest.mark.parametrize("placements", [[1], "CT", 3])
def test_vocabulary_placements_of_the_wrong_type(tmp_path: Path, placements: Any) -> None:
    """Found by the thorough fuzzing: a list as ``placements`` was an AttributeError."""
    path = write_yaml(tmp_path / "v.yaml", {"labels": [{
        "label": "foo lesion", "task": "Disease Diagnosis", "department": "Dermatology",
        "placements": placements}]})
    with pytest.raises(ConfigError, match=r"labels\[0\]: placements: expected a mapping"):
        load_vocabulary([path])


def test_the_bundled_files_pass(tmp_path: Path) -> None:
    """The starting points are valid, so the mutations above test what they claim to."""
    for kind, (load, valid) in LOADERS.items():
        path = write_yaml(tmp_path / f"{kind}.yaml", valid)
        load(path)
    for path in sorted(BUNDLED_SOURCE_MAPS.glob("*.yaml")):
        LabelMap(path, path.stem, _clone(_BASE_VOCAB))
    write_yaml(tmp_path / "sources.yaml", valid_sources(tmp_path))
    load_config(tmp_path / "sources.yaml")
    from gmai_build.cli import main

    assert main(["validate", "--sources", str(tmp_path / "sources.yaml")]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(LOADERS))
def test_loaders_thorough(kind: str, tmp_path: Path) -> None:
    load, valid = LOADERS[kind]

    @THOROUGH_FUZZ
    @given(st.one_of(damaged_bytes(dump(valid)), mutated(valid).map(dump), VALUES.map(dump)))
    def run(content: bytes) -> None:
        check_loader(tmp_path / "file.yaml", content, load)

    run()


@pytest.mark.slow
def test_sources_thorough(tmp_path: Path, capsys) -> None:
    valid = valid_sources(tmp_path)
    cfg = tmp_path / "sources.yaml"

    @THOROUGH_FUZZ
    @given(st.one_of(damaged_bytes(dump(valid)), mutated(valid).map(dump), VALUES.map(dump)))
    def run(content: bytes) -> None:
        check_loader(cfg, content, load_sources)
        check_cli(cfg, content, capsys)

    run()
