"""Per-source cache: a source is read again only when something it depends on changed, and a
build that reuses the cache publishes exactly what a build reading everything publishes."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from helpers import published, realdata, write_yaml, xray_class_folders, xray_source

MAP = "department: Pulmonary Medicine\nlabels: {normal: normal, pneumonia: pneumonia}\n"


class Project:
    """Two sources of real X-rays (a third one can be added), each with its own label map."""

    def __init__(self, root: Path):
        self.root = root
        xray_class_folders(root / "a", {"normal": 5, "pneumonia": 5})
        xray_class_folders(root / "b", {"normal": 5, "pneumonia": 5}, offset=10)
        xray_class_folders(root / "c", {"normal": 5, "pneumonia": 5}, offset=20)
        for name in "abc":
            (root / f"map_{name}.yaml").write_text(MAP)

    def config(self, names: str) -> Path:
        sources = [xray_source(name=f"xr-{n}", root=n, label_map=f"map_{n}.yaml") for n in names]
        return write_yaml(self.root / f"{names}.yaml", {"build": {"name": "C"}, "sources": sources})


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "p")


@pytest.fixture
def reads(monkeypatch) -> Counter[str]:
    """Items read per source (builds run with --workers 1, so in this process)."""
    from gmai_build import work

    counted: Counter[str] = Counter()
    original = work.cases_of_item

    def counting(ctx, maker, item):
        counted[ctx.config.name] += 1
        return original(ctx, maker, item)

    monkeypatch.setattr(work, "cases_of_item", counting)
    return counted


def _same_build(a: Path, b: Path) -> None:
    """Same questions, images and inputs (build.json also records whether a build was
    incremental and what changed since the previous one, so it is compared by its inputs)."""
    import json

    files_a, files_b = published(a), published(b)
    assert {k: v for k, v in files_a.items() if k != "build.json"} == \
        {k: v for k, v in files_b.items() if k != "build.json"}
    info_a, info_b = (json.loads((d / "build.json").read_text()) for d in (a, b))
    assert info_a["input_sha256"] == info_b["input_sha256"]


def _build(cfg: Path, out: Path, *extra: str) -> int:
    from gmai_build.cli import main

    return main(["--sources", str(cfg), "--out", str(out), "--workers", "1", "--no-progress",
                 *extra])


def test_adding_a_source_reads_only_that_source(project, tmp_path, reads, capsys) -> None:
    out = tmp_path / "out"
    assert _build(project.config("ab"), out) == 0
    assert reads == {"xr-a": 10, "xr-b": 10}
    reads.clear()
    capsys.readouterr()
    assert _build(project.config("abc"), out) == 0
    assert reads == {"xr-c": 10}
    assert "cache: 2 of 3 source(s) reused (xr-a, xr-b); 1 read" in capsys.readouterr().out
    # The same two builds without the cache publish the same bytes.
    ref = tmp_path / "ref"
    assert _build(project.config("ab"), ref, "--no-cache") == 0
    assert _build(project.config("abc"), ref, "--no-cache") == 0
    assert published(out) == published(ref)
    assert not (ref / ".cache").exists()


def test_a_changed_file_or_label_map_rereads_only_its_source(project, tmp_path, reads) -> None:
    out = tmp_path / "out"
    assert _build(project.config("ab"), out) == 0
    reads.clear()
    png = next((project.root / "a" / "normal").glob("*.png"))
    stat = png.stat()
    os.utime(png, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: maybe changed
    assert _build(project.config("ab"), out) == 0
    assert reads == {"xr-a": 10}
    reads.clear()
    (project.root / "map_b.yaml").write_text(MAP.replace("pneumonia: pneumonia",
                                                         "pneumonia: lung opacity"))
    assert _build(project.config("ab"), out) == 0
    assert reads == {"xr-b": 10}
    reads.clear()
    assert _build(project.config("ab"), out) == 0
    assert reads == {}


def test_no_cache_reads_everything(project, tmp_path, reads) -> None:
    out = tmp_path / "out"
    assert _build(project.config("ab"), out) == 0
    reads.clear()
    assert _build(project.config("ab"), out, "--no-cache") == 0
    assert reads == {"xr-a": 10, "xr-b": 10}


def test_cache_of_a_removed_source_is_dropped_and_partial_entries_removed(project, tmp_path) -> None:
    out = tmp_path / "out"
    assert _build(project.config("ab"), out) == 0
    sources = sorted(p.name for p in (out / ".cache").iterdir())
    assert len(sources) == 2
    # What a killed build leaves: an entry being written.
    partial = out / ".cache" / sources[0] / ".partial-0123"
    partial.mkdir()
    (partial / "images.bin").write_bytes(b"half")
    assert _build(project.config("a"), out) == 0
    assert [p.name for p in (out / ".cache").iterdir()] == [s for s in sources if "xr-a" in s]
    assert not partial.exists()


def test_a_corrupt_cache_entry_is_read_again(project, tmp_path, reads) -> None:
    out = tmp_path / "out"
    assert _build(project.config("ab"), out) == 0
    shutil.copytree(out, tmp_path / "before", symlinks=True)
    for result in (out / ".cache").rglob("result.pkl"):
        result.write_bytes(b"not a pickle")
    reads.clear()
    assert _build(project.config("ab"), out) == 0
    assert reads == {"xr-a": 10, "xr-b": 10}
    _same_build(out, tmp_path / "before")


def test_cached_volume_source_gives_the_same_build(tmp_path: Path, reads) -> None:
    """A NIfTI segmentation source (slices, masks, contours) reused from the cache."""
    root = realdata("msd_spleen")
    if not root.is_dir():
        pytest.skip(f"real data absent: {root} (see ../shared/realdata/README.md)")
    cfg = write_yaml(tmp_path / "s.yaml", {
        "build": {"name": "V", "per_label_cap": 4},
        "sources": [{"name": "spleen", "format": "msd", "root": str(root), "modality": "CT",
                     "label_map": "msd_spleen", "license": "CC-BY-SA 4.0",
                     "citation": "Antonelli et al., The Medical Segmentation Decathlon, 2022"}],
    })
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert _build(cfg, out) == 0
    shutil.copytree(out, ref, symlinks=True)
    reads.clear()
    assert _build(cfg, out) == 0
    assert reads == {}
    _same_build(out, ref)
