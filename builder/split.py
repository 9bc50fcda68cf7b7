"""VAL/TEST split by a stable hash of the patient/group key.

The split of a group depends only on (source, group) and the VAL fraction, never on which other
sources are in the build or on the order of discovery, so adding a dataset never moves an
existing question between VAL and TEST and no group is ever in both.
"""

from __future__ import annotations

import hashlib
import re

VAL, TEST = "VAL", "TEST"


def group_fraction(source: str, group: str) -> float:
    """A uniform number in [0, 1) that is a pure function of (source, group)."""
    digest = hashlib.sha256(f"{source}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(source: str, group: str, val_fraction: float) -> str:
    return VAL if group_fraction(source, group) < val_fraction else TEST


def group_key(path_key: str, default: str, pattern: str | None) -> str:
    """The group of an item: a ``patient_key`` regex on its path key, else the layout's default.

    The regex's first capturing group (or the whole match) is the group; an item the regex does
    not match keeps the layout's default so it still lands in exactly one split.
    """
    if pattern is None:
        return default
    m = re.search(pattern, path_key)
    if m is None:
        return default
    return m.group(1) if m.groups() else m.group(0)
