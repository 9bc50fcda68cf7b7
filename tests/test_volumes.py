"""3D volumes on synthetic phantoms: orientation, square pixels, NIfTI == NRRD, slice choice,
converter layouts (MSD, nnU-Net v2, BIDS-style globs) and their errors.

The phantom is asymmetric on purpose: a marker on the patient's RIGHT and ANTERIOR side must be
shown at the image's LEFT and TOP (radiological convention) whatever the file's axis order.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from gmai_build.config import SourceConfig
from gmai_build.converters import get_converter
from gmai_build.errors import BuildError
from gmai_build.samples import Sample
from gmai_build.volume_io import check_same_grid, read_volume
from gmai_build.volumes import choose_slices, display_slice, even_indices, slices_from_volume

SHAPE = (40, 30, 10)  # voxels along the file's axes i, j, k
ZOOMS = (0.5, 1.0, 3.0)  # mm: anisotropic in-plane and through-plane


def source(fmt: str = "msd", root: Path = Path("."), **kw) -> SourceConfig:
    return SourceConfig(name="phantom", format=fmt, root=root, modality="MRI", label_map="x",
                        license="CC0", citation="synthetic", **kw)


def phantom(path: Path, label_path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An LAS NIfTI (i -> patient Left, j -> Anterior) with a marker at right-anterior.

    In LAS, patient RIGHT is low i and ANTERIOR is high j. The marker is largest on slice 5.
    Returns (data, label).
    """
    affine = np.diag([-ZOOMS[0], ZOOMS[1], ZOOMS[2], 1.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    data = np.full(SHAPE, 100, np.int16)
    data[:, :, :] += np.arange(SHAPE[2], dtype=np.int16)[None, None, :]  # z ramp: slice identity
    label = np.zeros(SHAPE, np.uint8)
    data[2:10, 20:28, 3:7] = 900  # right (low i) and anterior (high j)
    data[2:12, 18:28, 5] = 900
    label[data == 900] = 1
    nib.save(nib.Nifti1Image(data, affine), str(path))
    if label_path is not None:
        nib.save(nib.Nifti1Image(label, affine), str(label_path))
    assert nib.aff2axcodes(affine) == ("L", "A", "S")
    return data, label


def to_nrrd(nifti: Path, nrrd: Path) -> None:
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(nrrd))


def sample_of(image: Path, label: Path | None = None, intensity: str = "mr") -> Sample:
    vol = read_volume(image)
    lm = read_volume(label).array if label is not None else None
    return Sample(source="phantom", sample_id=image.name, files=(image.name,), group="g",
                  volume=vol, label_mask=lm, mask_labels={1: "marker"}, intensity=intensity)


def test_readers_give_lps(tmp_path: Path) -> None:
    data, _ = phantom(tmp_path / "p.nii.gz")
    to_nrrd(tmp_path / "p.nii.gz", tmp_path / "p.nrrd")
    vol = read_volume(tmp_path / "p.nii.gz")
    nrrd = read_volume(tmp_path / "p.nrrd")
    for v in (vol, nrrd):
        assert v.array.shape == SHAPE and v.array.dtype == np.int16
        assert v.spacing == pytest.approx(ZOOMS)
        # LAS file: i already runs to the patient's Left; j runs Anterior, so it flips to P.
        assert np.array_equal(v.array, data[:, ::-1, :])
    assert np.allclose(vol.affine, nrrd.affine, atol=1e-4)
    # LPS affine: +x index moves to the left (+x mm), +y index moves posterior (+y mm)
    step = vol.affine @ np.array([1, 1, 1, 1.0]) - vol.affine @ np.array([0, 0, 0, 1.0])
    assert step[:3] == pytest.approx(ZOOMS)


def test_phantom_axial_radiological_square_pixels(tmp_path: Path) -> None:
    phantom(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz")
    slices = slices_from_volume(sample_of(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz"), source())
    assert len(slices) == 1
    s = slices[0]
    assert s.axis == "axial" and s.slice_index == 5 and s.sample_id == "p.nii.gz#axial5"
    assert s.original_task == "SEG_3D"
    # square pixels: 40 x 0.5 mm wide, 30 x 1.0 mm high -> 40 x 60 pixels of 0.5 mm
    assert s.rgb.shape == (60, 40, 3)
    assert s.extra["scale"] == [2.0, 1.0]
    mask = s.target_masks["marker"]
    ys, xs = np.nonzero(mask)
    assert xs.max() < 20 and ys.max() < 30  # patient right -> image left; anterior -> top
    assert (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (10, 20)  # 5 mm x 10 mm
    # overlay grid == image grid: linear-interpolated edges split at the mid grey level
    grey = s.rgb[:, :, 0].astype(int)
    bright = grey > (grey.max() + grey[-1, -1]) / 2
    assert np.array_equal(bright, mask)


def test_nifti_and_nrrd_render_identically(tmp_path: Path) -> None:
    phantom(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz")
    to_nrrd(tmp_path / "p.nii.gz", tmp_path / "p.nrrd")
    to_nrrd(tmp_path / "l.nii.gz", tmp_path / "l.nrrd")
    for axis in ("axial", "coronal", "sagittal"):
        src = source(slicing={"axis": axis})
        a = slices_from_volume(sample_of(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz"), src)
        b = slices_from_volume(sample_of(tmp_path / "p.nrrd", tmp_path / "l.nrrd"), src)
        assert [s.slice_index for s in a] == [s.slice_index for s in b]
        for sa, sb in zip(a, b):
            assert sa.rgb.tobytes() == sb.rgb.tobytes()
            assert np.array_equal(sa.target_masks["marker"], sb.target_masks["marker"])


def test_coronal_sagittal_orientation(tmp_path: Path) -> None:
    phantom(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz")
    smp = sample_of(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz")
    cor = slices_from_volume(smp, source(slicing={"axis": "coronal"}))[0]
    # coronal: 40 x 0.5 mm wide, 10 x 3 mm high -> 40 x 60; marker right (left side), z 3..6
    assert cor.rgb.shape == (60, 40, 3)
    ys, xs = np.nonzero(cor.target_masks["marker"])
    assert xs.max() < 20
    # z 3..6 of 10 slices, superior at the top: rows (10-7)*6 .. (10-3)*6
    assert ys.min() == 18 and ys.max() == 41
    sag = slices_from_volume(smp, source(slicing={"axis": "sagittal"}))[0]
    assert sag.rgb.shape == (30, 30, 3)  # 30 x 1 mm wide, 10 x 3 mm high at 1 mm pixels
    ys, xs = np.nonzero(sag.target_masks["marker"])
    assert xs.max() < 15  # anterior -> image left


def test_window_and_percentiles(tmp_path: Path) -> None:
    data, _ = phantom(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz")
    smp = sample_of(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz", intensity="ct")
    s = slices_from_volume(smp, source(intensity={"window": {"width": 1000, "level": 500}}))[0]
    assert s.extra["window"] == [1000, 500]
    assert s.rgb[0, 0, 0] == round((105 - 0) / 1000 * 255)  # background of slice 5: 100 + 5
    smp = sample_of(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz", intensity="mr")
    s = slices_from_volume(smp, source())[0]
    lo, hi = np.percentile(data[data != 0], [0.5, 99.5])
    assert s.extra["percentile_range"] == pytest.approx([lo, hi])


def test_slice_choice() -> None:
    areas = np.array([0, 20, 50, 50, 10, 30, 40])
    assert choose_slices(areas, 16, 1, "largest") == [2]  # tie -> lower index
    assert choose_slices(areas, 16, 2, "largest") == [2, 3]
    assert choose_slices(areas, 16, 3, "even") == [1, 3, 6]
    assert choose_slices(areas, 100, 1, "largest") == []
    # A minimum gap: the next largest slice far enough from those chosen, never a neighbour.
    assert choose_slices(areas, 16, 2, "largest", min_gap=2) == [2, 6]
    assert choose_slices(areas, 16, 3, "largest", min_gap=3) == [2, 6]  # no third fits
    assert even_indices(list(range(25)), 1) == [12]


def test_per_label_slices_and_image_level_labels(tmp_path: Path) -> None:
    phantom(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz")
    smp = sample_of(tmp_path / "p.nii.gz", tmp_path / "l.nii.gz")
    spread = {"per_label": 3, "strategy": "even", "min_gap_mm": 0, "min_gap_slices": 1}
    out = slices_from_volume(smp, source(slicing=spread))
    assert [s.slice_index for s in out] == [3, 5, 6]
    # Default spacing rule: at least 10 mm (here 4 slices of 3 mm) between a label's slices.
    spaced = slices_from_volume(smp, source(slicing={"per_label": 3, "strategy": "even"}))
    picked = [s.slice_index for s in spaced]
    assert picked and all(b - a >= 4 for a, b in zip(picked, picked[1:]))
    assert len({s.sample_id for s in out}) == 3
    no_mask = sample_of(tmp_path / "p.nii.gz")
    no_mask.labels = ("normal",)
    out = slices_from_volume(no_mask, source())
    assert [(s.slice_index, s.labels, s.original_task) for s in out] == [(5, ("normal",), "CLS_2D")]
    no_mask.labels = ()
    assert slices_from_volume(no_mask, source()) == []


def test_display_slice_table() -> None:
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert display_slice(a, "axial", 1).shape == (3, 2)
    assert display_slice(a, "coronal", 1)[0, 0] == a[0, 1, 3]  # top-left: right, superior
    assert display_slice(a, "sagittal", 1)[0, 0] == a[1, 0, 3]  # top-left: anterior, superior


# Converters ------------------------------------------------------------------------------
def msd_folder(root: Path, v2: bool = False) -> None:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    image = "imagesTr/case1_0000.nii.gz" if v2 else "imagesTr/case1.nii.gz"
    phantom(root / image, root / "labelsTr/case1.nii.gz")
    if v2:
        meta = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "marker": 1},
                "numTraining": 1, "file_ending": ".nii.gz"}
    else:
        meta = {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "marker"},
                "training": [{"image": "./imagesTr/case1.nii.gz", "label": "./labelsTr/case1.nii.gz"}]}
    (root / "dataset.json").write_text(json.dumps(meta))


def converter(fmt: str, root: Path, **options):
    cls = get_converter(fmt)
    return cls("phantom", root, cls.Options.model_validate(options))


@pytest.mark.parametrize("v2", [False, True])
def test_msd_layouts(tmp_path: Path, v2: bool) -> None:
    msd_folder(tmp_path, v2)
    conv = converter("msd", tmp_path)
    items = list(conv.discover())
    assert len(items) == 1 and items[0].group == "case1"
    (smp,) = conv.load(items[0])
    assert smp.mask_labels == {1: "marker"}
    assert smp.intensity == ("mr" if v2 else "ct")
    slices = slices_from_volume(smp, source())
    assert list(slices[0].target_masks) == ["marker"]


def test_msd_missing_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="dataset.json"):
        list(converter("msd", tmp_path).discover())


def test_msd_missing_label_file(tmp_path: Path) -> None:
    msd_folder(tmp_path)
    (tmp_path / "labelsTr/case1.nii.gz").unlink()
    conv = converter("msd", tmp_path)
    with pytest.raises(BuildError, match="label file") as exc:
        list(conv.load(next(iter(conv.discover()))))
    assert "labelsTr/case1.nii.gz" in str(exc.value)


def test_grid_mismatch_names_both_files(tmp_path: Path) -> None:
    msd_folder(tmp_path)
    label = tmp_path / "labelsTr/case1.nii.gz"
    img = nib.load(str(label))
    shifted = img.affine.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), shifted), str(label))
    conv = converter("msd", tmp_path)
    with pytest.raises(BuildError, match="not on the same voxel grid") as exc:
        list(conv.load(next(iter(conv.discover()))))
    assert "imagesTr/case1.nii.gz" in str(exc.value) and "labelsTr/case1.nii.gz" in str(exc.value)
    # spacing and shape mismatches too
    a = read_volume(tmp_path / "imagesTr/case1.nii.gz")
    b = read_volume(tmp_path / "imagesTr/case1.nii.gz")
    b.spacing = (0.5, 1.0, 3.1)
    with pytest.raises(BuildError, match="spacing"):
        check_same_grid(a, b, "img.nii", "seg.nii")
    b.array = b.array[:, :, :5]
    with pytest.raises(BuildError, match="shape.*img.nii|img.nii.*shape"):
        check_same_grid(a, b, "img.nii", "seg.nii")


def test_image_label_glob_bids(tmp_path: Path) -> None:
    for sub in ("sub-01", "sub-02"):
        anat = tmp_path / sub / "anat"
        seg = tmp_path / "derivatives/labels" / sub / "anat"
        anat.mkdir(parents=True)
        seg.mkdir(parents=True)
        phantom(anat / f"{sub}_T2w.nii.gz", seg / f"{sub}_T2w_seg.nii.gz")
    conv = converter(
        "image_label_glob", tmp_path, image_glob="sub-*/anat/*_T2w.nii.gz",
        image_regex=r"(?P<subject>sub-[^/_]+)",
        label_pattern="derivatives/labels/{subject}/anat/{stem}_seg.nii.gz",
        mask_labels={1: "marker"},
    )
    items = list(conv.discover())
    assert [(i.key, i.group) for i in items] == [
        ("sub-01/anat/sub-01_T2w.nii.gz", "sub-01"), ("sub-02/anat/sub-02_T2w.nii.gz", "sub-02")]
    (smp,) = conv.load(items[0])
    assert smp.intensity == "mr" and smp.mask_labels == {1: "marker"}
    with pytest.raises(ValueError, match="unknown placeholder"):
        get_converter("image_label_glob").Options.model_validate(
            {"image_glob": "*.nii.gz", "label_pattern": "{subjet}_seg.nii.gz"})
    (tmp_path / "derivatives/labels/sub-02/anat/sub-02_T2w_seg.nii.gz").unlink()
    with pytest.raises(BuildError, match="label volume for image sub-02"):
        list(conv.discover())


@pytest.mark.parametrize("layout", ["C", "F", "flipped", "bool"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_areas_of_byte_volumes_equal_the_general_count(layout: str, axis: int) -> None:
    """uint8 label volumes are counted with a per-slice histogram: the same areas as counting
    the values of a wider integer copy, whatever the memory layout of the volume."""
    from gmai_build.volumes import _slice_areas

    rng = np.random.default_rng(axis)
    lm = (rng.integers(0, 5, (33, 28, 21)) * (rng.random((33, 28, 21)) < 0.3)).astype(np.uint8)
    if layout == "bool":
        lm = lm > 2
    elif layout == "F":
        lm = np.asfortranarray(lm)
    elif layout == "flipped":
        lm = np.asfortranarray(lm)[::-1, :, ::-1]
    values, areas = _slice_areas(lm, axis)
    wide_values, wide_areas = _slice_areas(lm.astype(np.int32), axis)
    assert values.tolist() == wide_values.tolist()
    assert np.array_equal(areas, wide_areas)
    for j, v in enumerate(values):
        expect = np.count_nonzero(lm == v, axis=tuple(a for a in range(3) if a != axis))
        assert np.array_equal(areas[:, j], expect)
