"""Bounding-box detection layouts: Pascal VOC XML (``voc``), COCO JSON (``coco``), YOLO txt (``yolo``).

Every converter turns its source's box convention into the project's one convention: pixel
coordinates of the image, half-open ``[x0, x1) x [y0, y1)`` (see :class:`~gmai_build.samples.Box`),
so the rectangle drawn later lines up with what the annotator drew:

* VOC: 1-based inclusive pixel indices ``xmin..xmax`` -> ``x0 = xmin - 1``, ``x1 = xmax``;
* COCO: ``[x, y, w, h]`` in continuous pixel coordinates -> ``x0 = x``, ``x1 = x + w``;
* YOLO: ``cx cy w h`` normalised to 0-1 -> multiplied by the image's width/height.

Annotation files are parsed at discovery (cheap, and malformed files fail before any pixel is
read); images are read in :meth:`load`, where boxes are checked against the real image size.
A box partly outside the image is clipped (recorded in ``Sample.extra['clipped_boxes']``); a box
with no area left inside the image is an error naming the file. The group (VAL/TEST split unit)
is the image file stem; a source's ``patient_key`` regex overrides it in the pipeline.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..errors import BuildError
from ..image2d import IMAGE_SUFFIXES, image_size
from ..samples import Box, Sample
from .base import Converter, Item, register

# A raw box as stored in Item.data (picklable): (x0, y0, x1, y1, raw label, where).
RawBox = tuple[float, float, float, float, str, str]


def _image_size(image: Any) -> tuple[int, int]:
    """(width, height) of an image array."""
    return int(image.shape[1]), int(image.shape[0])


class _BoxConverter(Converter):
    """Shared load step: read the image, check declared size, clip boxes, build the Sample."""

    def declared_labels(self, item: Item) -> tuple[str, ...]:
        """The box labels, parsed from the annotation file at discovery."""
        return tuple(dict.fromkeys(box[4] for box in item.data["boxes"]))

    def _read(self, rel: str) -> Any:
        return self.read_2d(self.path(rel))

    def _boxes(self, item: Item, width: int, height: int) -> tuple[list[Box], list[dict]]:
        """The item's boxes on a ``width`` x ``height`` image: checked, clipped (subclasses)."""
        raise NotImplementedError

    def load(self, item: Item) -> Iterator[Sample]:
        image = self._read(item.paths[0])
        width, height = _image_size(image)
        boxes, clipped = self._boxes(item, width, height)
        if item.data.get("difficult"):  # VOC skip_difficult: declared, and counted
            self.note(f"{item.data['difficult']} object(s) marked difficult left out "
                      "(skip_difficult)", self.path(item.paths[-1]), item.data["difficult"],
                      kind="skipped")
        yield self._sample(item, image, boxes, clipped)

    def problems_without_pixels(self, item: Item) -> list[str]:
        """Declared sizes and boxes checked against the image size in the image file's header."""
        try:
            width, height = image_size(self.path(item.paths[0]))
            self._boxes(item, width, height)
        except ValueError:
            return []  # an unreadable image is reported by the file check
        except BuildError as exc:
            return [str(exc)]
        return []

    def _clip(self, raw: list[RawBox], width: int, height: int, file: Path) -> tuple[list[Box], list[dict]]:
        """Boxes clipped to the image; boxes with nothing left inside are errors."""
        boxes: list[Box] = []
        clipped: list[dict] = []
        for x0, y0, x1, y1, label, where in raw:
            box = Box(x0, y0, x1, y1, label)
            inside = box.clipped(width, height)
            if inside.area <= 0:
                raise self.error(
                    f"{where}: box '{label}' [{x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the "
                    f"{width}x{height} image (nothing left after clipping)", file)
            if inside != box:
                clipped.append({"where": where, "label": label, "box": [x0, y0, x1, y1],
                                "clipped": [inside.x0, inside.y0, inside.x1, inside.y1]})
            boxes.append(inside)
        return boxes, clipped

    def _sample(self, item: Item, image: Any, boxes: list[Box], clipped: list[dict]) -> Sample:
        extra: dict[str, Any] = {"clipped_boxes": clipped} if clipped else {}
        return Sample(
            source=self.source,
            sample_id=item.key,
            files=item.paths,
            group=item.group or Path(item.key).stem,
            image=image,
            boxes=tuple(boxes),
            extra=extra,
        )


def _degenerate(x0: float, y0: float, x1: float, y1: float) -> bool:
    return not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0


# Pascal VOC ----------------------------------------------------------------------------------
class VocOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    annotations: str = Field(
        default="Annotations", description="folder of *.xml, relative to the source root")
    images: str = Field(default="JPEGImages", description="folder the XML <filename> is relative to")
    skip_difficult: bool = Field(default=False, description="drop objects marked <difficult>1</difficult>")


