"""Converters, one module per source layout; see :mod:`gmai_build.converters.base`."""

from .base import Converter, Item, NoOptions, get_converter, register, registry

__all__ = ["Converter", "Item", "NoOptions", "get_converter", "register", "registry"]
