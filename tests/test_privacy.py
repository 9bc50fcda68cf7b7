"""No patient identifier in any output byte, log line or error message.

A hospital-style tree is made from the real samples: every identifying DICOM attribute
(PatientName, PatientID, BirthDate, Sex+Age, AccessionNumber, Institution, physicians, dates,
times, UIDs) and every folder and file name carries a unique marker (prefix ``MRK``, a birth
date 1923-04-17, a time 13:42:11, UIDs under a marker root). It is built (DICOM series table,
SEG, RTSTRUCT, a CSV table of 2D images with a patient column, NRRD volumes) with progress bars
on, and every output byte is searched: TSVs with their base64 PNGs decoded (chunks and
decompressed pixel stream), the manifest, build.json, summaries, and the captured stdout and
stderr. Failing builds (broken DICOM, unknown label, a symlink escaping the root, an RTSTRUCT
whose series is not on disk) are searched too.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from dicom_factory import Markers, markerize_file
from gmai_build.cli import main
from gmai_build.privacy import default_key_file
from helpers import realdata, write_yaml
from PIL import Image

CITE = {"license": "test data", "citation": "public samples (see README)"}


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG stream."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        out.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


class Hospital:
    """The marker-laden tree, its sources.yaml, and every string an output must not contain."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "MRKROOT_HOSPITAL"
        self.m = Markers()
        root = self.root
        seg_real, rt_real = realdata("dicom_seg_liver"), realdata("dicom_rtstruct_phantom")
        study = root / "MRKPATDIR_8841" / "MRKSTUDYDIR_20230417"
        for n, src in enumerate(sorted((seg_real / "ct").glob("*.dcm")), start=1):
            markerize_file(src, study / "ct" / f"MRKFILE_{n:02d}.dcm", self.m)
        markerize_file(seg_real / "seg" / "liver_seg.dcm", study / "seg" / "MRKSEGFILE.dcm", self.m)
        rt = root / "MRKPATDIR2_555" / "MRKRTDIR"
        for n, src in enumerate(sorted((rt_real / "ct").glob("*.dcm")), start=1):
            markerize_file(src, rt / "ct" / f"MRKRTCT_{n}.dcm", self.m)
        markerize_file(rt_real / "rtstruct.dcm", rt / "MRKRTFILE.dcm", self.m)
        for n, src in enumerate(sorted((rt_real / "ct").glob("*.dcm")), start=1):
            markerize_file(src, root / "MRKPATDIR5_999" / "ct" / f"MRKCT5_{n}", self.m)
        (root / "series.csv").write_text(
            "series,finding\nMRKPATDIR_8841/MRKSTUDYDIR_20230417/ct,Liver\n"
            "MRKPATDIR5_999/ct,Kidney\n")
        arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
        rows = ["image,label,patient"]
        labels = arrays["val_labels"][:, 0]
        picks = list(np.flatnonzero(labels == 0)[:6]) + list(np.flatnonzero(labels == 1)[:6])
        for n, k in enumerate(picks):
            folder = root / f"MRKPATDIR3_{n // 2:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arrays["val_images"][k]).save(folder / f"MRKIMG_{n}.png")
            rows.append(f"{folder.name}/MRKIMG_{n}.png,{labels[k]},MRKPATCOL_{n // 2}")
        (root / "xray.csv").write_text("\n".join(rows) + "\n")
        vol = root / "MRKPATDIR4_321"
        vol.mkdir()
        for name in ("brain1_image.nrrd", "brain1_label.nrrd"):
            shutil.copy(realdata("nrrd_brain", name), vol / name.replace("brain1", "MRKVOL"))
        (tmp / "series_map.yaml").write_text(
            "department: Gastroenterology and Hepatology\nlabels:\n  Liver: liver\n"
            "  Kidney: kidney\n")
        self.config = write_yaml(tmp / "sources.yaml", {
            "build": {"name": "PRIV", "workers": 2, "per_label_cap": 100},
            "sources": [
                {"name": "series", "format": "dicom_series_table", "root": str(root),
                 "modality": "CT", "label_map": "series_map.yaml", **CITE,
                 "options": {"table": "series.csv", "series_column": "series",
                             "label_column": "finding"}},
                {"name": "seg", "format": "dicom_seg", "root": str(root), "modality": "CT",
                 "label_map": "dicom_seg_liver", **CITE,
                 "options": {"images": "MRKPATDIR_8841", "segs": "MRKPATDIR_8841/**/seg"}},
                {"name": "rt", "format": "dicom_rtstruct", "root": str(root / "MRKPATDIR2_555"),
                 "modality": "CT", "label_map": "dicom_rtstruct_phantom", **CITE,
                 "options": {"images": "MRKRTDIR/ct", "structs": "MRKRTDIR/MRKRTFILE.dcm"}},
                {"name": "xray", "format": "csv_table", "root": str(root), "modality": "X-ray",
                 "label_map": "pneumoniamnist", **CITE,
                 "options": {"table": "xray.csv", "image_column": "image",
                             "label_column": "label", "patient_column": "patient"}},
                {"name": "mr", "format": "image_label_glob", "root": str(root), "modality": "MRI",
                 "label_map": "nrrd_brain", **CITE,
                 "options": {"image_glob": "MRKPATDIR4_*/*_image.nrrd",
                             "label_pattern": "{dir}/MRKVOL_label.nrrd"}},
            ],
        })

    def forbidden(self) -> list[bytes]:
        """Case-insensitive needles: the marker prefix, dates, times, age, UIDs, root, salt key."""
        needles = ["MRK", self.m.date, "1923-04-18", "19230417", "1923-04-17", "134211",
                   "13:42:11", "093Y", str(self.root), *self.m.uids.values(),
                   *(u.rsplit(".", 1)[0] for u in self.m.uids.values())]
        # the original identifiers of the real samples must not come back either
        needles += ["PHANTOM_EXAMPLE"]
        key = default_key_file()
        if key.is_file():
            needles.append(key.read_text().strip())
        return sorted({n.lower().encode() for n in needles})


