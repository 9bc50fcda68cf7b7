"""MedMNIST ``.npz`` files: ``{train,val,test}_images`` and ``{train,val,test}_labels``.

2D sets (N x H x W or N x H x W x 3) become image-level samples; 3D sets (N x D x H x W, e.g.
OrganMNIST3D) become volumes whose representative slice(s) the volume slicer takes (axis and
count from the source's ``slicing``; MedMNIST 3D arrays carry no geometry, so they are treated
as isotropic 1 mm with their [D, H, W] axes read as [z, y, x]). The label array is N x 1 for
multi-class sets and N x K (0/1) for multi-label sets (ChestMNIST), where the raw labels are the
indices of the positive columns. MedMNIST has no patient ids: each image is its own group.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..samples import Sample, Volume
from .base import Converter, Item, register

SPLITS = ("train", "val", "test")


class MedMnistOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str | None = Field(
        default=None, description="the .npz inside root (default: the only .npz there, or root itself)")
    splits: list[str] = Field(default=list(SPLITS), description="which of the npz's splits to use")
    multi_label: bool | None = Field(
        default=None, description="default: inferred from the label array's width")


@lru_cache(maxsize=4)
def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes from the .npy headers inside an .npz, without decompressing the arrays."""
    shapes = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            with z.open(name) as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, _ = read(f)
            shapes[name.removesuffix(".npy")] = tuple(int(n) for n in shape)
    return shapes


@register
class MedMnist(Converter):
    format = "medmnist"
    Options = MedMnistOptions

    def _file(self) -> Path:
        opts: MedMnistOptions = self.options  # type: ignore[assignment]
        if opts.file:
            return self.path(opts.file)
        if self.root.is_file():
            return self.root
        found = sorted(self.root.glob("*.npz"))
        if len(found) != 1:
            raise self.error(
                f"expected exactly one .npz in the root, found {len(found)}; set options.file",
                self.root,
            )
        return found[0]

    def _arrays(self) -> dict[str, np.ndarray]:
        path = self._file()
        try:
            for name, shape in npz_shapes(path).items():  # the budget, before decompressing
                if name.endswith("_images") and len(shape) >= 3:
                    dims = shape[1:3] if len(shape) == 3 or shape[-1] in (3, 4) else shape[2:4]
                    if int(np.prod(dims, dtype=object)) > self.max_pixels:
                        raise self.error(f"'{name}' images of {dims[1]}x{dims[0]} pixels exceed "
                                         f"the pixel budget of {self.max_pixels:,} "
                                         "(build.max_pixels)", path)
            return _load_npz(str(path))
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise self.error(f"cannot read MedMNIST npz: {exc}", path) from None

    def discover(self) -> Iterator[Item]:
        opts: MedMnistOptions = self.options  # type: ignore[assignment]
        arrays = self._arrays()
        path = self._file()
        rel = path.name if path == self.root else self.relative(path)
        for split in opts.splits:
            if f"{split}_images" not in arrays or f"{split}_labels" not in arrays:
                raise self.error(f"no '{split}_images'/'{split}_labels' arrays", path)
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if images.ndim not in (3, 4) or len(images) != len(labels):
                raise self.error(
                    f"'{split}' images {images.shape} and labels {labels.shape} do not match", path
                )
            labels = labels.reshape(len(labels), -1)
            multi = opts.multi_label if opts.multi_label is not None else labels.shape[1] > 1
            for i in range(len(images)):
                raw = (
                    tuple(str(j) for j in np.flatnonzero(labels[i]))
                    if multi
                    else (str(int(labels[i, 0])),)
                )
                key = f"{rel}:{split}/{i}"
                yield Item(key=key, paths=(rel,), labels=raw, data={"split": split, "i": i})

    def load(self, item: Item) -> Iterator[Sample]:
        image = np.asarray(self._arrays()[f"{item.data['split']}_images"][item.data["i"]])
        common = dict(source=self.source, sample_id=item.key, files=item.paths,
                      group=item.group or item.key, labels=item.labels or ())
        if image.ndim == 3 and image.shape[-1] not in (3, 4):  # a 3D volume [D, H, W]
            array = np.ascontiguousarray(image.transpose(2, 1, 0))  # -> [x, y, z]
            yield Sample(**common, volume=Volume(array, (1.0, 1.0, 1.0), np.eye(4)))
        else:
            yield Sample(**common, image=image)
