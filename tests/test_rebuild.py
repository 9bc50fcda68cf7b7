"""Rebuilding into a folder after a label map, vocabulary, pool or option change.

Exactly the questions that depended on what changed are regenerated (same index, new options),
questions whose target is gone are removed, the rest stay byte for byte; what changed and why
is printed and recorded in build.json. ``--rebuild`` starts over.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from gmai_build.cli import main
from gmai_build.questions import DEFAULT_POOL
from helpers import read_manifest, read_tsv, write_yaml, xray_class_folders, xray_source

CLASSES = {"normal": 5, "pneumonia": 5, "cardiomegaly": 5, "effusion": 5}
MAP = {"department": "Pulmonary Medicine",
       "labels": {"normal": "normal", "pneumonia": "pneumonia", "cardiomegaly": "cardiomegaly",
                  "effusion": "effusion"}}


class Project:
    def __init__(self, root: Path, capsys):
        self.root, self.capsys = root, capsys
        xray_class_folders(root / "imgs", CLASSES)
        self.out = root / "out"
        self.label_map(MAP)
        self.config()

    def label_map(self, data: dict) -> None:
        write_yaml(self.root / "map.yaml", data)

    def config(self, **build) -> None:
        write_yaml(self.root / "sources.yaml", {
            "build": {"name": "RB", "per_label_cap": 100, "options": {"min": 2, "max": 4}, **build},
            "sources": [xray_source()]})

    def build(self, *extra: str) -> str:
        self.capsys.readouterr()
        code = main(["--sources", str(self.root / "sources.yaml"), "--out", str(self.out),
                     "--workers", "1", "--no-progress", *extra])
        out, err = self.capsys.readouterr()
        assert code == 0, err
        return out

    def manifest(self) -> dict[int, dict]:
        return {r["index"]: r for r in read_manifest(self.out)}

    def changes(self) -> dict:
        return json.loads((self.out / "build.json").read_text())["changes"]


@pytest.fixture
def project(tmp_path: Path, capsys) -> Project:
    p = Project(tmp_path, capsys)
    p.build()
    return p


def _question_keys(r: dict) -> tuple:
    return (r["case_id"], r["split"], r["question"], r["options"], r["answer"], r["image_sha256"])


def test_no_change_keeps_everything_byte_for_byte(project: Project) -> None:
    before = {f: (project.out / f).read_bytes() for f in ("RB_VAL.tsv", "RB_TEST.tsv",
                                                          "manifest.jsonl")}
    printed = project.build()
    assert {f: (project.out / f).read_bytes() for f in before} == before
    changes = project.changes()
    assert (changes["kept"], changes["added"], changes["regenerated"], changes["removed"]) == (
        20, 0, [], [])
    assert "changes since the previous build: 20 kept, 0 regenerated, 0 removed, 0 added" in printed


def test_dropped_label_removes_its_questions_and_regenerates_those_offering_it(project) -> None:
    before = project.manifest()
    project.label_map({**MAP, "labels": {**MAP["labels"], "effusion": "drop"}})
    printed = project.build()
    after = project.manifest()
    gone = {i for i, r in before.items() if r["category"] == "effusion"}
    offered = {i for i, r in before.items() if i not in gone and "effusion" in r["options"]}
    assert len(gone) == 5 and offered
    assert set(after) == set(before) - gone
    for i, r in after.items():
        assert "effusion" not in r["options"]
        assert r["options"][ord(r["answer"]) - 65] == r["category"]
        if i in offered:  # same target, same index and split; options drawn anew
            assert (r["case_id"], r["split"], r["category"]) == (
                before[i]["case_id"], before[i]["split"], before[i]["category"])
        else:  # untouched by the change: byte for byte the same question
            assert _question_keys(r) == _question_keys(before[i])
    changes = project.changes()
    assert [r["index"] for r in changes["regenerated"]] == sorted(offered)
    assert all(r["reasons"] == ["option 'effusion' may no longer be offered"]
               for r in changes["regenerated"])
    assert [r["index"] for r in changes["removed"]] == sorted(gone)
    assert all(r["reason"] == "the label map now drops raw label 'effusion'"
               for r in changes["removed"])
    assert changes["kept"] == 20 - len(gone) - len(offered)
    assert f"{len(offered)} regenerated, 5 removed, 0 added" in printed
    assert gone == set(range(min(gone), max(gone) + 1))  # one class folder: consecutive
    assert (f"  questions {min(gone)}-{max(gone)} removed: the label map now drops raw label "
            "'effusion'") in printed.splitlines()
    # The TSVs agree with the manifest (VLMEvalKit reads these).
    tsv = read_tsv(project.out / "RB_VAL.tsv")
    assert not (tsv[["A", "B", "C", "D"]] == "effusion").any().any()


def test_renamed_answer_keeps_the_index(project: Project) -> None:
    before = project.manifest()
    project.label_map({**MAP, "labels": {**MAP["labels"], "effusion": "pleural effusion"}})
    project.build()
    after = project.manifest()
    assert set(after) == set(before)
    renamed = {i for i, r in before.items() if r["category"] == "effusion"}
    for i in renamed:
        assert after[i]["case_id"] == before[i]["case_id"]
        assert after[i]["category"] == "pleural effusion"
        assert after[i]["options"][ord(after[i]["answer"]) - 65] == "pleural effusion"
        assert "effusion" not in after[i]["options"]
    reasons = {r["index"]: r["reasons"] for r in project.changes()["regenerated"]}
    assert all(reasons[i] == ["answer changed from 'effusion' to 'pleural effusion'"]
               for i in renamed)
    offered = {i for i, r in before.items() if i not in renamed and "effusion" in r["options"]}
    assert set(reasons) == renamed | offered
    assert all("effusion" not in r["options"] for r in after.values())


def test_vocabulary_change_moves_an_answer(project: Project) -> None:
    """A build vocabulary file makes the map's 'fluid' a synonym of another canonical label."""
    project.label_map({**MAP, "labels": {**MAP["labels"], "effusion": "fluid"}})
    write_yaml(project.root / "vocab.yaml",
               {"labels": [{"label": "effusion", "synonyms": ["fluid"]}]})
    project.config(vocabulary=["vocab.yaml"])
    project.build()
    before = project.manifest()
    assert sum(r["category"] == "effusion" for r in before.values()) == 5
    write_yaml(project.root / "vocab.yaml",
               {"labels": [{"label": "pleural effusion", "synonyms": ["fluid"]}]})
    project.build()
    after = project.manifest()
    moved = {i for i, r in before.items() if r["category"] == "effusion"}
    assert {after[i]["category"] for i in moved} == {"pleural effusion"}
    regenerated = {r["index"] for r in project.changes()["regenerated"]}
    assert moved <= regenerated
    assert regenerated == moved | {i for i, r in before.items() if "effusion" in r["options"]}