def find_leaks(blob: bytes, needles: list[bytes]) -> list[str]:
    low = blob.lower()
    return [n.decode() for n in needles if n in low]


def output_blobs(out: Path) -> dict[str, bytes]:
    """Every file under the output folder, plus every decoded image and its PNG stream."""
    blobs: dict[str, bytes] = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        blobs[str(path.relative_to(out))] = data
        if path.suffix == ".png":  # the cache's task files: PNGs back to back
            signature = b"\x89PNG\r\n\x1a\n"
            parts = [signature + p for p in data.split(signature)[1:]]
            assert b"".join(parts) == data, f"{path.name}: not only PNGs"
            blobs[str(path.relative_to(out))] = b""  # (compressed bytes: searched decoded)
            for k, png in enumerate(parts):
                chunks = png_chunks(png)
                blobs[f"{path.name}[{k}] png"] = png
                blobs[f"{path.name}[{k}] pixels"] = zlib.decompress(
                    b"".join(p for kind, p in chunks if kind == b"IDAT"))
        if path.suffix == ".tsv" and "image" in pd.read_csv(path, sep="\t", nrows=0).columns:
            df = pd.read_csv(path, sep="\t")
            # base64 text holds any three letters by chance: search the other columns as text
            # and every image decoded, instead of the raw file.
            blobs[str(path.relative_to(out))] = df.drop(columns="image").to_csv().encode()
            for idx, b64 in zip(df["index"], df["image"]):
                png = base64.b64decode(b64)
                chunks = png_chunks(png)
                kinds = {k for k, _ in chunks}
                assert kinds == {b"IHDR", b"IDAT", b"IEND"}, f"{path.name}[{idx}]: {kinds}"
                pixels = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
                blobs[f"{path.name}[{idx}] png"] = png
                blobs[f"{path.name}[{idx}] pixels"] = pixels
    return blobs


