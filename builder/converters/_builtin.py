"""The converter registry: ``format:`` name -> converter class, imported only when used.

Built-in formats are listed here by module and class name, not imported: a format whose module
needs a package that is not installed must not break the others, and ``gmai-build formats``
must not pay for importing every reader. Third-party converters register in the
``gmai_build.converters`` entry-point group (``name = "module:Class"``) and load the same way.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from ..errors import BuildError
from .base import _REGISTRY, Converter

# format -> "module:Class" (modules relative to this package).
BUILTIN: dict[str, str] = {
    "folder_per_class": "folder_classes:FolderPerClass",
    "csv_table": "csv_table:CsvTable",
    "medmnist": "medmnist:MedMnist",
    "msd": "msd:Msd",
    "image_label_glob": "image_label_glob:ImageLabelGlob",
    "dicom_series_table": "dicom_series:DicomSeriesTable",
    "dicom_seg": "dicom_seg:DicomSeg",
    "dicom_rtstruct": "rtstruct:DicomRtstruct",
    "mask_pairs": "mask_pairs:MaskPairs",
    "voc": "boxes:Voc",
    "coco": "boxes:Coco",
    "yolo": "boxes:Yolo",
}

# Import name -> the name pip installs it under, for the missing-package message.
PIP_NAMES = {
    "skimage": "scikit-image",
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "SimpleITK": "SimpleITK",
}


class MissingDependency(BuildError):
    """A format's module needs a Python package that is not installed."""


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="gmai_build.converters")}


def format_names() -> list[str]:
    """Every known format name (built-in, entry points, registered classes), without importing."""
    return sorted({*BUILTIN, *_entry_points(), *_REGISTRY})


def get_converter(name: str) -> type[Converter]:
    """The converter class of a format, imported now.

    Raises KeyError for an unknown name and :class:`MissingDependency` (one line naming the
    package and the format) when the format's module needs a package that is not installed.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTIN:  # modules of this package
        module_name, _, class_name = BUILTIN[name].partition(":")
        module_name = f"{__package__}.{module_name}"
    else:
        target = _entry_points().get(name)
        if target is None:
            raise KeyError(name)
        module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing == "gmai_build":
            raise
        pip_name = PIP_NAMES.get(missing, missing)
        raise MissingDependency(
            f"format '{name}' needs the Python package '{pip_name}', which is not installed "
            f"(pip install {pip_name})"
        ) from None
    cls = getattr(module, class_name)
    _REGISTRY.setdefault(name, cls)
    return cls


def registry() -> dict[str, type[Converter]]:
    """Every format whose converter imports (formats with a missing package are left out)."""
    out = {}
    for name in format_names():
        try:
            out[name] = get_converter(name)
        except MissingDependency:
            continue
    return out
