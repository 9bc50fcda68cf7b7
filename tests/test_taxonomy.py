"""The lexical tree and vocabulary agree with the published GMAI-MMBench tree."""

from __future__ import annotations

import json

import pytest
from gmai_build.taxonomy import (
    DEPARTMENTS,
    GRANULARITIES,
    MODALITIES,
    TASKS,
    LabelMap,
    load_vocabulary,
)
from helpers import REALDATA

REFERENCE = REALDATA.parent / "reference" / "gmai_mmbench_lexical_tree.json"

PUBLISHED_TASKS = {
    "Attribute Recognition": "AR", "Blood Vessels Recognition": "BVR", "Bone": "B",
    "Cell Recognition": "CR", "Counting": "C", "Disease Diagnosis": "DD",
    "Image Quality Grading": "IQG", "Microorganism Recognition": "MR", "Muscle": "M",
    "Nervous Tissue": "NT", "Organ Recognition - Abdomen": "OR-A",
    "Organ Recognition - Head and Neck": "OR-HN", "Organ Recognition - Pelvic": "OR-P",
    "Organ Recognition - Thorax": "OR-T", "Severity Grading": "SG",
    "Surgeon Action Recognition": "SAR", "Surgical Instrument Recognition": "SIR",
    "Surgical Workflow Recognition": "SWR",
}


@pytest.fixture(scope="module")
def reference() -> dict:
    if not REFERENCE.is_file():
        pytest.skip(f"published lexical tree not found at {REFERENCE}")
    return json.loads(REFERENCE.read_text())


def _children(ref: dict, key: str) -> dict[str, dict]:
    return {c["name"]: c for c in ref[key]["children"]}


def test_axes_match_published_tree(reference) -> None:
    assert TASKS == PUBLISHED_TASKS
    assert set(TASKS) == set(_children(reference, "clinical-tasks"))
    assert set(DEPARTMENTS) | {""} == set(_children(reference, "departments"))
    assert len(DEPARTMENTS) == 18 and DEPARTMENTS["Otolaryngology (ENT)/Head and Neck Surgery"] == "ENT/HNS"
    assert set(GRANULARITIES) == set(_children(reference, "granularities"))
    mods = {m["name"] for key in reference for c in reference[key]["children"]
            for m in c.get("children", [])}
    assert sorted(MODALITIES) == sorted(mods) and len(MODALITIES) == 38


def test_every_published_label_is_placed_as_published(reference) -> None:
    vocab = load_vocabulary()
    for key, attr in (("clinical-tasks", "task"), ("departments", "department")):
        for node in reference[key]["children"]:
            for modality in node.get("children", []):
                for label in modality.get("children", []):
                    entry = vocab.resolve(label["name"])
                    assert entry is not None, label["name"]
                    # Synonyms and spelling variants (relations.yaml) merge into one entry.
                    assert entry.label == label["name"] or label["name"] in entry.synonyms
                    assert modality["name"] in entry.modalities
                    if entry.label != label["name"]:
                        continue  # a merged synonym takes its group's placement
                    task, dept = entry.placement(modality["name"])
                    placed = task if attr == "task" else dept
                    # Placement is by (label, modality); where the tree lists two tasks for one
                    # modality, label_maps/placement_choices.yaml chooses explicitly.
                    assert placed == node["name"] or label["name"] in {"esophagus", "spinal cord"}


def test_synonyms_left_right_and_case(tmp_path) -> None:
    vocab = load_vocabulary()
    assert vocab.resolve("RBC").label == "red blood cell"
    assert vocab.resolve("Left Kidney").label == "kidney"
    assert vocab.resolve("right_kidney").label == "kidney"
    assert vocab.resolve("AMD").label == "age-related macular degeneration"
    m = tmp_path / "m.yaml"
    m.write_text("department: Pulmonary Medicine\nlabels:\n  '0': normal\n  '1': {label: fibrosis,"
                 " department: Pulmonary Medicine}\n  '2': drop\n")
    lm = LabelMap(m, "src", vocab)
    assert lm.lookup(0).department == "Pulmonary Medicine"
    assert lm.lookup(1.0).label == "fibrosis"
    assert lm.lookup("2") is None
    with pytest.raises(Exception, match="raw label '3'.*m.yaml"):
        lm.lookup(3, file="x.png")


def test_from_source_department_needs_a_default(tmp_path) -> None:
    from gmai_build.errors import ConfigError

    m = tmp_path / "m.yaml"
    m.write_text("labels:\n  a: normal\n")
    with pytest.raises(ConfigError, match="set a top-level 'department:'"):
        LabelMap(m, "src", load_vocabulary())
