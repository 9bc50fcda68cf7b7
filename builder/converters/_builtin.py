"""Imports every built-in converter module so that their ``@register`` decorators run."""

from . import boxes, csv_table, folder_classes, image_label_glob, mask_pairs, medmnist, msd  # noqa: F401
