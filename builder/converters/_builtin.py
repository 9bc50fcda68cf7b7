"""Imports every built-in converter module so that their ``@register`` decorators run."""

from . import boxes, csv_table, folder_classes, mask_pairs, medmnist  # noqa: F401
