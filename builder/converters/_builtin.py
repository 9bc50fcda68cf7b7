"""Imports every built-in converter module so that their ``@register`` decorators run."""

from . import (  # noqa: F401
    boxes,
    csv_table,
    dicom_seg,
    dicom_series,
    folder_classes,
    image_label_glob,
    mask_pairs,
    medmnist,
    msd,
    rtstruct,
)
