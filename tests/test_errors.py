"""Bad input: one clear message (source + file + reason), non-zero exit, nothing lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gmai_build.cli import main
from gmai_build.errors import BuildError
from helpers import file_token, leftovers, published, realdata, write_yaml
from PIL import Image

CITE = {"license": "CC BY 4.0", "citation": "Yang J. et al. MedMNIST v2. Sci Data 2023"}


def _folder_source(root: str = "imgs", label_map: str = "map.yaml") -> dict:
    return {"name": "xr", "format": "folder_per_class", "root": root, "modality": "X-ray",
            "label_map": label_map, **CITE}


@pytest.fixture
def good(tmp_path: Path) -> tuple[Path, Path]:
    """A valid project (real chest X-rays in class folders) already built into out/."""
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    imgs, labels = arrays["val_images"], arrays["val_labels"][:, 0]
    for k in list(np.flatnonzero(labels == 0)[:8]) + list(np.flatnonzero(labels == 1)[:8]):
        cls = "pneumonia" if labels[k] else "normal"
        (tmp_path / "imgs" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(imgs[k]).save(tmp_path / "imgs" / cls / f"{k}.png")
    (tmp_path / "map.yaml").write_text(
        "department: Pulmonary Medicine\nlabels:\n  normal: normal\n  pneumonia: pneumonia\n")
    cfg = write_yaml(tmp_path / "sources.yaml", {"build": {"name": "B"}, "sources": [_folder_source()]})
    out = tmp_path / "out"
    assert main(["--sources", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return cfg, out


def _snapshot(out: Path) -> dict[str, str]:
    return published(out)


def _fails(cfg: Path, out: Path, capsys, *needles: str) -> str:
    before = _snapshot(out)
    code = main(["--sources", str(cfg), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert _snapshot(out) == before, "a failed build must leave the previous outputs untouched"
    assert not leftovers(out)
    return err


def test_missing_root(good, tmp_path, capsys) -> None:
    cfg = write_yaml(tmp_path / "s2.yaml",
                     {"build": {"name": "B"}, "sources": [_folder_source(root="nowhere")]})
    _fails(cfg, good[1], capsys, "s2.yaml", "sources[0].root", "does not exist", "[source 'xr']")


def test_unknown_key_typo(good, tmp_path, capsys) -> None:
    src = _folder_source()
    src["modalty"] = src.pop("modality")
    cfg = write_yaml(tmp_path / "s3.yaml", {"build": {"name": "B"}, "sources": [src]})
    err = _fails(cfg, good[1], capsys, "s3.yaml", "sources[0].modalty", "unknown key")
    assert "did you mean 'modality'" in err


def test_yaml_syntax_error(good, tmp_path, capsys) -> None:
    bad = tmp_path / "s4.yaml"
    bad.write_text("build: {name: B\nsources: [\n")
    _fails(bad, good[1], capsys, "s4.yaml", "not valid YAML")


def test_unknown_format_and_modality(good, tmp_path, capsys) -> None:
    src = _folder_source()
    src["format"], src["modality"] = "folder_per_clas", "Xray"
    cfg = write_yaml(tmp_path / "s5.yaml", {"build": {"name": "B"}, "sources": [src]})
    _fails(cfg, good[1], capsys, "sources[0].format", "did you mean 'folder_per_class'",
           "sources[0].modality", "did you mean 'X-ray'")


def test_unknown_label(good, tmp_path, capsys) -> None:
    (tmp_path / "imgs" / "covid").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "imgs" / "covid" / "c.png")
    (tmp_path / "imgs" / "tb").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "imgs" / "tb" / "t.png")
    err = _fails(good[0], good[1], capsys, "source 'xr'", "map.yaml")
    # Every unknown label of the source at once, each with an example file.
    assert "2 raw label(s) not in label map" in err
    assert f"'covid' (e.g. {file_token('xr', 'covid/c.png')})" in err
    assert f"'tb' (e.g. {file_token('xr', 'tb/t.png')})" in err


def test_default_drop_skips_unmapped_labels(good, tmp_path, capsys) -> None:
    (tmp_path / "imgs" / "covid").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "imgs" / "covid" / "c.png")
    with open(tmp_path / "map.yaml", "a") as f:
        f.write("default: drop\n")
    assert main(["--sources", str(good[0]), "--out", str(good[1]), "--no-progress"]) == 0
    manifest = (good[1] / "manifest.jsonl").read_text()
    assert "covid" not in manifest


def test_unreadable_image(good, tmp_path, capsys) -> None:
    (tmp_path / "imgs" / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _fails(good[0], good[1], capsys, "source 'xr'", file_token("xr", "normal/broken.png"),
           "cannot read image")


def test_label_map_targets_must_be_canonical(good, tmp_path, capsys) -> None:
    (tmp_path / "map.yaml").write_text("department: Pulmonary Medicine\nlabels:\n"
                                       "  normal: normal\n  pneumonia: pneumonai\n")
    err = _fails(good[0], good[1], capsys, "map.yaml", "labels.pneumonia", "'pneumonai'")
    assert "pneumonia" in err.split("close:")[1]


def test_na_like_label_rejected(good, tmp_path, capsys) -> None:
    (tmp_path / "map.yaml").write_text(
        "department: Pulmonary Medicine\nnew_labels:\n  - {label: None, task: Disease Diagnosis,"
        " department: none}\nlabels:\n  normal: None\n  pneumonia: pneumonia\n")
    _fails(good[0], good[1], capsys, "map.yaml", "read back as missing")


def test_validate_command(good, capsys) -> None:
    assert main(["validate", "--sources", str(good[0])]) == 0
    out = capsys.readouterr().out
    assert "xr: folder_per_class, 16 items, label map OK" in out


def test_validate_catches_unknown_label_before_build(good, tmp_path, capsys) -> None:
    (tmp_path / "imgs" / "covid").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "imgs" / "covid" / "c.png")
    assert main(["validate", "--sources", str(good[0])]) == 1
    assert f"'covid' (e.g. {file_token('xr', 'covid/c.png')})" in capsys.readouterr().err


def test_no_group_in_both_splits_and_no_partial_files_after_crash(good, monkeypatch, capsys):
    """A crash while writing (the records stream into the files, the TSV threads running)
    leaves the previous build intact (atomic publish)."""
    import gmai_build.outputs as outputs
    import gmai_build.pipeline as pipeline
    from gmai_build.config import load_config

    cfg, out = good
    before = _snapshot(out)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(outputs, "tsv_row", boom)
    with pytest.raises(BuildError, match="cannot write the build into .*disk full; the previous "
                       "build is unchanged"):
        pipeline.build(load_config(cfg), out, workers=1, progress=False, log=lambda s: None)
    assert _snapshot(out) == before
    assert not leftovers(out)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_is_one_line_and_changes_nothing(good, monkeypatch, capsys, workers):
    """ENOSPC while the workers (or, with one worker, the build itself) write their image files
    and the TSV pieces: one line naming the output folder and the reason, no traceback."""
    import errno
    import os

    from gmai_build.cli import main

    cfg, out = good
    before = _snapshot(out)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    # Spawned workers (which write the image files and the TSV pieces) start a new interpreter:
    # the same full disk reaches them through a sitecustomize module on their path.
    hook = out.parent / "full_disk"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno, os\n"
        "def _full(*a, **k):\n"
        "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "os.pwrite = _full\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(hook), os.environ.get("PYTHONPATH", "")])))
    code = main(["--sources", str(cfg), "--out", str(out), "--workers", str(workers),
                 "--no-progress", "--no-cache"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[0] == (
        f"gmai-build: error: cannot write the build into {out}: No space left on device; "
        "the previous build is unchanged")
    assert "Traceback" not in err
    assert _snapshot(out) == before
    assert not leftovers(out)