@pytest.fixture
def hospital(tmp_path: Path) -> Hospital:
    return Hospital(tmp_path)


def test_no_identifier_in_any_output_byte_or_log(hospital: Hospital, tmp_path: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["--sources", str(hospital.config), "--out", str(out)])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    needles = hospital.forbidden()
    assert len(needles) > 20
    blobs = output_blobs(out)
    sources = {r.split('"source": "')[1].split('"')[0]
               for r in (out / "manifest.jsonl").read_text().splitlines()}
    assert sources == {"series", "seg", "rt", "xray", "mr"}, "every kind of source was built"
    assert any(k.endswith(" pixels") for k in blobs)
    leaks = {name: hit for name, blob in blobs.items() if (hit := find_leaks(blob, needles))}
    assert not leaks
    for stream in (captured.out, captured.err):
        assert not find_leaks(stream.encode(), needles), stream
    assert "PRIV" in captured.out  # the summary was printed
    assert not list(out.glob(".staging*"))
    # Rebuilding with the same (per-user) salt gives the same bytes: tokens are stable.
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["--sources", str(hospital.config), "--out", str(tmp_path / "again"),
                 "--no-progress"]) == 0
    again = {p.name: p.read_bytes() for p in (tmp_path / "again").iterdir() if p.is_file()}
    assert again == before


def test_skip_lists_carry_no_identifier(hospital: Hospital, tmp_path: Path,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    """on_error: skip lists skipped files and reasons: by token, in summary.md/json and logs."""
    _break_dicom(hospital)
    (hospital.root / "MRKPATDIR3_000" / "MRKIMG_0.png").write_bytes(b"\x89PNG\r\n\x1a\nbad")
    config = yaml.safe_load(hospital.config.read_text())
    config["build"]["on_error"] = "skip"
    for src in config["sources"]:  # the broken DICOM series leaves 'series' and 'seg' no question
        src["allow_no_questions"] = True
    hospital.config.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main(["--sources", str(hospital.config), "--out", str(out), "--workers", "2"]) == 0
    captured = capfd.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    reasons = [s["reason"] for s in summary["skipped_samples"]]
    assert any(r.startswith("series left out") for r in reasons)
    assert any(r.startswith("cannot read image") for r in reasons)
    needles = hospital.forbidden()
    leaks = {n: hit for n, b in output_blobs(out).items() if (hit := find_leaks(b, needles))}
    assert not leaks
    assert not find_leaks((captured.out + captured.err).encode(), needles)


def _break_dicom(h: Hospital) -> None:
    bad = h.root / "MRKPATDIR_8841" / "MRKSTUDYDIR_20230417" / "ct" / "MRKBROKEN"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 40)  # no suffix


def _unknown_label(h: Hospital) -> None:
    (h.root / "xray.csv").write_text((h.root / "xray.csv").read_text() + "MRKPATDIR3_000/MRKIMG_0.png,7,x\n")


def _escape(h: Hospital) -> None:
    outside = h.tmp / "elsewhere.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
    os.symlink(outside, h.root / "MRKPATDIR3_000" / "MRKLINK.png")
    (h.root / "xray.csv").write_text((h.root / "xray.csv").read_text() + "MRKPATDIR3_000/MRKLINK.png,1,p\n")


def _rt_without_series(h: Hospital) -> None:
    shutil.rmtree(h.root / "MRKPATDIR2_555" / "MRKRTDIR" / "ct")


