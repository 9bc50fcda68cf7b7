"""Imports every built-in converter module so that their ``@register`` decorators run."""

from . import csv_table, folder_classes, medmnist, boxes, mask_pairs  # noqa: F401
