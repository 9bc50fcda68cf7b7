"""Question pools: every published cell has its own templates, and pools are checked strictly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from gmai_build.errors import ConfigError
from gmai_build.taxonomy import MODALITIES, load_vocabulary
from gmai_build.templates import (
    DEFAULT_POOL,
    MIN_TEMPLATES_PER_CELL,
    QuestionPool,
    answer_leaks,
    cell_counts,
    check_pool,
    indefinite_article,
    published_cells,
)
from helpers import REALDATA, REPO, read_manifest, write_yaml

REFERENCE = REALDATA.parent / "reference" / "gmai_mmbench_lexical_tree.json"


@pytest.fixture(scope="module")
def pool() -> QuestionPool:
    return QuestionPool()


def test_published_tree_file_matches_the_published_tree() -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"published lexical tree not found at {REFERENCE}")
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from generate_tree_nodes import tree_nodes
    finally:
        sys.path.pop(0)
    expected = tree_nodes(json.loads(REFERENCE.read_text()))
    bundled = yaml.safe_load((REPO / "label_maps" / "published_tree.yaml").read_text())
    assert bundled == expected
    assert len(expected["cells"]) == 46


def test_every_used_cell_has_ten_task_templates_for_each_of_its_modalities(pool) -> None:
    counts = cell_counts(pool)
    assert len({(t, g) for t, g, _ in counts}) == 46
    short = {k: n for k, n in counts.items() if n < MIN_TEMPLATES_PER_CELL}
    assert not short
    # Distinct texts, counted straight from the YAML (the pool's own view must agree).
    raw = yaml.safe_load(DEFAULT_POOL.read_text())
    per_cell: Counter[tuple[str, str]] = Counter()
    for group in raw["groups"]:
        for task in group.get("tasks", []):
            if not group.get("modalities"):
                per_cell[(task, group["granularity"])] += len(set(group["texts"]))
    for cell in published_cells():
        assert per_cell[(cell.task, cell.granularity)] >= MIN_TEMPLATES_PER_CELL, cell


def test_default_pool_passes_every_check(pool) -> None:
    report = check_pool(pool, load_vocabulary())
    assert report.errors == [] and report.gaps == [] and report.cues == []


def test_task_wording_is_task_specific(pool) -> None:
    def texts(gran: str, task: str, modality: str) -> list[str]:
        return [t.render(modality) for t in pool.templates_for(gran, task, modality)]

    counting = texts("Image Level", "Counting", "Histopathology")
    assert all(re.search(r"how many|count|number", t, re.I) for t in counting)
    assert all("most appropriate to describe" not in t for t in counting)
    for task, word in (("Surgical Workflow Recognition", r"phase|step|stage|point of the procedure"),
                       ("Surgeon Action Recognition", r"action|doing|gesture|manoeuvre|manipulation"),
                       ("Surgical Instrument Recognition", r"instrument|tool|device")):
        gran = "Image Level" if task.startswith("Surgical Workflow") else "Box Level"
        assert all(re.search(word, t, re.I) for t in texts(gran, task, "Endoscopy")), task
    pelvic = texts("Mask Level", "Organ Recognition - Pelvic", "CT")
    assert sum(bool(re.search(r"pelvi", t)) for t in pelvic) >= 5
    assert not any(re.search(r"abdom|thora|chest|head", t) for t in pelvic)
    # Modality-specific variants: a slide for microscopy, a scan for radiology, never crossed.
    micro = texts("Image Level", "Disease Diagnosis", "Histopathology")
    ct = texts("Image Level", "Disease Diagnosis", "CT")
    assert any("slide" in t for t in micro) and not any("slide" in t for t in ct)
    assert any("slice" in t for t in ct) and not any("slice" in t for t in micro)
    xray = [t for gran in ("Image Level", "Mask Level", "Contour Level")
            for t in texts(gran, "Disease Diagnosis", "X-ray")]
    assert not any(re.search(r"slice|scan\b", t) for t in xray)  # a radiograph has no slices


def test_articles_and_display_names_in_rendered_questions(pool) -> None:
    generic = next(t for t in pool.templates if t.id == "image-generic-1")
    assert generic.render("Endoscopy").startswith("This is an endoscopy image.")
    assert generic.render("Infrared Reflectance (IR) imaging").startswith(
        "This is an infrared reflectance image.")
    expected = {"X-ray": "an X-ray", "MRI": "an MRI", "CT": "a CT", "OCT": "an OCT",
                "UltraSound": "an ultrasound", "FLAIR MRI": "a FLAIR MRI",
                "CTA": "a CT angiography", "Fundus Photography": "a fundus",
                "ADC MRI": "an ADC MRI", "T1 MRI": "a T1 MRI", "MP-RAGE MRI": "an MP-RAGE MRI",
                "In-phase MRI": "an in-phase MRI", "Histopathology": "a histopathology"}
    for modality, text in expected.items():
        assert generic.names.with_article(modality) == text
    for modality in MODALITIES:  # every rendering reads: no "a endoscopy", no tree-only names
        for t in pool.templates:
            if t.fits(modality):
                out = t.render(modality)
                assert not re.search(r"\ba [aeiou]", out) and "(IR) imaging image" not in out
    assert indefinite_article("hour") == "a"  # the rule is spelling-based; overrides exist for that


def test_build_keeps_tree_modality_in_tsv_and_display_name_in_question(example_build) -> None:
    import pandas as pd

    tsv = pd.read_csv(example_build / "GMAI-example_VAL.tsv", sep="\t")
    assert set(tsv["modality"]) == {"Fundus Photography"}
    assert not tsv["question"].str.contains("Fundus Photography").any()
    manifest = read_manifest(example_build)
    assert any("fundus" in r["question"] for r in manifest)
    assert all(re.match(r"[a-z0-9-]+-\d+$", r["template_id"]) for r in manifest)


def _pool(tmp_path: Path, groups: list, **extra) -> Path:
    data = {"groups": [
        {"id": f"generic-{g[0].split()[0].lower()}", "granularity": g,
         "texts": [f"Which option describes this {{modality}} image at {g.lower()}?"]}
        for g in ("Image Level", "Box Level", "Mask Level", "Contour Level")
    ] + groups, **extra}
    return write_yaml(tmp_path / "pool.yaml", data)


@pytest.mark.parametrize(("group", "message"), [
    ({"id": "x", "granularity": "Image Level", "tasks": "Counting", "texts": ["How many?"]},
     r"pool\.yaml: groups\[4\]\.tasks: Input should be a valid list"),
    ({"id": "x", "granularity": "Image Level", "texts": "How many?"},
     r"groups\[4\]\.texts: Input should be a valid list"),
    ({"id": "x", "granularity": "Image Level", "text": ["a"], "texts": ["b?"]},
     r"groups\[4\]\.text: unknown key 'text'"),
    ({"id": "x", "granularity": "Image level", "texts": ["Which one?"]},
     r"groups\[4\]\.granularity: 'Image level' .*did you mean 'Image Level'"),
    ({"id": "x", "granularity": "Image Level", "tasks": ["Countin"], "texts": ["How many?"]},
     r"groups\[4\]\.tasks\[0\]: unknown clinical VQA task 'Countin' \(did you mean 'Counting'\?\)"),
    ({"id": "x", "granularity": "Image Level", "texts": ["How many in this {modalty} image?"]},
     r"groups\[4\]\.texts\[0\]: unknown placeholder\(s\) \['modalty'\]"),
    ({"id": "x", "granularity": "Image Level", "texts": ["This is a {modality} image. Which?"]},
     r"article written before a placeholder"),
    ({"id": "x", "granularity": "Image Level", "texts": ["{modality} image: which finding?"]},
     r"sentence starts with a placeholder"),
    ({"id": "x", "granularity": "Mask Level", "texts": ["What lies under the red mask?"]},
     r"names a colour \['red'\]"),
    ({"id": "x", "granularity": "Image Level", "modalities": ["microscope"], "texts": ["Which?"]},
     r"groups\[4\]\.modalities\[0\]: 'microscope' is neither a tree modality nor a family"),
    ({"id": "x", "granularity": "Image Level",
      "texts": ["Which organ is shown in this {modality} image?",
                "Which organ is shown in this {modality} image ?"]},
     r"'x-1' and 'x-2' have the same text"),
    ({"id": "x", "granularity": "Image Level",
      "texts": ["Which abdominal organ is shown in this {modality} image?",
                "Which pelvic organ is shown in this {modality} image?"]},
     r"'x-1' and 'x-2' are near-duplicates"),
])
def test_pool_errors_name_file_key_and_reason(tmp_path: Path, group: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QuestionPool(_pool(tmp_path, [group]))


def test_pool_without_generic_template_is_rejected(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "pool.yaml", {"groups": [
        {"id": "dd", "granularity": "Image Level", "tasks": ["Disease Diagnosis"],
         "texts": ["Which diagnosis fits this {modality} image?"]}]})
    with pytest.raises(ConfigError, match=r"no generic template .*'Box Level'"):
        QuestionPool(path)


def test_answer_giving_texts_and_gaps_are_reported(tmp_path: Path) -> None:
    path = _pool(tmp_path, [
        {"id": "hn", "granularity": "Mask Level", "tasks": ["Organ Recognition - Head and Neck"],
         "texts": ["Which part of the eye is marked in this {modality} image?"]}])
    pool = QuestionPool(path)
    leaks = answer_leaks(pool, load_vocabulary())
    assert len(leaks) == 1 and "template 'hn-1'" in leaks[0] and "['eye']" in leaks[0]
    report = check_pool(pool)
    assert len(report.gaps) == 46  # every used cell falls back to generic wording
    hn = next(g for g in report.gaps if "(Organ Recognition - Head and Neck, Mask Level)" in g)
    assert "CT: 1" in hn and str(path) in hn


def test_words_shared_with_some_labels_are_reported_as_cues(tmp_path: Path) -> None:
    path = _pool(tmp_path, [
        {"id": "thorax", "granularity": "Mask Level", "tasks": ["Organ Recognition - Thorax"],
         "texts": ["Which thoracic structure is marked in this {modality} image?"]},
        {"id": "sg", "granularity": "Image Level", "tasks": ["Severity Grading"],
         "texts": ["Which grade fits this {modality} image?"]}],
        shared_words={"Severity Grading": ["grade"]})
    cues = check_pool(QuestionPool(path), load_vocabulary()).cues
    assert len(cues) == 1 and "template 'thorax-1' uses 'thoracic'" in cues[0] and "CT" in cues[0]


def test_validate_reports_pool_gaps_and_build_rejects_leaks(tmp_path: Path) -> None:
    pool = _pool(tmp_path, [])
    src = yaml.safe_load((REPO / "examples" / "sources.yaml").read_text())
    src["build"]["question_pool"] = str(pool)
    for s in src["sources"]:
        s["root"] = str((REPO / "examples" / s["root"]).resolve())
    cfg = write_yaml(tmp_path / "sources.yaml", src)
    res = subprocess.run([sys.executable, "-m", "gmai_build.cli", "validate", "--sources", str(cfg)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("has fewer than 10 templates") == 46
    assert "(Counting, Image Level) has fewer than 10 templates for Histopathology: 0" in res.stderr
    assert "OK, 47 warning(s)" in res.stdout  # 46 thin cells and one lexical cue ('level')
    leaky = _pool(tmp_path, [{"id": "ar", "granularity": "Image Level",
                              "tasks": ["Attribute Recognition"],
                              "texts": ["Is this {modality} image of the oculus dexter?"]}])
    src["build"]["question_pool"] = str(leaky)
    write_yaml(cfg, src)
    res = subprocess.run([sys.executable, "-m", "gmai_build.cli", "--sources", str(cfg),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "template 'ar-1' contains the Attribute Recognition label(s) ['oculus dexter']" in res.stderr