@pytest.mark.parametrize("damage, expect", [
    (_break_dicom, "unreadable DICOM"),
    (_unknown_label, "raw label(s) not in label map"),
    (_escape, "outside the source root"),
    (_rt_without_series, "RTSTRUCT has no matching image series"),
])
def test_error_messages_carry_no_identifier(hospital: Hospital, tmp_path: Path,
                                            capfd: pytest.CaptureFixture[str], damage,
                                            expect: str) -> None:
    damage(hospital)
    for workers in ("1", "2"):
        code = main(["--sources", str(hospital.config), "--out", str(tmp_path / "out"),
                     "--no-progress", "--workers", workers])
        captured = capfd.readouterr()
        assert code == 1
        assert expect in captured.err and "Traceback" not in captured.err
        leaks = find_leaks((captured.out + captured.err).encode(), hospital.forbidden())
        assert not leaks, captured.err
    # validate checks the same without decoding pixels, with the same redaction
    code = main(["validate", "--sources", str(hospital.config)])
    captured = capfd.readouterr()
    assert code == 1 and "error: source '" in captured.err
    assert not find_leaks((captured.out + captured.err).encode(), hospital.forbidden())
    # --show-paths is the explicit, local way to see which file it is.
    assert main(["--sources", str(hospital.config), "--out", str(tmp_path / "out"),
                 "--no-progress", "--show-paths"]) == 1
    assert "MRK" in capfd.readouterr().err


def test_dicom_attributes_really_carry_the_markers(hospital: Hospital) -> None:
    """Guard for the test itself: the markers are in the inputs, so their absence means something."""
    ds = pydicom.dcmread(next(hospital.root.rglob("MRKFILE_01.dcm")))
    assert str(ds.PatientID) == hospital.m.values["PatientID"]
    assert str(ds.PatientBirthDate) == "19230417" and str(ds.StudyDate) == hospital.m.date
    assert str(ds.SeriesInstanceUID).startswith("1.2.826.0.1.3680043.8.498.7777")
    seg = pydicom.dcmread(next(hospital.root.rglob("MRKSEGFILE.dcm")))
    assert str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == str(ds.SeriesInstanceUID)


def test_scrub_replaces_paths_names_and_uids() -> None:
    from gmai_build.privacy import Privacy

    p = Privacy(b"k" * 32)
    root = Path("/data/Hospital A")
    text = ("cannot read /data/Hospital A/Smith John/IM0001.dcm; see Smith John and IM0001.dcm. "
            "series 1.2.826.0.1.3680043.8.498.55 (SOP class 1.2.840.10008.5.1.4.1.1.2); "
            "study 2.25.1234567890123.")
    out = p.scrub(text, "ct", [root], {"Smith John", "IM0001.dcm"})
    for leak in ("Hospital A", "Smith", "IM0001", "1.2.826.0.1.3680043", "2.25.12345"):
        assert leak not in out, out
    assert "1.2.840.10008.5.1.4.1.1.2" in out  # standard UIDs say nothing about a patient
    assert f"see {p.file('ct', 'Smith John')} and {p.file('ct', 'IM0001.dcm')}." in out
    assert p.file("ct", "a/IM0001.dcm").endswith(".dcm") and p.group("ct", "x").startswith("g-")


def test_default_key_is_created_private_and_reused(tmp_path, monkeypatch) -> None:
    from gmai_build.privacy import resolve_salt

    key = tmp_path / "cfg" / "key"
    monkeypatch.setenv("GMAI_BUILD_KEY_FILE", str(key))
    salt, origin = resolve_salt(None)
    assert origin == "per-user key" and key.is_file() and (key.stat().st_mode & 0o077) == 0
    assert resolve_salt(None)[0] == salt and len(salt) == 64
    assert resolve_salt("given")[0] == b"given"


def test_a_class_folder_named_like_its_label_stays_readable(tmp_path) -> None:
    """folder_per_class: the folder IS the label (published anyway); patient folders are not."""
    from gmai_build.errors import BuildError
    from gmai_build.privacy import Privacy, redact_error

    (tmp_path / "COVID" / "PAT123").mkdir(parents=True)
    err = BuildError("raw label 'COVID' is not in label map; seen in PAT123", source="xr")
    out = str(redact_error(err, Privacy(b"k" * 32), tmp_path, labels={"COVID"}))
    assert "'COVID'" in out and "PAT123" not in out