def test_pool_template_change_regenerates_only_its_questions(project: Project) -> None:
    before = project.manifest()
    pool = DEFAULT_POOL.read_text()
    used = sorted({r["template_id"] for r in before.values()})
    target = used[0]
    text = next(r["question"] for r in before.values() if r["template_id"] == target)
    assert pool.count(text.replace("X-ray", "{modality}")) == 1
    (project.root / "pool.yaml").write_text(
        pool.replace(text.replace("X-ray", "{modality}"), "Which label fits this {modality} image?"))
    project.config(question_pool="pool.yaml")
    project.build()
    after = project.manifest()
    affected = {i for i, r in before.items() if r["template_id"] == target}
    changes = project.changes()
    assert {r["index"] for r in changes["regenerated"]} == affected
    assert all(r["reasons"] == [f"template '{target}' text changed"] for r in changes["regenerated"])
    for i in set(before) - affected:
        assert _question_keys(after[i]) == _question_keys(before[i])


def test_fewer_options_allowed_regenerates_the_longer_questions(project: Project) -> None:
    before = project.manifest()
    project.config(options={"min": 2, "max": 3})
    project.build()
    after = project.manifest()
    long = {i for i, r in before.items() if len(r["options"]) == 4}
    assert long and {r["index"] for r in project.changes()["regenerated"]} == long
    assert all(len(r["options"]) <= 3 for r in after.values())


