"""Dataset cards: every bundled card parses; every supported card's layout replica is discovered
and every raw label maps (default suite); every replica builds into questions of the card's
granularities (slow). Thin `dataset:` entries, overrides, optional sources, card errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from gmai_build.cards import all_cards, layout_problems, parse_card
from gmai_build.config import load_config
from gmai_build.errors import ConfigError
from gmai_build.pipeline import build, check_known_labels, discover, prepare
from gmai_build.replica import write_replica
from gmai_build.taxonomy import LabelMap, load_vocabulary
from helpers import REPO, run_cli, write_yaml

CARDS = all_cards()
SUPPORTED = [c for c in CARDS if c.info.supported]


def test_catalog_size_and_verification() -> None:
    catalog = [c for c in SUPPORTED if c.info.catalog]
    assert len(catalog) >= 40
    assert {c.info.verified.how for c in catalog} == {"real_files", "layout_replica"}
    for c in CARDS:
        if not c.info.supported:
            assert c.info.reason and c.info.verified.how == "documentation"


def _replica_config(card, tmp_path: Path):
    root = write_replica(card, tmp_path / "data" / card.name)
    sources = write_yaml(tmp_path / "sources.yaml",
                         {"build": {"per_label_cap": 4, "val_fraction": 0.3},
                          "sources": [{"dataset": card.name, "root": str(root)}]})
    return root, load_config(sources)


@pytest.mark.parametrize("card", SUPPORTED, ids=lambda c: c.name)
def test_replica_discovers_and_maps_every_label(card, tmp_path: Path) -> None:
    if card.settings["format"] in ("dicom_seg", "dicom_rtstruct"):
        pytest.skip("DICOM fixture cards are checked on real files in test_dicom.py")
    root, config = _replica_config(card, tmp_path)
    assert layout_problems(card, root) == []
    assert config.cards[card.name] is card
    _, contexts, _ = prepare(config)
    ctx = contexts[card.name]
    items = discover(ctx)
    check_known_labels(ctx, items)
    declared = {raw for item in items for raw in (item.labels or ())}
    if declared:  # tables, folders, arrays, annotations: every raw label of the card is found
        assert {str(r) for r in declared} == set(card.info.labels or {})


def _one_per_format() -> list:
    seen: dict[str, object] = {}
    for card in SUPPORTED:
        seen.setdefault(card.settings["format"], card)
    return list(seen.values())


def _builds_questions(card, tmp_path: Path) -> None:
    if card.settings["format"] in ("dicom_seg", "dicom_rtstruct"):
        pytest.skip("DICOM fixture cards are built on real files in test_dicom.py")
    _, config = _replica_config(card, tmp_path)
    summary = build(config, tmp_path / "out", workers=1, progress=False, log=lambda _: None)
    assert summary["total"] > 0
    assert set(summary["perceptual granularity"]) == set(card.info.granularities)
    assert set(summary["modality"]) == {card.settings["modality"]}
    assert set(summary["source"]) == {card.name}


@pytest.mark.parametrize("card", _one_per_format(), ids=lambda c: c.name)
def test_replica_builds_questions_one_card_per_format(card, tmp_path: Path) -> None:
    _builds_questions(card, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("card", SUPPORTED, ids=lambda c: c.name)
def test_replica_builds_questions(card, tmp_path: Path) -> None:
    _builds_questions(card, tmp_path)


# Thin sources.yaml entries -----------------------------------------------------------------------
def _card(name: str):
    return next(c for c in CARDS if c.name == name)


def test_one_line_entry_is_a_complete_source(tmp_path: Path) -> None:
    root = write_replica(_card("kvasir_seg"), tmp_path / "Kvasir-SEG")
    sources = write_yaml(tmp_path / "s.yaml",
                         {"sources": [{"dataset": "kvasir_seg", "root": "Kvasir-SEG"}]})
    src = load_config(sources).sources[0]
    assert (src.name, src.format, src.modality, src.root) == ("kvasir_seg", "mask_pairs", "Endoscopy", root)
    assert src.label_map == _card("kvasir_seg").path
    options = vars(src.options)  # validated: the format's options model
    assert options["threshold"] == 127 and options["masks"] == "masks/{name}"
    assert src.boxes_from_masks is not None and src.boxes_from_masks.min_area == 4


def test_entry_keys_override_the_card(tmp_path: Path) -> None:
    write_replica(_card("kits19"), tmp_path / "kits")
    sources = write_yaml(tmp_path / "s.yaml", {"sources": [{
        "dataset": "kits19", "root": "kits", "name": "kits-coronal", "license": "my copy",
        "slicing": {"axis": "coronal"}, "options": {"missing_label": "skip"}}]})
    src = load_config(sources).sources[0]
    assert (src.name, src.license) == ("kits-coronal", "my copy")
    assert src.slicing.axis == "coronal" and src.slicing.per_label == 1  # merged, not replaced
    options = vars(src.options)
    assert options["missing_label"] == "skip"
    assert options["mask_labels"] == {1: "kidney", 2: "tumor"}


def test_entry_errors_name_file_key_and_reason(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    sources = write_yaml(tmp_path / "s.yaml", {"sources": [
        {"dataset": "msd_spleeen", "root": "d"},
        {"dataset": "kits19"},
        {"dataset": "totalsegmentator", "root": "d"},
        {"dataset": "kits19", "root": "d", "labels": {"1": "kidney"}},
        {"dataset": "bccd", "root": "d", "modalty": "CT"}]})
    with pytest.raises(ConfigError) as err:
        load_config(sources)
    text = str(err.value)
    assert (f"{sources}: sources[0].dataset: unknown dataset 'msd_spleeen' "
            "(did you mean 'msd_spleen'?)") in text
    assert f"{sources}: sources[1].root: required: the folder you downloaded 'kits19' into" in text
    assert "sources[2].dataset: 'totalsegmentator' cannot be built yet: one binary mask file" in text
    assert "sources[3].labels: labels come from the card" in text
    with pytest.raises(ConfigError) as err:  # entry keys go through sources.yaml's own checks
        load_config(write_yaml(tmp_path / "t.yaml", {"sources": [
            {"dataset": "bccd", "root": "d", "modalty": "CT"}]}))
    assert "sources[0].modalty: unknown key 'modalty' (did you mean 'modality'?)" in str(err.value)


def test_inline_definition_and_bundled_card_as_label_map_still_work(tmp_path: Path) -> None:
    root = write_replica(_card("bccd"), tmp_path / "BCCD")
    sources = write_yaml(tmp_path / "s.yaml", {"sources": [{
        "name": "private", "format": "voc", "root": str(root), "modality": "Microscopy",
        "label_map": "bccd", "license": "mine", "citation": "mine"}]})
    config = load_config(sources)
    assert config.sources[0].label_map == _card("bccd").path and config.cards == {}
    _, contexts, _ = prepare(config)
    assert contexts["private"].label_map.lookup("WBC").label == "white blood cell"


def test_users_own_cards_beside_sources_and_in_build_cards(tmp_path: Path) -> None:
    text = _card("kvasir_v2").path.read_text().replace("name: kvasir_v2", "name: my_kvasir")
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "my_kvasir.yaml").write_text(text)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "kvasir_v2.yaml").write_text(  # shadows the bundled card
        _card("kvasir_v2").path.read_text().replace("modality: Endoscopy", "modality: Colposcopy"))
    write_replica(_card("kvasir_v2"), tmp_path / "k")
    sources = write_yaml(tmp_path / "s.yaml", {"build": {"cards": ["more"]}, "sources": [
        {"dataset": "my_kvasir", "root": "k"}, {"dataset": "kvasir_v2", "root": "k", "name": "k2"}]})
    config = load_config(sources)
    assert config.cards["my_kvasir"].path == tmp_path / "cards" / "my_kvasir.yaml"
    assert config.source("k2").modality == "Colposcopy"


def test_card_errors_are_formatted_like_sources_yaml(tmp_path: Path) -> None:
    data = yaml.safe_load(_card("aptos2019").path.read_text())
    data["licence"] = data.pop("license")
    data["modality"] = "Fundus"
    data["options"]["image_colum"] = "id_code"
    data["verified"]["how"] = "by eye"
    path = tmp_path / "aptos_copy.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        parse_card(path)
    text = str(err.value)
    assert f"{path}: licence: unknown key 'licence' (did you mean 'license'?)" in text
    assert f"{path}: license: required" in text
    assert f"{path}: name: 'aptos2019' must match the file name ('aptos_copy')" in text
    assert (f"{path}: verified.how: Input should be 'real_files', 'layout_replica' or "
            "'documentation'") in text
    assert f"{path}: options.image_colum: Extra inputs are not permitted" in text
    assert f"{path}: modality: 'Fundus' is not a GMAI-MMBench modality" in text


# Optional sources, presence checks, the datasets command -----------------------------------------
def test_public_catalog_names_every_catalog_card() -> None:
    catalog = yaml.safe_load((REPO / "examples" / "public_catalog.yaml").read_text())
    named = {s["dataset"] for s in catalog["sources"]}
    assert named == {c.name for c in SUPPORTED if c.info.catalog}
    assert all(s["optional"] is True and s["root"].startswith("${GMAI_DATA}/") for s in catalog["sources"])


def _catalog_root(tmp_path: Path) -> Path:
    data = tmp_path / "public"
    write_replica(_card("kvasir_seg"), data / "Kvasir-SEG")          # present
    write_replica(_card("pathmnist"), data / "medmnist")            # present, shared folder
    write_replica(_card("kits19"), data / "kits19" / "data")        # present
    (data / "OCT2017" / "train").mkdir(parents=True)                 # laid out wrongly
    (data / "OCT2017" / "train" / "img.jpeg").write_bytes(b"")
    return data


def test_validate_reports_present_missing_and_wrong(tmp_path: Path, monkeypatch, capsys) -> None:
    from gmai_build.cli import main

    monkeypatch.setenv("GMAI_DATA", str(_catalog_root(tmp_path)))
    assert main(["validate", "--sources", str(REPO / "examples" / "public_catalog.yaml")]) == 1
    out, err = capsys.readouterr()
    assert "datasets from cards: 3 present, 49 missing (optional, skipped), 1 laid out wrongly" in out
    assert (f"missing: skipped optional source 'kvasir_v2': {tmp_path}/public/kvasir-dataset-v2 "
            "does not exist") in out
    assert "missing: skipped optional source 'bloodmnist': none of bloodmnist.npz in" in out
    assert ("error: source 'oct2017': laid out wrongly: expected "
            "train/{label}/{label}-{case}-*.jpeg") in err
    assert f"{tmp_path}/public/OCT2017 holds: train/ (gmai-build datasets oct2017 shows" in err
    assert "kvasir_seg: mask_pairs, 2 items" in out and "pathmnist: medmnist" in out


def test_build_skips_missing_optional_sources_with_one_line(tmp_path: Path, monkeypatch) -> None:
    data = _catalog_root(tmp_path)
    import shutil
    shutil.rmtree(data / "OCT2017")
    monkeypatch.setenv("GMAI_DATA", str(data))
    proc = run_cli("--sources", str(REPO / "examples" / "public_catalog.yaml"), "--out", str(tmp_path / "o"),
                   "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped optional source")]
    assert len(skipped) == 50 and "Traceback" not in proc.stderr
    assert "  by source: kits19" in proc.stdout


def test_all_optional_sources_absent_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("GMAI_DATA", raising=False)
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "examples" / "public_catalog.yaml")
    assert "every source is optional and absent" in str(err.value)
    assert "skipped optional source 'acdc': environment variable GMAI_DATA is not set" in str(err.value)


def test_datasets_lists_the_catalog_and_prints_one_card(capsys) -> None:
    from gmai_build.cli import main

    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "modality", "granularities", "licence", "access", "verified"]
    row = next(line for line in lines if line.startswith("msd_spleen "))
    assert row.split()[1:4] == ["CT", "Mask,", "Contour,"] and row.endswith("real files")
    assert any(line.startswith("vindr_cxr (unsupported)") for line in lines)
    assert main(["datasets", "msd_liver"]) == 0
    out = capsys.readouterr().out
    assert "Task03_Liver/" in out and "labelsTr/{case}.nii.gz" in out
    assert "  - {dataset: msd_liver, root: /path/to/Task03_Liver}" in out
    assert "cancer: liver tumor" in out
    assert main(["datasets", "msd_livr"]) == 1
    assert "unknown dataset 'msd_livr' (did you mean 'msd_liver'?)" in capsys.readouterr().err


def test_worked_examples_in_the_docs_are_valid_cards(tmp_path: Path) -> None:
    doc = (REPO / "label_maps" / "README.md").read_text()
    blocks = [part.split("```yaml", 1)[1].split("```", 1)[0]
              for part in doc.split("### Worked example")[1:]]
    assert len(blocks) == 2
    for block in blocks:
        data = yaml.safe_load(block)
        path = tmp_path / f"{data['name']}.yaml"
        path.write_text(block)
        card = parse_card(path)
        bundled = _card(card.name)
        assert card.info.labels == bundled.info.labels
        for key in ("format", "options", "modality", "intensity", "slicing"):
            assert card.settings.get(key) == bundled.settings.get(key), key
        assert [e.path for e in card.info.layout] == [e.path for e in bundled.info.layout]


def test_errors_keep_the_file_positions_when_optional_sources_are_skipped(tmp_path: Path) -> None:
    write_replica(_card("kvasir_v2"), tmp_path / "k")
    sources = write_yaml(tmp_path / "s.yaml", {"sources": [
        {"dataset": "kits19", "root": "absent", "optional": True},
        {"dataset": "kvasir_v2", "root": "k", "max_side": 8},
        {"dataset": "kvasir_v2", "root": "k", "name": "k2", "modality": "Endoscopi"}]})
    with pytest.raises(ConfigError) as err:
        load_config(sources)
    text = str(err.value)
    assert f"{sources}: sources[1].max_side: Input should be greater than or equal to 32" in text
    write_yaml(sources, {"sources": [
        {"dataset": "kits19", "root": "absent", "optional": True},
        {"dataset": "kvasir_v2", "root": "k", "name": "k2", "modality": "Endoscopi"}]})
    with pytest.raises(ConfigError) as err:
        load_config(sources)
    assert f"{sources}: sources[1].modality: 'Endoscopi' is not a GMAI-MMBench modality" in str(err.value)


def test_replica_command_then_one_line_source_validates(tmp_path: Path, capsys) -> None:
    from gmai_build.cli import main

    assert main(["datasets", "isic2018_task3", "--replica", str(tmp_path / "ISIC2018")]) == 0
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "mine.yaml").write_text(
        _card("isic2018_task3").path.read_text().replace("name: isic2018_task3", "name: mine"))
    sources = write_yaml(tmp_path / "s.yaml", {"sources": [{"dataset": "mine", "root": "ISIC2018"}]})
    assert main(["validate", "--sources", str(sources)]) == 0
    out = capsys.readouterr().out
    assert "mine: csv_table, 14 items, label map OK (7 raw labels checked, 14 files exist)" in out
    assert main(["datasets", "--sources", str(sources)]) == 0
    assert any(line.startswith("mine ") for line in capsys.readouterr().out.splitlines())


def test_whole_public_catalog_builds_from_replicas(tmp_path: Path, monkeypatch) -> None:
    """Every catalog card in one build: their new labels, label maps and roots coexist."""
    catalog = [c for c in SUPPORTED if c.info.catalog]
    for card in catalog:
        write_replica(card, tmp_path / "public" / (card.info.folder or card.name))
    monkeypatch.setenv("GMAI_DATA", str(tmp_path / "public"))
    config = load_config(REPO / "examples" / "public_catalog.yaml")
    assert config.skipped == [] and set(config.cards) == {c.name for c in catalog}
    summary = build(config, tmp_path / "out", workers=1, progress=False, log=lambda _: None)
    assert set(summary["source"]) == {c.name for c in catalog}
    assert "skipped" not in summary or not summary["skipped"], summary["skipped"]
    vocab = load_vocabulary()
    asked: dict[str, set[tuple[str, str]]] = {}
    for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        asked.setdefault(row["source"], set()).add((row["category"], row["granularity"]))
    for card in catalog:  # every label the card keeps is asked, at every granularity it declares
        label_map = LabelMap(card.path, card.name, vocab)
        want = {(t.label, g) for t in label_map.targets for g in card.info.granularities}
        assert want == asked[card.name], (card.name, want ^ asked[card.name])
    assert set(summary["perceptual granularity"]) == {"Image Level", "Box Level", "Mask Level",
                                                      "Contour Level"}
