"""`gmai-build preview`: a self-contained gallery, opened in a real headless Chromium."""

from __future__ import annotations

import base64
import os
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from gmai_build.cli import main
from gmai_build.preview import sample
from helpers import read_manifest, record


@pytest.fixture(scope="module")
def gallery(realdata_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gallery") / "gallery.html"
    assert main(["preview", str(realdata_build), "--out", str(out), "--per-node", "3"]) == 0
    return out


def test_sample_is_seeded_per_node_and_capped_fairly() -> None:
    records = [record(case_id=f"c{i}", task="T", department="", modality=m)
               for i in range(40) for m in ("CT", "MRI")]
    records += [record(case_id="x", task="T", department="", modality="OCT")]
    shown, sizes = sample(records, per_node=5, cap=100, seed=0)
    assert [len(v) for v in shown.values()] == [5, 5, 1] and sizes[("T", "", "CT", "Image Level")] == 40
    assert shown == sample(list(reversed(records)), per_node=5, cap=100, seed=0)[0]
    assert shown != sample(records, per_node=5, cap=100, seed=1)[0]
    capped, _ = sample(records, per_node=5, cap=4, seed=0)
    assert [len(v) for v in capped.values()] == [2, 1, 1]  # every node first, then round two


def test_gallery_is_self_contained_with_answers_and_provenance(gallery: Path, realdata_build) -> None:
    page = gallery.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    manifest = {r["index"]: r for r in read_manifest(realdata_build)}
    cards = re.findall(r'<article class="card".*?</article>', page, re.S)
    nodes = Counter((r["task"], r["department"], r["modality"], r["granularity"])
                    for r in manifest.values())
    assert len(cards) == sum(min(3, n) for n in nodes.values())
    for card in cards:
        index = int(re.search(r"#(\d+) ·", card).group(1))
        r = manifest[index]
        answer = re.findall(r'<li class="answer"><b>([A-E])\.</b> ([^<]*?) <span', card)
        assert answer == [(r["answer"], r["options"]["ABCDE".index(r["answer"])])]
        assert f"source <b>{r['source']}</b>" in card and r["template_id"] in card
        if r["slice_index"] is not None:
            assert f"slice {r['axis']} {r['slice_index']}" in card
        uri = re.search(r'src="data:image/(png|jpeg);base64,([^"]+)"', card)
        img = cv2.imdecode(np.frombuffer(base64.b64decode(uri.group(2)), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and max(img.shape[:2]) <= 256
    assert gallery.stat().st_size < 2_000_000


def test_gallery_in_headless_chromium(gallery: Path, tmp_path: Path) -> None:
    from cdp import Browser

    browser = Browser()
    try:
        browser.open(gallery)
        n_cards = browser.eval("document.querySelectorAll('.card').length")
        assert n_cards > 10
        decoded = browser.eval(
            "Promise.all(Array.from(document.images).map(i => i.decode().then(() => "
            "i.naturalWidth > 0 && i.naturalHeight > 0))).then(r => r.filter(Boolean).length)")
        assert decoded == browser.eval("document.images.length") == n_cards
        # Filter by modality: only CT cards stay visible, their sections too, the counter agrees.
        visible = browser.eval("""(function () {
            const box = document.getElementById('f-modality');
            box.value = 'CT';
            box.dispatchEvent(new Event('change'));
            const shown = Array.from(document.querySelectorAll('.card')).filter(c => !c.hidden);
            return {n: shown.length, mods: Array.from(new Set(shown.map(c => c.dataset.modality))),
                    counter: document.getElementById('shown').textContent,
                    sections: Array.from(document.querySelectorAll('section.node'))
                              .filter(s => !s.hidden).length,
                    height: shown[0].getBoundingClientRect().height};
        })()""")
        assert visible["mods"] == ["CT"] and 0 < visible["n"] < n_cards
        assert visible["counter"] == str(visible["n"]) and visible["height"] > 100
        browser.eval("""(function () {
            const box = document.getElementById('f-modality');
            box.value = ''; box.dispatchEvent(new Event('change'));
            const text = document.getElementById('f-text');
            text.value = 'spleen'; text.dispatchEvent(new Event('input'));
        })()""")
        assert 0 < browser.eval("document.querySelectorAll('.card:not([hidden])').length") < n_cards
        browser.eval("""(function () {
            const text = document.getElementById('f-text');
            text.value = ''; text.dispatchEvent(new Event('input'));
            window.scrollTo(0, 0);
        })()""")
        artifacts = Path(os.environ.get("GMAI_TEST_ARTIFACTS", tmp_path))
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = browser.screenshot(artifacts / "gallery.png")
        png = cv2.imread(str(shot))
        assert png is not None and png.shape[1] >= 1000 and png.std() > 10  # not a blank page
        assert browser.errors == []
    finally:
        browser.close()


def test_preview_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["preview", str(tmp_path), "--out", str(tmp_path / "g.html")]) == 1
    err = capsys.readouterr().err
    assert "manifest.jsonl is missing" in err and "Traceback" not in err
    assert not (tmp_path / "g.html").exists()
