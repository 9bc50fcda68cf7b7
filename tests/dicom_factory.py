"""DICOM test data made from the real samples: identifying attributes set to marker strings, and
clinical-style RTSTRUCTs whose contours reference many slices of which only a few are on disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
STANDARD_UID_ROOT = "1.2.840.10008."
MARKER_UID_ROOT = "1.2.826.0.1.3680043.8.498.7777"  # every UID made here starts with it


class Markers:
    """Unique marker values for every identifying DICOM attribute, and a shared UID map.

    ``apply`` rewrites a dataset (sequences included): person names, IDs, dates, times, free
    text that names people or places, and every non-standard UID (mapped consistently, so
    references between CT, SEG and RTSTRUCT still hold). ``strings()`` lists what an output
    must never contain.
    """

    def __init__(self, prefix: str = "MRK"):
        self.p = prefix
        self.values = {
            "PatientName": f"{prefix}PATNAME^{prefix}GIVEN",
            "PatientID": f"{prefix}PATID8841",
            "PatientBirthDate": "19230417",
            "PatientSex": "O",
            "PatientAge": "093Y",
            "AccessionNumber": f"{prefix}ACC5521",
            "InstitutionName": f"{prefix}INSTITUTE",
            "InstitutionAddress": f"{prefix}STREET 9",
            "ReferringPhysicianName": f"{prefix}REFDOC",
            "PerformingPhysicianName": f"{prefix}PERFDOC",
            "OperatorsName": f"{prefix}OPERATOR",
            "StationName": f"{prefix}STATION",
            "StudyID": f"{prefix}STUDY7",
            "StudyDescription": f"{prefix}STUDYDESC",
            "SeriesDescription": f"{prefix}SERIESDESC",
            "DeviceSerialNumber": f"{prefix}SERIAL3",
        }
        self.date = "19230418"
        self.time = "134211.123456"
        self.uids: dict[str, str] = {}

    def uid(self, old: str) -> str:
        if old not in self.uids:
            self.uids[old] = f"{MARKER_UID_ROOT}.{len(self.uids) + 1}.{9000 + len(self.uids)}"
        return self.uids[old]

    def apply(self, ds: Dataset) -> Dataset:
        def visit(dataset: Dataset, elem: pydicom.DataElement) -> None:
            if elem.VR == "UI" and elem.value and elem.keyword not in (
                    "SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID",
                    "MediaStorageSOPClassUID", "ImplementationClassUID"):
                value = str(elem.value)
                if not value.startswith(STANDARD_UID_ROOT):
                    elem.value = self.uid(value)
            elif elem.VR == "DA" and elem.value:
                elem.value = self.date
            elif elem.VR == "TM" and elem.value:
                elem.value = self.time
            elif elem.VR == "DT" and elem.value:
                elem.value = self.date + self.time

        ds.walk(visit)
        for key, value in self.values.items():
            setattr(ds, key, value)
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = self.date
        ds.StudyTime = ds.SeriesTime = self.time
        if "file_meta" in ds.__dict__ or getattr(ds, "file_meta", None) is not None:
            sop = str(ds.SOPInstanceUID)
            ds.file_meta.MediaStorageSOPInstanceUID = sop
        return ds

    def strings(self) -> list[str]:
        out = [v for k, v in self.values.items() if k != "PatientSex"]
        out += [part for v in self.values.values() for part in v.split("^") if len(part) > 4]
        out += [self.date, self.time.split(".")[0], *self.uids.values()]
        return sorted(set(out))


def markerize_file(src: Path, dst: Path, markers: Markers) -> Dataset:
    ds = markers.apply(pydicom.dcmread(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return ds


def rtstruct(
    image: Dataset,
    slices: list[tuple[str, float]],
    rois: dict[str, Iterable[tuple[int, list[float]]]],
    series_uid: str | None = None,
) -> Dataset:
    """An RTSTRUCT drawn on a planned series of ``slices`` (SOPInstanceUID, z in mm).

    ``rois`` maps ROI name -> (slice number in ``slices``, flat x,y,z contour points) pairs;
    each contour references its slice's SOPInstanceUID, as clinical exports do. Patient and
    study attributes are copied from ``image`` (a real slice of the series).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
                "InstitutionName", "FrameOfReferenceUID"):
        if key in image:
            setattr(ds, key, image.data_element(key).value)
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "plan"
    ds.StructureSetDate = image.get("StudyDate", "")
    contour_images = Sequence()
    for sop, _ in slices:
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = sop
        contour_images.append(ref)
    series = Dataset()
    series.SeriesInstanceUID = series_uid or image.SeriesInstanceUID
    series.ContourImageSequence = contour_images
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = image.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = image.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = image.FrameOfReferenceUID
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = [255, 0, 0]
        rc.ContourSequence = Sequence()
        for k, points in contours:
            c = Dataset()
            img = Dataset()
            img.ReferencedSOPClassUID = image.SOPClassUID
            img.ReferencedSOPInstanceUID = slices[k][0]
            c.ContourImageSequence = Sequence([img])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(points) // 3
            c.ContourData = [f"{v:.3f}" for v in points]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "ORGAN"
        ds.RTROIObservationsSequence.append(obs)
    return ds


def square(z: float, half: float = 30.0, cx: float = 0.0, cy: float = 0.0) -> list[float]:
    """A closed square contour (x, y, z flat) in the plane z."""
    pts = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half),
           (cx - half, cy + half)]
    return [v for x, y in pts for v in (x, y, z)]


def planned_series(real: list[Dataset], before: int, total: int) -> list[tuple[str, float]]:
    """``total`` slices 5 mm apart around the real ones: real SOP UIDs where a real slice lies."""
    z0 = float(real[0].ImagePositionPatient[2])
    step = float(real[1].ImagePositionPatient[2]) - z0 if len(real) > 1 else 5.0
    by_z = {round(float(d.ImagePositionPatient[2]), 3): str(d.SOPInstanceUID) for d in real}
    out = []
    for j in range(total):
        z = round(z0 + step * (j - before), 3)
        out.append((by_z.get(z) or generate_uid(), z))
    return out
