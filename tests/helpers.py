"""Shared test helpers: where the real public samples are, and how to build and read back."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("GMAI_REALDATA", REPO.parent / "shared" / "realdata"))
REALDATA_HINT = (
    "real public samples not found at {path} (set GMAI_REALDATA). They are public: MedMNIST "
    "PneumoniaMNIST (zenodo), MSD Task09 spleen (ivadomed/data-testing), pyradiomics test data, "
    "neurolabusc/dcm_qa_decubitus, QIICR/dcmqi, qurit/rt-utils, BCCD; see the README."
)


def realdata(*parts: str) -> Path:
    """Path of a real sample, or skip the test with a message saying where samples come from."""
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(REALDATA_HINT.format(path=path))
    return path


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_tsv(path: Path) -> pd.DataFrame:
    """Read a TSV exactly as VLMEvalKit does (pandas defaults)."""
    return pd.read_csv(path, sep="\t")


def decode_image(b64: str) -> np.ndarray:
    import cv2

    data = np.frombuffer(base64.b64decode(b64), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_manifest(out: Path) -> list[dict]:
    """The manifest's lines as plain JSON (what the file holds, whatever the code reads)."""
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def manifest_records(out: Path) -> list:
    """The manifest as the typed records every reader of a build gets."""
    from gmai_build.manifest import read_manifest as read

    return read(out / "manifest.jsonl")


RECORD = {  # one valid manifest line; tests change the fields they are about
    "index": 0, "case_id": "c0", "pair_id": "p0", "split": "VAL", "source": "s",
    "sample_id": "s-0", "files": ["f-0.png"], "group": "g-0", "raw_label": "femur",
    "category": "femur", "task": "Bone", "department": "Orthopedic Surgery",
    "modality": "X-ray", "granularity": "Image Level", "original_task": "CLS_2D", "axis": None,
    "slice_index": None, "region": {}, "template_id": "t", "question": "Which bone?",
    "options": ["femur", "tibia"], "answer": "A", "seed": 0, "image_sha256": "0" * 64,
    "image_phash": "0" * 64,
    "test_view": {"category": "Bone", "clinical VQA task": "Bone", "department": ""},
}


def record(**fields):
    """A valid ManifestRecord with ``fields`` changed."""
    from gmai_build.manifest import ManifestRecord

    return ManifestRecord.from_json(json.dumps({**RECORD, **fields}))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_build(sources: Path, out: Path, workers: int = 1) -> int:
    from gmai_build.cli import main

    return main(["--sources", str(sources), "--out", str(out), "--workers", str(workers),
                 "--no-progress"])


def copy_example(dest: Path) -> Path:
    """A private copy of the bundled example (sources.yaml + data); returns its sources.yaml."""
    import shutil

    shutil.copytree(REPO / "examples" / "data", dest / "data")
    shutil.copy(REPO / "examples" / "sources.yaml", dest / "sources.yaml")
    return dest / "sources.yaml"


def run_cli(*args: str, env: dict | None = None, block: tuple[str, ...] = (),
            **kwargs) -> subprocess.CompletedProcess[str]:
    """``gmai-build ARGS`` in a fresh interpreter; ``block`` makes those packages unimportable
    (as if not installed), so tests can show what a plain install without them does."""
    import sys

    code = ("import sys\n"
            f"for name in {list(block)!r}: sys.modules[name] = None\n"
            "from gmai_build.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, **kwargs)


# Privacy: outputs and messages name groups, samples and files by salted tokens. Builds in the
# tests use the per-user key (conftest points it to a temporary file); these give the tokens a
# test expects, from the raw values it knows.
def privacy():
    from gmai_build.privacy import Privacy, resolve_salt

    return Privacy(resolve_salt(None)[0])


def group_token(source: str, raw: str) -> str:
    return privacy().group(source, raw)


def sample_token(source: str, raw: str) -> str:
    return privacy().sample_id(source, raw)


def file_token(source: str, relative: str) -> str:
    return privacy().file(source, relative)


def published(out: Path) -> dict[str, str]:
    """sha256 of every file a reader sees at the top of an output folder (links followed)."""
    return {p.name: sha256(p) for p in sorted(out.iterdir())
            if p.is_file() and not p.name.startswith(".")}


def leftovers(out: Path) -> list[str]:
    """What a build must never leave: staging, unpublished build folders, stray links."""
    found = [p.name for p in out.iterdir()
             if p.name.startswith(".staging") or p.name.endswith(".new")
             or (p.is_symlink() and not p.exists())]
    builds = out / ".builds"
    if builds.is_dir():
        current = (out / "current").resolve()
        found += [f".builds/{p.name}" for p in builds.iterdir() if p.resolve() != current]
    return found


XRAY_CITE = {"license": "CC BY 4.0", "citation": "Yang J. et al. MedMNIST v2. Sci Data 2023"}


def xray_class_folders(root: Path, classes: dict[str, int], offset: int = 0) -> None:
    """Real PneumoniaMNIST chest X-rays saved as ``root/<class>/<k>.png``, ``n`` per class.

    The images are real; the class names are whatever the test needs (pipeline mechanics:
    label maps, options, rebuilds), taken in a fixed order so every call is reproducible.
    """
    from PIL import Image

    images = np.load(realdata("medmnist", "pneumoniamnist.npz"))["test_images"]
    k = offset
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            Image.fromarray(images[k]).save(root / cls / f"{k:04d}.png")
            k += 1


def xray_source(name: str = "xr", root: str = "imgs", label_map: str = "map.yaml") -> dict:
    return {"name": name, "format": "folder_per_class", "root": root, "modality": "X-ray",
            "label_map": label_map, **XRAY_CITE}


def mixed_realdata_sources(folder: Path) -> Path:
    """sources.yaml of a small real-data build that exercises the executors: 20 BCCD
    microscopy images with boxes (VOC, one task per few images) and the MSD spleen CT volume
    (gzip NIfTI, mask and contour questions); ~70 questions."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_yaml(folder / "sources.yaml", {
        "build": {"name": "MIX", "seed": 0},
        "sources": [
            {"name": "bccd", "format": "voc", "root": str(realdata("voc_bccd")),
             "modality": "Microscopy", "label_map": "bccd", "license": "MIT",
             "citation": "BCCD Dataset, Shenggan, 2017", "identifying_paths": False},
            {"name": "spleen", "format": "msd", "root": str(realdata("msd_spleen")),
             "modality": "CT", "label_map": "msd_spleen", "license": "CC-BY-SA 4.0",
             "citation": "Medical Segmentation Decathlon, Task09 Spleen",
             "identifying_paths": False},
        ]})


# Processes a build left behind: the tests start it with GMAI_TEST_MARK=<marker> in its
# environment, which every process it starts inherits.
def processes_with(marker: str) -> list[int]:
    """Live processes whose environment carries the marker (the build and its children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":  # a zombie is already dead
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def no_orphans(marker: str) -> None:
    """Wait (10 s at most) until no process carries the marker; kill and fail if one does."""
    deadline = time.monotonic() + 10
    while (alive := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive:  # do not leave them running after the test
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"processes outlived the build: {alive}"
