"""``gmai-build preview``: one self-contained HTML page to look at a build's questions.

    gmai-build preview build/ --out gallery.html

Per tree node (task, department, modality, granularity) a seeded sample of questions, each with
the image as the model sees it (overlay included; shrunk to a thumbnail when larger), the
options with the answer marked, and where it came from: source, sample, file, slice (axis and
index) and template. Filters (task, department, modality, granularity, source, split, and text)
work offline: the page has no external resource. Size stays bounded on big builds: at most
``--per-node`` questions per node and ``--max-questions`` in all (every node keeps at least one
while the cap allows), thumbnails at most ``--thumb`` pixels on their longer side.

The page shows the answers of TEST questions too: it belongs with the answer key.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import BuildError
from .manifest import ManifestRecord
from .subset import read_build
from .writer import read_tsv_rows

EXACT_BYTES = 40_000  # small images up to this size are shown as their exact PNG
# The page's filters (data attributes of each card) -> the record's value.
FILTER_KEYS: dict[str, Callable[[ManifestRecord], str]] = {
    "task": lambda r: r.task, "department": lambda r: r.department,
    "modality": lambda r: r.modality, "granularity": lambda r: r.granularity,
    "source": lambda r: r.source, "split": lambda r: r.split,
}
Node = tuple[str, str, str, str]  # task, department, modality, granularity


def node_of(r: ManifestRecord) -> Node:
    return (r.task, r.department, r.modality, r.granularity)


def sample(records: list[ManifestRecord], per_node: int, cap: int, seed: int) -> tuple[
        dict[Node, list[ManifestRecord]], dict[Node, int]]:
    """Seeded sample per tree node (ranked by a hash of the case id); nodes sorted by name.

    Returns the shown questions per node and the node sizes. The cap is filled round-robin over
    the nodes, so a big node cannot crowd out small ones.
    """
    nodes: dict[Node, list[ManifestRecord]] = defaultdict(list)
    for r in records:
        nodes[node_of(r)].append(r)
    ranked = {
        node: sorted(rs, key=lambda r: hashlib.sha256(f"{seed}:preview:{r.case_id}".encode())
                     .hexdigest())[:per_node]
        for node, rs in sorted(nodes.items())
    }
    shown: dict[Node, list[ManifestRecord]] = {node: [] for node in ranked}
    budget = cap
    for depth in range(per_node):
        for node, rs in ranked.items():
            if budget and depth < len(rs):
                shown[node].append(rs[depth])
                budget -= 1
    return {n: rs for n, rs in shown.items() if rs}, {n: len(rs) for n, rs in nodes.items()}


def thumbnail(png_b64: str, max_side: int) -> tuple[str, str, tuple[int, int]]:
    """(data URI, note, original (w, h)): the PNG itself when small, else a JPEG thumbnail."""
    data = base64.b64decode(png_b64)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise BuildError("an image in the build does not decode as PNG/JPEG")
    h, w = img.shape[:2]
    if max(h, w) <= max_side and len(data) <= EXACT_BYTES:
        return f"data:image/png;base64,{png_b64}", f"{w}×{h}, exactly as the model sees it", (w, h)
    scale = min(1.0, max_side / max(h, w))
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else img
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 88])
    assert ok
    uri = "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
    size = f"shown at {small.shape[1]}×{small.shape[0]}" if scale < 1 else "shown as JPEG"
    return uri, f"{w}×{h}, {size}", (w, h)


def load_images(build: Path, name: str, wanted: set[int], max_side: int) -> dict[int, tuple]:
    """Thumbnails of the wanted questions, streamed from the build's VAL and TEST TSVs."""
    out: dict[int, tuple] = {}
    for part in ("VAL", "TEST"):
        path = build / f"{name}_{part}.tsv"
        if not path.is_file():
            raise BuildError(f"{path.name} is missing from the build", file=build)
        rows = read_tsv_rows(path)
        header = next(rows)
        at, img = header.index("index"), header.index("image")
        for row in rows:
            index = int(row[at])
            if index in wanted:
                out[index] = thumbnail(row[img], max_side)
    return out


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _card(r: ManifestRecord, image: tuple) -> str:
    uri, note, (w, h) = image
    tiny = ' class="tiny"' if max(w, h) < 128 else ""
    letters = "ABCDE"
    items = []
    for letter, option in zip(letters, r.options):
        right = letter == r.answer
        tick = " <span class=tick>✓ answer</span>" if right else ""
        items.append(f'<li class="{"answer" if right else ""}"><b>{letter}.</b> {_e(option)}{tick}</li>')
    options = "".join(items)
    where = [f"source <b>{_e(r.source)}</b>", f"sample {_e(r.sample_id)}"]
    if r.files:
        where.append("file " + _e(", ".join(r.files[:2]) + (" …" if len(r.files) > 2 else "")))
    if r.axis is not None or r.slice_index is not None:
        where.append(f"slice {_e(r.axis or '')} {_e(r.slice_index)}")
    attrs = " ".join(f'data-{k}="{_e(value_of(r) or "(none)")}"'
                     for k, value_of in FILTER_KEYS.items())
    text = _e(f"{r.category} {r.question} {' '.join(r.options)}".lower())
    return (
        f'<article class="card" {attrs} data-text="{text}">'
        f'<img src="{uri}" alt="question {r.index}"{tiny}>'
        f'<div class="meta">#{r.index} · {_e(r.split)} · {note}</div>'
        f'<p class="q">{_e(r.question)}</p><ol>{options}</ol>'
        f'<div class="meta">label <b>{_e(r.category)}</b> · template {_e(r.template_id)}</div>'
        f'<div class="meta">{" · ".join(where)}</div></article>'
    )


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:8px 16px;z-index:1}
h1{font-size:18px;margin:0 0 6px}h2{font-size:15px;margin:18px 16px 6px}
.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.filters label{font-size:12px;color:#555}select,input{font-size:13px;max-width:220px}
.grid{display:flex;flex-wrap:wrap;gap:10px;padding:0 16px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:300px}
.card img{display:block;width:256px;max-width:100%;margin:0 auto 4px}
.card img.tiny{image-rendering:pixelated}
.q{font-weight:600;margin:4px 0}ol{list-style:none;padding:0;margin:4px 0}
li{padding:2px 4px;border-radius:3px}li.answer{background:#d9f2dc;outline:1px solid #5cb85c}
.tick{color:#2e7d32;font-size:12px}.meta{font-size:11px;color:#666;word-break:break-word}
.node small{color:#777;font-weight:normal}[hidden]{display:none!important}
"""

SCRIPT = """
(function () {
  const keys = KEYS;
  const cards = Array.from(document.querySelectorAll('.card'));
  const nodes = Array.from(document.querySelectorAll('section.node'));
  const boxes = {};
  keys.forEach(function (k) { boxes[k] = document.getElementById('f-' + k); });
  const text = document.getElementById('f-text');
  function apply() {
    const needle = text.value.trim().toLowerCase();
    let shown = 0;
    cards.forEach(function (c) {
      let ok = keys.every(function (k) { return !boxes[k].value || c.dataset[k] === boxes[k].value; });
      if (ok && needle) { ok = c.dataset.text.indexOf(needle) >= 0; }
      c.hidden = !ok;
      if (ok) { shown += 1; }
    });
    nodes.forEach(function (n) { n.hidden = !n.querySelector('.card:not([hidden])'); });
    document.getElementById('shown').textContent = String(shown);
  }
  keys.forEach(function (k) { boxes[k].addEventListener('change', apply); });
  text.addEventListener('input', apply);
  apply();
})();
"""


def render_page(name: str, shown: dict, sizes: dict, images: dict, total: int,
                settings: dict[str, Any]) -> str:
    values: dict[str, set[str]] = {k: set() for k in FILTER_KEYS}
    sections = []
    for node, rs in shown.items():
        for r in rs:
            for k, value_of in FILTER_KEYS.items():
                values[k].add(value_of(r) or "(none)")
        title = " · ".join(_e(v or "(no department)") for v in node)
        cards = "".join(_card(r, images[r.index]) for r in rs)
        sections.append(f'<section class="node"><h2>{title} <small>({len(rs)} of '
                        f'{sizes[node]} shown)</small></h2><div class="grid">{cards}</div></section>')
    selects = "".join(
        f'<label>{k} <select id="f-{k}"><option value="">all</option>'
        + "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in sorted(values[k]))
        + "</select></label>" for k in FILTER_KEYS)
    n_shown = sum(len(rs) for rs in shown.values())
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{_e(name)}: gallery</title>"
        f"<style>{STYLE}</style></head><body><header><h1>{_e(name)}: "
        f"{n_shown} of {total} questions from {len(shown)} tree nodes "
        f"(showing <span id=shown>{n_shown}</span>)</h1>"
        f"<div class=meta>Seeded sample: {_e(json.dumps(settings))}. The correct option is "
        "marked ✓, TEST questions included: keep this page with the answer key, not with the "
        "published TSVs. Images are the question images (overlays included), as thumbnails "
        f"where larger.</div><div class=filters>{selects}<label>text <input id=f-text "
        "type=search placeholder='label, question, option'></label></div></header>"
        f"<main>{''.join(sections)}</main>"
        f"<script>{SCRIPT.replace('KEYS', json.dumps(list(FILTER_KEYS)))}</script></body></html>\n"
    )


def write_gallery(build: Path, out: Path, per_node: int = 4, cap: int = 800, thumb: int = 256,
                  seed: int = 0) -> dict[str, int]:
    """Write the gallery of ``build`` to ``out`` (atomically); returns what it shows."""
    name, records = read_build(build)
    shown, sizes = sample(records, per_node, cap, seed)
    wanted = {r.index for rs in shown.values() for r in rs}
    images = load_images(build, name, wanted, thumb)
    missing = sorted(wanted - set(images))
    if missing:
        raise BuildError(f"questions {missing[:5]} of the manifest are not in the TSVs: the build "
                         "is incomplete or was changed by hand", file=build)
    settings = {"per_node": per_node, "max_questions": cap, "thumb": thumb, "seed": seed}
    page = render_page(name, shown, sizes, images, len(records), settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return {"questions": len(wanted), "nodes": len(shown), "total": len(records),
            "bytes": out.stat().st_size}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gmai-build preview",
                                description="Write a self-contained HTML gallery of a build.")
    p.add_argument("build", type=Path, help="a build's folder")
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    p.add_argument("--per-node", type=int, default=4, help="questions per tree node (default 4)")
    p.add_argument("--max-questions", type=int, default=800, help="questions in all (default 800)")
    p.add_argument("--thumb", type=int, default=256,
                   help="longer side of thumbnails in pixels (smaller images stay as they are)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = p.parse_args(argv)
    for flag, value in (("--per-node", args.per_node), ("--max-questions", args.max_questions),
                        ("--thumb", args.thumb)):
        if value < 1:
            raise BuildError(f"{flag} must be at least 1")
    got = write_gallery(args.build, args.out, args.per_node, args.max_questions, args.thumb,
                        args.seed)
    print(f"gmai-build preview: {got['questions']} of {got['total']} questions from "
          f"{got['nodes']} tree nodes -> {args.out} ({got['bytes'] / 1e6:.1f} MB)")
    return 0
