"""Folder-per-class layout: ``root/<class name>/**/<image>`` (PNG, JPEG, BMP, TIFF).

The folder name is the raw label (mapped by the source's label map). This is the ImageFolder
layout of torchvision and of most Kaggle classification sets. With ``class_from: parent`` the
image's own folder is the class, for layouts such as ``root/train/NORMAL/x.jpeg``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..image2d import IMAGE_SUFFIXES
from ..samples import Sample
from .base import Converter, Item, register


class FolderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extensions: list[str] | None = Field(default=None, description="default: png, jpg, jpeg, bmp, tif, tiff")
    recursive: bool = Field(default=True, description="also take images in sub-folders of a class folder")
    class_from: Literal["top", "parent"] = Field(
        default="top", description="first folder under root, or the image's folder")


@register
class FolderPerClass(Converter):
    format = "folder_per_class"
    Options = FolderOptions

    def discover(self) -> Iterator[Item]:
        opts: FolderOptions = self.options  # type: ignore[assignment]
        suffixes = (
            {"." + e.lower().lstrip(".") for e in opts.extensions} if opts.extensions else IMAGE_SUFFIXES
        )
        if opts.class_from == "parent":
            files = sorted(self.root.rglob("*"))
            for path in files:
                if self._is_image(path, suffixes) and path.parent != self.root:
                    rel = self.relative(path)
                    yield Item(key=rel, paths=(rel,), labels=(path.parent.name,))
            return
        class_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise self.error("no class folders found (expected root/<class>/<images>)", self.root)
        for class_dir in class_dirs:
            files = class_dir.rglob("*") if opts.recursive else class_dir.glob("*")
            for path in sorted(files):
                if self._is_image(path, suffixes):
                    rel = self.relative(path)
                    yield Item(key=rel, paths=(rel,), labels=(class_dir.name,))

    @staticmethod
    def _is_image(path, suffixes: set[str]) -> bool:
        return path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith(".")

    def load(self, item: Item) -> Iterator[Sample]:
        yield self.image_level_sample(item, self.path(item.paths[0]))