def test_rebuild_starts_over(project: Project, tmp_path: Path) -> None:
    project.label_map({**MAP, "labels": {**MAP["labels"], "effusion": "drop"}})
    printed = project.build("--rebuild")
    assert "rebuilt from scratch (--rebuild)" in printed
    assert project.changes()["rebuild"] is True
    fresh = tmp_path / "fresh"
    project.out, rebuilt = fresh, project.out
    project.build()
    for name in ("RB_VAL.tsv", "RB_TEST.tsv", "RB_TEST_answers.tsv", "manifest.jsonl"):
        assert (rebuilt / name).read_bytes() == (fresh / name).read_bytes(), name
    assert sorted(project.manifest()) == list(range(15))


# Segmentation targets: the mask and contour questions of one target change together ----------
def _spleen_project(root: Path) -> Path:
    from helpers import realdata

    (root / "spleen.yaml").write_text("labels:\n  spleen: spleen\n")
    (root / "pool.yaml").write_text(DEFAULT_POOL.read_text())
    return write_yaml(root / "sources.yaml", {
        "build": {"name": "SP", "question_pool": "pool.yaml"},
        "sources": [{
            "name": "msd_spleen", "format": "msd", "root": str(realdata("msd_spleen")),
            "modality": "CT", "label_map": "spleen.yaml", "license": "CC-BY-SA 4.0",
            "citation": "Antonelli M. et al. The Medical Segmentation Decathlon. Nat Commun 2022",
            "intensity": {"window": "soft_tissue"}, "slicing": {"per_label": 2},
        }],
    })


def _pairs(out: Path) -> dict[str, dict[str, dict]]:
    pairs: dict[str, dict[str, dict]] = {}
    for r in read_manifest(out):
        pairs.setdefault(r["pair_id"], {})[r["granularity"]] = r
    return pairs


def test_segmentation_pair_regenerated_together(tmp_path: Path, capsys) -> None:
    cfg = _spleen_project(tmp_path)
    out = tmp_path / "out"
    assert main(["--sources", str(cfg), "--out", str(out), "--no-progress"]) == 0
    before = _pairs(out)
    (tmp_path / "spleen.yaml").write_text("labels:\n  spleen: liver\n")
    assert main(["--sources", str(cfg), "--out", str(out), "--no-progress"]) == 0
    after = _pairs(out)
    assert set(after) == set(before) and len(after) == 2
    for pair_id, pair in after.items():
        mask, contour = pair["Mask Level"], pair["Contour Level"]
        assert mask["category"] == contour["category"] == "liver"
        assert mask["options"] == contour["options"] and mask["answer"] == contour["answer"]
        assert "spleen" not in mask["options"]
        for g in pair:
            assert pair[g]["index"] == before[pair_id][g]["index"]
    changes = json.loads((out / "build.json").read_text())["changes"]
    assert len(changes["regenerated"]) == 4 and not changes["removed"]


