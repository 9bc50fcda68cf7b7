"""VAL/TEST split of patient/group keys: stratified by source, exact in share, leak-free.

:func:`assign_splits` gives every (source, group) one split:

* Groups linked by an exact or near-duplicate image (:mod:`gmai_build.dedup`) are one unit, so
  no picture is in both splits: the whole groups move together, and are reported.
* A group of a previous build keeps its split (incremental builds never move a question), and a
  unit holding such a group takes its split.
* The other units fill quotas: each source gets ``floor(val_fraction x its groups)`` VAL groups,
  at least one VAL and one TEST when it has 5 or more groups; the rest of the build's VAL
  groups (``round(val_fraction x groups)``) go to the sources with the largest remainders. So
  the VAL share of groups is within half a group per source of ``val_fraction`` and within 3
  points from 20 groups on. Inside a source, units are taken in the order of a stable hash of
  (source, group): the choice does not depend on discovery order.
"""

from __future__ import annotations

import hashlib
import math
import re
from array import array
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .dedup import HASH_SIZE, close_pairs

if TYPE_CHECKING:
    from .config import Config
    from .store import BuildStore, PreviousQuestions

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


Group = tuple[str, str]  # (source, group)
MIN_GROUPS_FOR_BOTH = 5


@dataclass
class SplitPlan:
    """The split of every group, and what the report says about how it was reached."""

    splits: dict[Group, str]
    together: list[list[Group]] = field(default_factory=list)  # linked groups, one split each

    def val_share(self) -> float:
        return sum(v == VAL for v in self.splits.values()) / max(1, len(self.splits))


def _units(groups: list[Group], links: Iterable[tuple[Group, Group]]) -> list[list[Group]]:
    """Connected components of the link graph (union-find), each sorted."""
    parent = {g: g for g in groups}

    def root(g: Group) -> Group:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[Group, list[Group]] = defaultdict(list)
    for g in groups:
        comps[root(g)].append(g)
    return [sorted(c) for c in comps.values()]


def _quotas(sizes: dict[str, int], val_fraction: float) -> dict[str, int]:
    """VAL groups per source: floors, the 5-group rule, then largest remainders."""
    quota: dict[str, int] = {}
    for src, n in sizes.items():
        q = math.floor(val_fraction * n)
        if n >= MIN_GROUPS_FOR_BOTH:
            q = min(max(q, 1), n - 1)
        quota[src] = q
    total = round(val_fraction * sum(sizes.values()))
    room = {s: sizes[s] - quota[s] - (1 if sizes[s] >= MIN_GROUPS_FOR_BOTH else 0) for s in sizes}
    order = sorted(sizes, key=lambda s: (-(val_fraction * sizes[s] - quota[s]),
                                         group_fraction(s, "")))
    while sum(quota.values()) < total and any(room[s] > 0 for s in order):
        for src in order:
            if sum(quota.values()) >= total:
                break
            if room[src] > 0:
                quota[src] += 1
                room[src] -= 1
    return quota


def assign_splits(
    groups: Iterable[Group], val_fraction: float, previous: dict[Group, str] | None = None,
    links: Iterable[tuple[Group, Group]] = (),
) -> SplitPlan:
    """One split per group (module docstring); deterministic and order-independent."""
    previous = previous or {}
    all_groups = sorted(set(groups))
    units = _units(all_groups, links)
    sizes: dict[str, int] = defaultdict(int)
    for g in all_groups:
        sizes[g[0]] += 1
    quota = _quotas(dict(sizes), val_fraction)
    splits: dict[Group, str] = {}
    free: dict[str, list[list[Group]]] = defaultdict(list)
    for unit in units:
        kept = [previous[g] for g in unit if g in previous]
        if kept:  # majority of the previous splits (ties: TEST, the larger split)
            split = VAL if kept.count(VAL) > kept.count(TEST) else TEST
            splits.update((g, split) for g in unit)
            for g in unit:
                quota[g[0]] -= split == VAL
        else:
            free[unit[0][0]].append(unit)
    for src, src_units in sorted(free.items()):
        src_units.sort(key=lambda u: min(group_fraction(*g) for g in u))
        for unit in src_units:
            split = VAL if quota[src] >= len(unit) else TEST
            quota[src] -= len(unit) if split == VAL else 0
            splits.update((g, split) for g in unit)
    return SplitPlan(splits, sorted(u for u in units if len(u) > 1))


def plan_split(
    store: BuildStore, config: Config, previous: PreviousQuestions,
) -> tuple[dict[tuple[str, str], str], dict[str, Any]]:
    """The split of every group that will have questions, before any question is made.

    Selection (:func:`gmai_build.selection.select_by_cap`) has marked the cases of the store.
    Exact and near-duplicate pictures (perceptual hash without overlay) link their groups,
    which then share one split (:func:`gmai_build.split.assign_splits`). Returns the splits and
    the report for the summary (near-duplicate pairs name case ids; numbering adds indices).
    Per picture only its hash words, group number and case number are held (40 bytes).
    """
    b = config.build
    group_number: dict[tuple[str, str], int] = {}
    hashes = bytearray()
    groups = array("q")
    seqs = array("q")
    digits = HASH_SIZE * HASH_SIZE // 4
    # One picture per (source, group, hash): its first case in filing order.
    for source, grp, phash, seq in store.query(
            "SELECT source, grp, phash, MIN(seq) FROM cases WHERE selected "
            "GROUP BY source, grp, phash ORDER BY source, grp, phash"):
        hashes += bytes.fromhex(phash.rjust(digits, "0"))
        groups.append(group_number.setdefault((source, grp), len(group_number)))
        seqs.append(seq)
    values = np.frombuffer(bytes(hashes), dtype=">u8").astype(np.uint64).reshape(
        len(seqs), digits // 16)
    pairs = close_pairs(values, np.array(groups, dtype=np.int64), b.near_duplicate_distance)
    by_number = {n: g for g, n in group_number.items()} if pairs else {}
    links = [(by_number[groups[i]], by_number[groups[j]]) for i, j, _ in pairs]
    plan = assign_splits(group_number, b.val_fraction, previous.group_splits(), links)
    # The report names questions by case id here and by index once numbered: never by sample
    # id or group, which may be identifying folder names.
    case_id = {seq: cid for seq in {seqs[k] for i, j, _ in pairs for k in (i, j)}
               for (cid,) in store.query("SELECT case_id FROM cases WHERE seq = ?", (seq,))}
    report = {
        "val_fraction": b.val_fraction,
        "near_duplicates": [
            {"a_case": case_id[seqs[i]], "b_case": case_id[seqs[j]], "distance": d}
            for i, j, d in pairs
        ],
        "kept_together": [list(unit) for unit in plan.together],
    }
    return plan.splits, report