@register
class Voc(_BoxConverter):
    """Pascal VOC: Annotations/*.xml (<object><name>, <bndbox> 1-based inclusive) + JPEGImages/."""

    format = "voc"
    Options = VocOptions

    def discover(self) -> Iterator[Item]:
        opts: VocOptions = self.options  # type: ignore[assignment]
        ann_dir = self.path(opts.annotations)
        if not ann_dir.is_dir():
            raise self.error(f"annotation folder '{opts.annotations}' not found (options.annotations)",
                             ann_dir)
        xmls = sorted(p for p in ann_dir.rglob("*.xml") if not p.name.startswith("."))
        if not xmls:
            raise self.error("no *.xml annotation files found", ann_dir)
        for xml_path in xmls:
            try:
                self.path(xml_path)
                image_rel, size, boxes, difficult = self._parse(xml_path)
            except BuildError as exc:
                self.bad_item(exc.reason, exc.file)
                continue
            xml_rel = self.relative(xml_path)
            yield Item(key=image_rel, paths=(image_rel, xml_rel), group=Path(image_rel).stem,
                       data={"size": size, "boxes": boxes, "difficult": difficult})

    def _parse(self, xml_path: Path) -> tuple[str, tuple[int, int] | None, list[RawBox], int]:
        """(image path relative to root, declared (w, h) or None, boxes in 0-based half-open,
        number of objects left out by ``skip_difficult``)."""
        opts: VocOptions = self.options  # type: ignore[assignment]
        try:
            root = ET.parse(xml_path).getroot()
        except (ET.ParseError, OSError) as exc:
            raise self.error(f"malformed VOC XML: {exc}", xml_path) from None
        if root.tag != "annotation":
            raise self.error(f"not a VOC annotation (root element <{root.tag}>)", xml_path)
        image_rel = self._image_for(root.findtext("filename"), xml_path)
        size = None
        size_el = root.find("size")
        if size_el is not None:
            try:
                w, h = int(float(size_el.findtext("width", "0"))), int(float(size_el.findtext("height", "0")))
            except ValueError:
                raise self.error("<size> width/height are not numbers", xml_path) from None
            if w > 0 and h > 0:  # some exporters write 0x0 when they did not know: skip the check
                size = (w, h)
        boxes: list[RawBox] = []
        difficult = 0
        for n, obj in enumerate(root.iter("object"), start=1):
            name = (obj.findtext("name") or "").strip()
            where = f"object {n}"
            if not name:
                raise self.error(f"{where}: missing <name>", xml_path)
            if opts.skip_difficult and (obj.findtext("difficult") or "0").strip() == "1":
                difficult += 1
                continue
            bb = obj.find("bndbox")
            if bb is None:
                raise self.error(f"{where} ('{name}'): missing <bndbox>", xml_path)
            try:
                xmin, ymin, xmax, ymax = (float(bb.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError:
                raise self.error(f"{where} ('{name}'): <bndbox> needs numeric xmin/ymin/xmax/ymax",
                                 xml_path) from None
            x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax  # 1-based inclusive -> 0-based [x0, x1)
            if _degenerate(x0, y0, x1, y1):
                raise self.error(f"{where} ('{name}'): degenerate box xmin={xmin:g} ymin={ymin:g} "
                                 f"xmax={xmax:g} ymax={ymax:g}", xml_path)
            boxes.append((x0, y0, x1, y1, name, where))
        return image_rel, size, boxes, difficult

    def _image_for(self, filename: str | None, xml_path: Path) -> str:
        """The image an XML describes: <filename> in the images folder, else <xml stem>.<ext>."""
        opts: VocOptions = self.options  # type: ignore[assignment]
        img_dir = self.root / opts.images
        sub = xml_path.parent.relative_to(self.root / opts.annotations)
        candidates: list[Path] = []
        if filename and filename.strip():
            name = Path(filename.strip()).name
            candidates += [img_dir / sub / name, img_dir / name]
            if not Path(name).suffix:
                candidates += [img_dir / sub / (name + s) for s in sorted(IMAGE_SUFFIXES)]
        candidates += [img_dir / sub / (xml_path.stem + s) for s in (".jpg", ".jpeg", ".png", ".bmp",
                                                                       ".tif", ".tiff", ".JPG", ".PNG")]
        for c in candidates:
            if c.is_file():
                return self.relative(c)
        raise self.error(f"image '{filename}' not found in '{opts.images}' (options.images)", xml_path)

    def _boxes(self, item: Item, width: int, height: int) -> tuple[list[Box], list[dict]]:
        xml_file = self.path(item.paths[1])
        size = item.data.get("size")
        if size is not None and tuple(size) != (width, height):
            raise self.error(
                f"<size> says {size[0]}x{size[1]} but image {item.paths[0]} is {width}x{height}",
                xml_file)
        return self._clip(item.data["boxes"], width, height, xml_file)


# COCO ----------------------------------------------------------------------------------------
class CocoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    annotations: str = Field(description="COCO JSON, relative to the source root (or absolute)")
    images: str | None = Field(
        default=None, description="folder file_name is relative to (default: the JSON's folder)")
    keep_empty: bool = Field(default=False, description="also yield images without (non-crowd) annotations")


@register
class Coco(_BoxConverter):
    """COCO detection JSON: images, annotations (bbox [x, y, w, h]), categories (id -> name)."""

    format = "coco"
    Options = CocoOptions

    def _json_path(self) -> Path:
        return self.path(self.options.annotations)  # type: ignore[attr-defined]

    def _images_dir(self) -> Path:
        opts: CocoOptions = self.options  # type: ignore[assignment]
        if opts.images is None:
            return self._json_path().parent
        return self.path(opts.images)

    def discover(self) -> Iterator[Item]:
        opts: CocoOptions = self.options  # type: ignore[assignment]
        jpath = self._json_path()
        if not jpath.is_file():
            raise self.error("COCO annotation file not found (options.annotations)", jpath)
        try:
            data = json.loads(jpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self.error(f"malformed COCO JSON: {exc}", jpath) from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                                 for k in ("images", "annotations", "categories")):
            raise self.error("COCO JSON needs lists 'images', 'annotations' and 'categories'", jpath)
        try:
            cats = {c["id"]: str(c["name"]) for c in data["categories"]}
            images = {im["id"]: im for im in data["images"]}
        except (KeyError, TypeError) as exc:
            raise self.error(f"category/image entry without {exc}", jpath) from None
        per_image: dict[Any, list[RawBox]] = {i: [] for i in images}
        for n, ann in enumerate(data["annotations"]):
            aid = ann.get("id", n) if isinstance(ann, dict) else n
            where = f"annotation id {aid}"
            if not isinstance(ann, dict):
                raise self.error(f"{where}: not an object", jpath)
            if ann.get("iscrowd", 0):
                continue  # crowd regions (RLE) do not mark one object: no question can use them
            if ann.get("image_id") not in images:
                raise self.error(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'", jpath)
            if ann.get("category_id") not in cats:
                raise self.error(f"{where}: category_id {ann.get('category_id')!r} is not in "
                                 "'categories'", jpath)
            bbox = ann.get("bbox")
            try:
                x, y, w, h = (float(v) for v in bbox)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                raise self.error(f"{where}: bbox must be [x, y, width, height], got {bbox!r}",
                                 jpath) from None
            if _degenerate(x, y, x + w, y + h):
                raise self.error(f"{where}: degenerate bbox {bbox!r}", jpath)
            per_image[ann["image_id"]].append((x, y, x + w, y + h, cats[ann["category_id"]], where))
        img_dir = self._images_dir()
        json_rel = self.relative(jpath)
        for image_id, im in sorted(images.items(), key=lambda kv: str(kv[1].get("file_name"))):
            boxes = per_image[image_id]
            if not boxes and not opts.keep_empty:
                continue
            name = im.get("file_name")
            if not name:
                raise self.error(f"image id {image_id!r} has no file_name", jpath)
            path = img_dir / name
            if not path.is_file():
                self.bad_item(f"image id {image_id!r}: file '{name}' does not exist in {img_dir}",
                              jpath)
                continue
            rel = self.relative(path)
            size = (int(im["width"]), int(im["height"])) if im.get("width") and im.get("height") else None
            yield Item(key=rel, paths=(rel, json_rel), group=path.stem,
                       data={"size": size, "boxes": boxes})


    def _boxes(self, item: Item, width: int, height: int) -> tuple[list[Box], list[dict]]:
        jpath = self.path(item.paths[1])
        size = item.data.get("size")
        if size is not None and tuple(size) != (width, height):
            raise self.error(f"'images' entry says {size[0]}x{size[1]} but {item.paths[0]} is "
                             f"{width}x{height}", jpath)
        return self._clip(item.data["boxes"], width, height, jpath)


# YOLO ----------------------------------------------------------------------------------------
class YoloOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: str = Field(
        default="images", description="image folder (searched recursively: images/<split>/ works)")
    labels: str = Field(default="labels", description="label folder mirroring it: labels/<split>/<stem>.txt")
    names: list[str] | None = Field(default=None, description="class index -> raw label")
    names_file: str | None = Field(
        default=None, description="data.yaml (names: list or {index: name}) or classes.txt")
    keep_empty: bool = Field(default=False, description="also yield images without boxes")


NAMES_FILES = ("data.yaml", "dataset.yaml", "classes.txt", "obj.names")


@register
class Yolo(_BoxConverter):
    """YOLO txt: labels/<stem>.txt with 'class cx cy w h' (0-1) per line, beside images/."""

    format = "yolo"
    Options = YoloOptions

    def _names(self) -> list[str]:
        opts: YoloOptions = self.options  # type: ignore[assignment]
        if opts.names is not None and opts.names_file is not None:
            raise self.error("give either options.names or options.names_file, not both")
        if opts.names is not None:
            return [str(n) for n in opts.names]
        if opts.names_file is not None:
            path = self.path(opts.names_file)
            if not path.is_file():
                raise self.error("class names file not found (options.names_file)", path)
        else:
            found = [self.root / n for n in NAMES_FILES if (self.root / n).is_file()]
            if not found:
                raise self.error("class names unknown: set options.names or options.names_file "
                                 f"(looked for {', '.join(NAMES_FILES)} in the root)", self.root)
            path = self.path(found[0])
        return self._read_names(path)

    def _read_names(self, path: Path) -> list[str]:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() not in (".yaml", ".yml"):
            return [line.strip() for line in text.splitlines() if line.strip()]
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise self.error(f"not valid YAML: {exc}", path) from None
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, list):
            return [str(n) for n in names]
        if isinstance(names, dict):
            try:
                index = {int(k): str(v) for k, v in names.items()}
            except ValueError:
                raise self.error("'names' keys must be class indices", path) from None
            if sorted(index) != list(range(len(index))):
                raise self.error("'names' indices must be 0..N-1 without gaps", path)
            return [index[i] for i in range(len(index))]
        raise self.error("no 'names' list or mapping in this file", path)

    def discover(self) -> Iterator[Item]:
        opts: YoloOptions = self.options  # type: ignore[assignment]
        names = self._names()
        img_dir, lbl_dir = self.root / opts.images, self.root / opts.labels
        if not img_dir.is_dir():
            raise self.error(f"image folder '{opts.images}' not found (options.images)", img_dir)
        for path in sorted(img_dir.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                continue
            sub = path.relative_to(img_dir).with_suffix(".txt")
            label = lbl_dir / sub
            try:
                boxes = self._parse(self.path(label), names) if label.is_file() else []
            except BuildError as exc:
                self.bad_item(exc.reason, exc.file)
                continue
            if not boxes and not opts.keep_empty:
                continue  # YOLO: no label file (or an empty one) = background image
            rel = self.relative(path)
            paths = (rel, self.relative(label)) if label.is_file() else (rel,)
            yield Item(key=rel, paths=paths, group=path.stem, data={"boxes": boxes})

    def _parse(self, label: Path, names: list[str]) -> list[tuple[float, float, float, float, str, str]]:
        """Normalised (cx, cy, w, h) boxes per line; polygon lines (segments) become their bbox."""
        out = []
        for n, line in enumerate(label.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"line {n}"
            try:
                cls = int(parts[0])
                values = [float(v) for v in parts[1:]]
            except ValueError:
                raise self.error(f"{where}: expected 'class cx cy w h', got {line.strip()!r}",
                                 label) from None
            if not 0 <= cls < len(names):
                raise self.error(f"{where}: class index {cls} out of range (0..{len(names) - 1}, "
                                 f"{len(names)} names)", label)
            if len(values) == 4:
                cx, cy, w, h = values
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            elif len(values) >= 6 and len(values) % 2 == 0:  # segment polygon x1 y1 x2 y2 ...
                xs, ys = values[0::2], values[1::2]
                box = (min(xs), min(ys), max(xs), max(ys))
            else:
                raise self.error(f"{where}: expected 'class cx cy w h', got {line.strip()!r}", label)
            if _degenerate(*box):
                raise self.error(f"{where}: degenerate box {line.strip()!r}", label)
            out.append((*box, names[cls], where))
        return out

    def _boxes(self, item: Item, width: int, height: int) -> tuple[list[Box], list[dict]]:
        raw = [(x0 * width, y0 * height, x1 * width, y1 * height, lab, where)
               for x0, y0, x1, y1, lab, where in item.data["boxes"]]
        label_file = self.path(item.paths[1]) if len(item.paths) > 1 else self.path(item.paths[0])
        return self._clip(raw, width, height, label_file)
