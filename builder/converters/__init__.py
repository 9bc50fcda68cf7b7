"""Converters, one module per source layout; see :mod:`gmai_build.converters.base`.

Converter modules are imported on first use (:func:`get_converter`), so that importing this
package costs nothing and a format whose optional package is missing breaks only itself.
"""

from ._builtin import BUILTIN, MissingDependency, format_names, get_converter, registry
from .base import Converter, Item, NoOptions, register

__all__ = ["BUILTIN", "Converter", "Item", "MissingDependency", "NoOptions", "format_names",
           "get_converter", "register", "registry"]
