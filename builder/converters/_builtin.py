"""Imports every built-in converter module so that their ``@register`` decorators run."""

from . import csv_table, folder_classes, medmnist  # noqa: F401
