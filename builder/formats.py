"""``gmai-build formats [NAME]``: the source formats, and one format's options.

The option listing is generated from the format's pydantic options model (name, type, default
and the field's ``description``), so it cannot drift from what ``sources.yaml`` accepts.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .converters import MissingDependency, format_names, get_converter
from .errors import BuildError


def type_name(annotation: Any) -> str:
    """A readable type: ``str | None``, ``list[str]``, ``'top' | 'parent'``, ``dict[int, str]``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: Any) -> str:
    """The default as a user would write it in YAML, or ``required``."""
    if field.is_required():
        return "required"
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def option_rows(model: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) for every field of an options model."""
    return [(name, type_name(f.annotation), default_text(f), f.description or "")
            for name, f in model.model_fields.items()]


def summary_line(name: str) -> str:
    """A format's one-line description (its class docstring), or why it is unavailable."""
    try:
        cls = get_converter(name)
    except MissingDependency as exc:
        return f"(unavailable: {exc.reason})"
    doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
    first = doc[0] if doc else ""
    prefix = f"``format: {name}``: "  # some docstrings start by naming their format
    return first[len(prefix):] if first.startswith(prefix) else first


def describe(name: str) -> str:
    """One format's options as an aligned table, with its module's description."""
    known = format_names()
    if name not in known:
        hint = difflib.get_close_matches(name, known, n=1)
        raise BuildError(f"unknown format '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                         + f"; known: {', '.join(known)}")
    cls = get_converter(name)
    rows = option_rows(cls.Options)
    lines = [f"{name}: {summary_line(name)}", ""]
    if not rows:
        lines.append("no options")
    else:
        header = ("option", "type", "default", "description")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
        for r in [header, *rows]:
            lines.append("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    lines += ["", f"Set them under `options:` of a source with `format: {name}`."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gmai-build formats",
                                description="List the source formats, or one format's options.")
    p.add_argument("name", nargs="?", help="a format: print its options")
    args = p.parse_args(argv)
    if args.name:
        print(describe(args.name))
        return 0
    for name in format_names():
        print(f"{name:20s} {summary_line(name)}")
    print("\nOptions of one format: gmai-build formats NAME")
    return 0
