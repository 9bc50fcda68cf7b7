"""Selection stage: which targets are asked about, decided on metadata.

The per-label cap keeps, for each (canonical label, cap family), the ``cap`` targets with the
best rank, a fixed hash of (seed, target) -- previous-build questions first. Because ranks are
fixed, most of the decision can be taken *before* an image is drawn:

* :func:`prefilter_items` drops whole items before they are read when their labels are known
  up front (classification layouts);
* a :class:`RenderRule` travels with each worker task: a target whose rank is worse than the
  ``cap`` best already seen for its label can never be selected, so the worker keeps its
  metadata (its label still feeds the distractor pools) but neither draws nor encodes it;
* :func:`select_by_cap` takes the final decision on the metadata of every case, as one query
  over the build's store (:mod:`gmai_build.store`).

The rule only ever skips work that :func:`select_by_cap` would throw away, so the build is
identical whatever the rule knew (tested by drawing everything). Rules are per source: what a
source renders never depends on the other sources, which is what lets the per-source cache
(:mod:`gmai_build.cache`) reuse it when a source is added.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .cases import stable_id
from .samples import CONTOUR_LEVEL, IMAGE_LEVEL, MASK_LEVEL, Case

if TYPE_CHECKING:
    from .converters import Item
    from .manifest import ManifestRecord
    from .sources import SourceContext
    from .store import BuildStore


def cap_family(granularity: str) -> str:
    """Mask and contour cases of one target are capped (and kept) together."""
    return "segmentation" if granularity in (MASK_LEVEL, CONTOUR_LEVEL) else granularity


def rank(seed: int, pair_id: str) -> str:
    return hashlib.sha256(f"{seed}:rank:{pair_id}".encode()).hexdigest()


def _unit_key(label: str, granularity: str) -> str:
    return f"{label}\x1f{cap_family(granularity)}"


@dataclass
class RenderRule:
    """Whether a case is worth drawing: picklable, sent with each worker task.

    ``thresholds`` maps a (label, cap family) key to the worst rank that can still be selected
    (absent: anything can); ``always`` holds the case ids of previous-build questions, which are
    always kept. A worker tightens its own copy as it renders (:meth:`seen`), so the items of
    one task already prune each other.
    """

    cap: int
    seed: int
    thresholds: dict[str, str] = field(default_factory=dict)
    always: frozenset[str] = frozenset()
    _best: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def keep(self, pair_id: str, case_id: str, label: str, granularity: str) -> bool:
        if case_id in self.always:
            return True
        threshold = self.thresholds.get(_unit_key(label, granularity))
        return threshold is None or rank(self.seed, pair_id) <= threshold

    def seen(self, case: Case) -> None:
        """Record a rendered case's target; at ``cap`` targets, its label gets a threshold."""
        if not case.rendered:
            return
        key = _unit_key(case.label, case.granularity)
        best = self._best[key]
        r = rank(self.seed, case.pair_id)
        if r in best:
            return
        bisect.insort(best, r)
        if len(best) > self.cap:
            best.pop()
        if len(best) == self.cap:
            self.thresholds[key] = best[-1]

    def snapshot(self) -> RenderRule:
        """A copy to send with a task (the driver's rule keeps tightening meanwhile)."""
        return RenderRule(self.cap, self.seed, dict(self.thresholds), self.always)


def prefilter_items(
    ctx: SourceContext, items: list[Item], cap: int, seed: int, previous: Mapping[str, ManifestRecord],
) -> list[Item]:
    """Skip reading images that the per-label cap would drop anyway (labels known up front).

    Keeps, per canonical label, the ``cap`` best-ranked items (same ranking as the final cap,
    so the result is identical to reading everything) plus any item a previous build used.
    """
    if any(item.labels is None for item in items):
        return items
    best: dict[str, list[tuple[str, int]]] = defaultdict(list)
    keep: set[int] = set()
    for n, item in enumerate(items):
        labels_seen: set[str] = set()  # as CaseMaker: the first raw label of a canonical label
        for raw in item.labels or ():
            std = ctx.label_map.lookup(raw, file=item.paths[0] if item.paths else None)
            if std is None or std.label in labels_seen:
                continue
            labels_seen.add(std.label)
            sample_id = ctx.privacy.sample_id(ctx.config.name, item.key)
            pair_id = stable_id(ctx.config.name, sample_id, raw, "image")
            if stable_id(pair_id, IMAGE_LEVEL) in previous:
                keep.add(n)
            best[std.label].append((rank(seed, pair_id), n))
    for entries in best.values():
        keep.update(n for _, n in sorted(entries)[:cap])
    return [items[n] for n in sorted(keep)]


def select_by_cap(store: BuildStore, cap: int) -> None:
    """Mark the selected cases of the store: at most ``cap`` targets per (label, cap family)
    among the askable cases, previous questions first, then by rank (one query over every
    case, whatever their number)."""
    store.execute("UPDATE cases SET prev = 1 WHERE case_id IN (SELECT case_id FROM previous)")
    store.execute("""
        WITH pairs AS (
            SELECT label, family, pair_id, MAX(prev) AS p, MIN(rank) AS r
            FROM cases WHERE askable GROUP BY label, family, pair_id),
        ranked AS (
            SELECT pair_id, ROW_NUMBER() OVER (
                PARTITION BY label, family ORDER BY p DESC, r) AS n FROM pairs)
        UPDATE cases SET selected = 1
        WHERE askable AND pair_id IN (SELECT pair_id FROM ranked WHERE n <= ?)""", (cap,))
