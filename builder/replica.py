"""A tiny synthetic replica of a dataset card's documented layout (``gmai-build datasets NAME
--replica DIR``, and the card tests).

The replica has the files the card's ``layout`` names (``{case}`` and ``{label}`` filled in), in
the format the card's converter reads, with every raw label of the card's label map present: a
class folder per label, a table row per label, a mask value or box per label. Pixels are seeded
noise with one block per mask label, so a replica builds into questions; it checks that the
card's layout, format options and labels agree, not what the real images look like.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .cards import Card, LayoutEntry
from .errors import ConfigError

CASES_PER_LABEL = 2


def _entry(card: Card, *roles: str) -> LayoutEntry:
    for entry in card.info.layout:
        if entry.role in roles:
            return entry
    raise ConfigError(f"{card.path}: layout: no entry with role {' or '.join(roles)} "
                      f"(needed for a {card.settings.get('format')} replica)")


def _fill(template: str, case: str, label: str = "x") -> str:
    return template.replace("{case}", case).replace("{label}", label).replace("*", "x")


def _raw_labels(card: Card) -> list[str]:
    return [str(k) for k in (card.info.labels or {})]


def _noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(30, 220, size=shape, dtype=np.uint8)


def _save_2d(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


# A block is large enough to be asked about (targets.min_area 64 px, min_extent 4 px).
BLOCK, CELL = 12, 14


def _grid(n: int) -> tuple[int, list[tuple[int, int]]]:
    """Side of a square slice holding n BLOCKxBLOCK blocks, and each block's top-left corner."""
    per_row = max(1, math.ceil(math.sqrt(n)))
    side = max(16, per_row * CELL)
    return side, [(1 + (i // per_row) * CELL, 1 + (i % per_row) * CELL) for i in range(n)]


def _mask_2d(values: list[int], shape: tuple[int, int]) -> np.ndarray:
    _, corners = _grid(len(values))
    mask = np.zeros(shape, dtype=np.uint8)
    for value, (r, c) in zip(values, corners):
        mask[r:r + BLOCK, c:c + BLOCK] = value
    return mask


def _mask_values(card: Card) -> dict[int, str]:
    """Mask value -> raw label for value-coded masks (mask_labels, else the raw label's number)."""
    given = (card.settings.get("options") or {}).get("mask_labels")
    if given:
        return {int(k): str(v) for k, v in given.items()}
    return {int(raw): raw for raw in _raw_labels(card) if raw.isdigit() and int(raw) > 0}


def write_replica(card: Card, root: Path) -> Path:
    """Write the card's replica under ``root`` (created); returns root."""
    fmt = card.settings.get("format")
    writer = _WRITERS.get(str(fmt))
    if writer is None or not card.info.supported:
        raise ConfigError(f"{card.path}: no replica for format '{fmt}'"
                          + ("" if card.info.supported else " (the card is unsupported)"))
    root.mkdir(parents=True, exist_ok=True)
    writer(card, root)
    return root


def _shape(entry: LayoutEntry, default: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(entry.shape) if entry.shape else default


def _folder_per_class(card: Card, root: Path) -> None:
    entry = _entry(card, "image")
    shape = _shape(entry, (32, 32, 3))
    for i, raw in enumerate(_raw_labels(card)):
        for k in range(CASES_PER_LABEL):
            _save_2d(root / _fill(entry.path, f"{i:03d}{k}", raw), _noise(shape, 10 * i + k))


def _csv_table(card: Card, root: Path) -> None:
    opts: dict[str, Any] = card.settings["options"]
    entry = _entry(card, "image")
    shape = _shape(entry, (32, 32, 3))
    image_root = root / (opts.get("image_root") or ".")
    rows = []
    for i, raw in enumerate(_raw_labels(card)):
        for k in range(CASES_PER_LABEL):
            case = f"{i:03d}{k}"
            path = root / _fill(entry.path, case, raw)
            _save_2d(path, _noise(shape, 10 * i + k))
            cell = path.relative_to(image_root).as_posix()
            suffix = opts.get("image_suffix") or ""
            row = {opts["image_column"]: cell[:len(cell) - len(suffix)] if suffix else cell}
            if opts.get("label_columns"):
                row.update({col: "1" if col == raw else "0" for col in opts["label_columns"]})
            else:
                row[opts["label_column"]] = raw
            if opts.get("patient_column"):
                row[opts["patient_column"]] = f"p{case}"
            rows.append(row)
    import pandas as pd

    table = root / opts["table"]
    table.parent.mkdir(parents=True, exist_ok=True)
    sep = opts.get("separator") or ("\t" if table.suffix == ".tsv" else ",")
    pd.DataFrame(rows).to_csv(table, sep=sep, index=False)


def _medmnist(card: Card, root: Path) -> None:
    entry = _entry(card, "arrays")
    shape = _shape(entry, (28, 28))
    labels = [int(raw) for raw in _raw_labels(card)]
    multi = bool((card.settings.get("options") or {}).get("multi_label"))
    arrays: dict[str, np.ndarray] = {}
    for s, split in enumerate(("train", "val", "test")):
        images, targets = [], []
        for value in labels:
            for k in range(CASES_PER_LABEL):
                images.append(_noise(shape, 100 * s + 10 * value + k))
                if multi:
                    row = np.zeros(len(labels), dtype=np.uint8)
                    row[value] = 1
                    targets.append(row)
                else:
                    targets.append(np.array([value], dtype=np.uint8))
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = np.stack(targets)
    path = root / _fill(entry.path, "0")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def _volume_pair(card: Card, values: list[int], seed: int, image_shape: tuple[int, ...]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Image (x, y, z[, c]) and mask (x, y, z): one block per label value through z."""
    side, _ = _grid(len(values))
    depth = image_shape[-3] if len(image_shape) >= 3 else 8
    channels = image_shape[0] if len(image_shape) == 4 else 0
    mask2d = _mask_2d(values, (side, side))
    mask = np.repeat(mask2d[:, :, None], depth, axis=2)
    ct = (card.settings.get("intensity") or {}).get("window") is not None or \
        (card.settings.get("options") or {}).get("intensity") == "ct"
    rng = np.random.default_rng(seed)
    base = rng.normal(-900 if ct else 100, 20, size=mask.shape)
    image = np.where(mask > 0, base + (1000 if ct else 300) + 40 * mask, base).astype(np.int16)
    if channels:
        image = np.stack([image + 10 * c for c in range(channels)], axis=-1).astype(np.int16)
    return image, mask


def _save_volume(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    else:  # NRRD, MHA: SimpleITK wants (z, y, x)
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0))),
                        str(path))


def _msd(card: Card, root: Path) -> None:
    opts: dict[str, Any] = card.settings.get("options") or {}  # the layout names the folders
    raw = [r for r in _raw_labels(card) if r != "background"]
    values = list(range(1, len(raw) + 1))
    entry, mask_entry = _entry(card, "image"), _entry(card, "mask")
    shape = _shape(entry, (8, 16, 16))
    training = []
    for k in range(CASES_PER_LABEL):
        image, mask = _volume_pair(card, values, k, shape)
        img, lab = Path(_fill(entry.path, f"{k:04d}")), Path(_fill(mask_entry.path, f"{k:04d}"))
        _save_volume(root / img, image)
        _save_volume(root / lab, mask.astype(np.uint8))
        training.append({"image": f"./{img.as_posix()}", "label": f"./{lab.as_posix()}"})
    channels = shape[0] if len(shape) == 4 else 1
    dataset = {"name": card.name, "modality": {str(c): card.settings["modality"]
                                               for c in range(channels)},
               "labels": {"0": "background", **{str(v): r for v, r in zip(values, raw)}},
               "numTraining": len(training), "training": training, "test": []}
    (root / opts.get("dataset_json", "dataset.json")).write_text(json.dumps(dataset, indent=1))
    test = next((e for e in card.info.layout if e.role == "other" and "imagesTs" in e.path), None)
    if test is not None:
        _save_volume(root / _fill(test.path, "0900"), _volume_pair(card, values, 9, shape)[0])


def _image_label_glob(card: Card, root: Path) -> None:
    image_entry, mask_entry = _entry(card, "image"), _entry(card, "mask")
    by_value = _mask_values(card)
    shape = _shape(image_entry, (8, 16, 16))
    for k in range(CASES_PER_LABEL):
        case = f"{k + 1:05d}"
        image, mask = _volume_pair(card, sorted(by_value), k, shape)
        _save_volume(root / _fill(image_entry.path, case), image)
        _save_volume(root / _fill(mask_entry.path, case), mask.astype(np.uint8))


def _mask_pairs(card: Card, root: Path) -> None:
    opts: dict[str, Any] = card.settings["options"]
    image_entry, mask_entry = _entry(card, "image"), _entry(card, "mask")
    by_value = _mask_values(card)
    values = sorted(by_value)
    side, _ = _grid(len(values))
    shape = _shape(image_entry, (side, side, 3))
    shape = (max(shape[0], side), max(shape[1], side), *shape[2:])
    for k in range(CASES_PER_LABEL):
        case = f"{k + 1:04d}"
        mask = _mask_2d(values, shape[:2])
        if opts.get("threshold") is not None:  # binary masks saved as 0 / 255
            mask = np.where(mask > 0, 255, 0).astype(np.uint8)
        _save_2d(root / _fill(image_entry.path, case), _noise(shape, k))
        mask_path = root / _fill(mask_entry.path, case)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        if mask_path.suffix.lower() in (".jpg", ".jpeg"):
            Image.fromarray(mask).save(mask_path, quality=100)
        else:
            Image.fromarray(mask).save(mask_path)


def _voc(card: Card, root: Path) -> None:
    ann_entry, image_entry = _entry(card, "annotation"), _entry(card, "image")
    raw = _raw_labels(card)
    shape = _shape(image_entry, (48, 64, 3))
    shape = (shape[0], max(shape[1], CELL * len(raw) + 4), *shape[2:])
    for k in range(CASES_PER_LABEL):
        case = f"{k:03d}"
        image_path = root / _fill(image_entry.path, case)
        _save_2d(image_path, _noise(shape, k))
        objects = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{2 + CELL * i}</xmin>"
            f"<ymin>2</ymin><xmax>{2 + CELL * i + BLOCK}</xmax><ymax>{shape[0] - 2}</ymax></bndbox></object>"
            for i, name in enumerate(raw))
        xml = (f"<annotation><filename>{image_path.name}</filename><size><width>{shape[1]}</width>"
               f"<height>{shape[0]}</height><depth>3</depth></size>{objects}</annotation>")
        ann = root / _fill(ann_entry.path, case)
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(xml)


_WRITERS = {
    "folder_per_class": _folder_per_class,
    "csv_table": _csv_table,
    "medmnist": _medmnist,
    "msd": _msd,
    "image_label_glob": _image_label_glob,
    "mask_pairs": _mask_pairs,
    "voc": _voc,
}


def replica_formats() -> list[str]:
    return sorted(_WRITERS)
