"""Dataset cards: every bundled card parses; every supported card's layout replica is discovered
and every raw label maps (default suite); every replica builds into questions of the card's
granularities (slow). Thin `dataset:` entries, overrides, optional sources, card errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from gmai_build.cards import all_cards, layout_problems
from gmai_build.config import load_config
from gmai_build.pipeline import build, check_known_labels, discover, prepare
from gmai_build.replica import write_replica
from helpers import write_yaml

CARDS = all_cards()
SUPPORTED = [c for c in CARDS if c.info.supported]


def test_catalog_size_and_verification() -> None:
    catalog = [c for c in SUPPORTED if c.info.catalog]
    assert len(catalog) >= 40
    assert {c.info.verified.how for c in catalog} == {"real_files", "layout_replica"}
    for c in CARDS:
        if not c.info.supported:
            assert c.info.reason


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
