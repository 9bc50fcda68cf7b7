"""Medical Segmentation Decathlon / nnU-Net (v1 and v2) dataset folders (``msd``).

Layout::

    root/dataset.json
    root/imagesTr/<case>.nii.gz          (MSD; may be 4D with one channel per modality)
    root/imagesTr/<case>_0000.nii.gz     (nnU-Net: one file per channel)
    root/labelsTr/<case>.nii.gz

``dataset.json`` comes in two dialects, both understood:

* MSD / nnU-Net v1: ``"labels": {"0": "background", "1": "spleen"}``, ``"modality": {"0": "CT"}``
  and ``"training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}]``
  (nnU-Net v1 lists ``x.nii.gz`` while the file on disk is ``x_0000.nii.gz``: both are found);
* nnU-Net v2: ``"labels": {"background": 0, "spleen": 1}`` (a region may list several values,
  ``"whole tumor": [1, 2, 3]``), ``"channel_names": {"0": "CT"}``, ``"file_ending": ".nii.gz"``;
  cases are the files of ``labelsTr``.

Raw labels are the label NAMES of dataset.json (the source's label map maps ``spleen`` to its
canonical label); background is dropped. The volume is CT (windowed) when the chosen channel's
modality is CT, otherwise MR (percentile clipped). The group (VAL/TEST split unit) is the case
id; ``patient_key`` in sources.yaml can derive it otherwise. Images and labels must share one
voxel grid (an error names both files otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..samples import Sample
from ..volume_io import VOLUME_SUFFIXES, read_image_and_labels, strip_volume_suffix, volume_suffix
from .base import Converter, Item, register


class MsdOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_json: str = Field(default="dataset.json", description="relative to the root")
    channel: int = Field(default=0, ge=0, description="image channel (modality) to show")
    images_dir: str = Field(default="imagesTr", description="image folder (nnU-Net v2 layouts)")
    labels_dir: str = Field(default="labelsTr", description="label folder (nnU-Net v2 layouts)")


def parse_labels(labels: Any) -> tuple[dict[int, str], dict[str, list[int]]]:
    """dataset.json ``labels`` -> ({value: name} for plain labels, {name: values} for regions).

    Background (value 0, or a label named "background") is dropped.
    """
    if not isinstance(labels, dict) or not labels:
        raise ValueError("'labels' must be a non-empty mapping")
    plain: dict[int, str] = {}
    regions: dict[str, list[int]] = {}
    if all(str(k).strip().lstrip("-").isdigit() for k in labels):  # MSD: {"1": "spleen"}
        for k, name in labels.items():
            if int(k) != 0:
                plain[int(k)] = str(name)
    else:  # nnU-Net v2: {"spleen": 1} or {"whole tumor": [1, 2, 3]}
        for name, value in labels.items():
            if str(name).lower() == "background":
                continue
            if isinstance(value, list | tuple):
                values = [int(v) for v in value]
                if len(values) == 1:
                    plain[values[0]] = str(name)
                else:
                    regions[str(name)] = values
            else:
                plain[int(value)] = str(name)
    plain.pop(0, None)
    return plain, regions


@register
class Msd(Converter):
    """MSD / nnU-Net folder: dataset.json + imagesTr + labelsTr."""

    format = "msd"
    Options = MsdOptions

    def _dataset(self) -> dict[str, Any]:
        opts: MsdOptions = self.options  # type: ignore[assignment]
        path = self.path(opts.dataset_json)
        if not path.is_file():
            raise self.error(
                f"no {opts.dataset_json} found: an MSD / nnU-Net dataset folder has dataset.json "
                f"beside {opts.images_dir}/ and {opts.labels_dir}/ (is 'root' the dataset folder?)",
                path,
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise self.error(f"cannot read dataset.json: {exc}", path) from None
        if not isinstance(data, dict) or "labels" not in data:
            raise self.error("dataset.json has no 'labels' mapping", path)
        return data

    def _is_ct(self, data: dict[str, Any]) -> bool:
        opts: MsdOptions = self.options  # type: ignore[assignment]
        modalities = data.get("channel_names") or data.get("modality") or {}
        if not isinstance(modalities, dict):
            return False
        name = modalities.get(str(opts.channel), modalities.get(opts.channel, ""))
        return str(name).strip().upper() == "CT"

    def _image_for(self, listed: str, suffix: str) -> str:
        """MSD lists the image file itself; nnU-Net v1 lists ``x.nii.gz`` for ``x_0000.nii.gz``."""
        opts: MsdOptions = self.options  # type: ignore[assignment]
        rel = listed[2:] if listed.startswith("./") else listed
        if (self.root / rel).is_file():
            return rel
        parent = Path(rel).parent.as_posix()
        candidate = f"{parent}/{strip_volume_suffix(Path(rel).name)}_{opts.channel:04d}{suffix}"
        return candidate if (self.root / candidate).is_file() else rel

    def discover(self) -> Iterator[Item]:
        opts: MsdOptions = self.options  # type: ignore[assignment]
        data = self._dataset()
        json_path = self.root / opts.dataset_json
        try:
            parse_labels(data["labels"])
        except (ValueError, TypeError) as exc:
            raise self.error(f"dataset.json 'labels': {exc}", json_path) from None
        pairs: list[tuple[str, str]] = []
        training = data.get("training")
        if isinstance(training, list) and training:
            for n, entry in enumerate(training):
                if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                    self.bad_item(f"dataset.json training[{n}] needs 'image' and 'label'", json_path)
                    continue
                label = str(entry["label"])
                label = label[2:] if label.startswith("./") else label
                suffix = volume_suffix(label) or ".nii.gz"
                pairs.append((self._image_for(str(entry["image"]), suffix), label))
        else:  # nnU-Net v2: cases are the label files
            ending = str(data.get("file_ending", ".nii.gz"))
            labels_dir = self.root / opts.labels_dir
            if not labels_dir.is_dir():
                raise self.error(f"no '{opts.labels_dir}' folder and no 'training' list in "
                                 "dataset.json", self.root)
            for label_path in sorted(labels_dir.glob(f"*{ending}")):
                case = label_path.name[: -len(ending)]
                image = f"{opts.images_dir}/{case}_{opts.channel:04d}{ending}"
                pairs.append((image, self.relative(label_path)))
        for image, label in sorted(pairs):
            if volume_suffix(image) is None:
                self.bad_item(f"not a volume file (expected {', '.join(VOLUME_SUFFIXES)})",
                              self.root / image)
                continue
            case = strip_volume_suffix(Path(label).name)
            yield Item(key=image, paths=(image, label), group=case, data={"case": case})

    def declared_labels(self, item: Item) -> tuple[str, ...]:
        """The label names of dataset.json (background excluded)."""
        plain, regions = parse_labels(self._dataset()["labels"])
        return tuple(dict.fromkeys([*plain.values(), *regions]))

    def load(self, item: Item) -> Iterator[Sample]:
        opts: MsdOptions = self.options  # type: ignore[assignment]
        data = self._dataset()
        plain, regions = parse_labels(data["labels"])
        image_rel, label_rel = item.paths
        image_path, label_path = self.path(image_rel), self.path(label_rel)
        if not image_path.is_file():
            raise self.error("image file listed in dataset.json does not exist", image_path)
        if not label_path.is_file():
            raise self.error(f"label file for image {image_rel} does not exist", label_path)
        volume, labels = read_image_and_labels(image_path, label_path, opts.channel, self.source,
                                               self.max_pixels, self.max_voxels)
        target_masks = None
        if regions:  # overlapping regions (nnU-Net v2 region-based training): one mask each
            lm = np.asanyarray(labels.array)
            groups = {**{name: [v] for v, name in plain.items()}, **regions}
            target_masks = {name: np.isin(lm, values) for name, values in groups.items()}
        yield Sample(
            source=self.source,
            sample_id=item.key,
            files=item.paths,
            group=item.group or item.key,
            volume=volume,
            label_mask=None if regions else labels.array,
            mask_labels=plain,
            target_masks=target_masks,
            intensity="ct" if self._is_ct(data) else "mr",
        )