def test_no_distractor_left_is_reported_as_the_reason(tmp_path: Path, capsys) -> None:
    """The pool stops borrowing distractors from the vocabulary: the spleen questions (one
    label in their pool) cannot be made any more and are removed, saying why; the X-ray
    questions are kept."""
    cfg = _spleen_project(tmp_path)
    xray_class_folders(tmp_path / "imgs", {"normal": 3, "pneumonia": 3})
    write_yaml(tmp_path / "map.yaml", MAP)
    config = yaml.safe_load(cfg.read_text())
    config["sources"][0]["allow_no_questions"] = True  # (else a source without questions fails)
    config["sources"].append(xray_source())
    write_yaml(cfg, config)
    out = tmp_path / "out"
    assert main(["--sources", str(cfg), "--out", str(out), "--no-progress"]) == 0
    before = {r["index"]: r for r in read_manifest(out)}
    pool = (tmp_path / "pool.yaml").read_text()
    assert "local_vocabulary_fallback: true" in pool
    (tmp_path / "pool.yaml").write_text(
        pool.replace("local_vocabulary_fallback: true", "local_vocabulary_fallback: false"))
    capsys.readouterr()
    assert main(["--sources", str(cfg), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    after = {r["index"]: r for r in read_manifest(out)}
    spleen = {i for i, r in before.items() if r["source"] == "msd_spleen"}
    assert len(spleen) == 4 and set(after) == set(before) - spleen
    changes = json.loads((out / "build.json").read_text())["changes"]
    assert {r["index"]: r["reason"] for r in changes["removed"]} == {
        i: "no distractor is left for its answer" for i in spleen}
    assert changes["kept"] == 6 and not changes["regenerated"]
    assert spleen == set(range(min(spleen), max(spleen) + 1))
    assert (f"  questions {min(spleen)}-{max(spleen)} removed: no distractor is left for its "
            "answer") in printed.splitlines()


@pytest.mark.parametrize("damage, message", [
    (b'{"case_id": "x", "index": 0\n', "line 1: not valid JSON"),
    (b'{"case_id": "x", "index": "0"}\n', "line 1: index: Input should be a valid integer"),
])
def test_a_damaged_previous_manifest_is_a_clean_error(project: Project, damage: bytes,
                                                      message: str) -> None:
    """(A hand-edited manifest: the atomic publish never leaves a partial one.)"""
    manifest = (project.out / "manifest.jsonl").resolve()
    manifest.write_bytes(damage)
    project.capsys.readouterr()
    code = main(["--sources", str(project.root / "sources.yaml"), "--out", str(project.out),
                 "--no-progress"])
    err = project.capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"gmai-build: error: file {project.out / 'manifest.jsonl'}: {message}")
    assert "start over with --rebuild" in err
    project.build("--rebuild")
    assert len(project.manifest()) == 20


def test_department_change_is_reported_on_kept_questions(project: Project) -> None:
    before = project.manifest()
    project.label_map({**MAP, "department": "Infectious Diseases"})
    printed = project.build()
    after = project.manifest()
    changes = project.changes()
    assert changes["kept"] == 20 and not changes["regenerated"]
    updated = {r["index"]: r["reasons"] for r in changes["updated"]}
    # 'normal' takes its department from the label map; the others have their own.
    normal = {i for i, r in before.items() if r["category"] == "normal"}
    assert normal and set(updated) == normal
    for i in normal:
        assert updated[i] == ["department changed from 'Pulmonary Medicine' to 'Infectious Diseases'"]
        assert _question_keys(after[i]) == _question_keys(before[i])
    assert f"({len(updated)} kept with changed columns)" in printed



def test_deleted_image_removes_its_question_saying_why(project: Project) -> None:
    before = project.manifest()
    first = sorted((project.root / "imgs" / "pneumonia").iterdir())[0]
    first.unlink()
    project.build()
    after = project.manifest()
    assert len(after) == 19 and set(after) < set(before)
    (gone,) = set(before) - set(after)
    victim = before[gone]
    removed = project.changes()["removed"]
    assert [(r["index"], r["category"]) for r in removed] == [(victim["index"], "pneumonia")]
    assert removed[0]["reason"].startswith(
        "its target (raw label 'pneumonia') is no longer produced: its image or annotation is gone")
    # Its index is not given to another question.
    assert victim["index"] not in after
