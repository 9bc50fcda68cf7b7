"""Relations between labels (``label_maps/relations.yaml``): which options may stand together.

A distractor must be wrong for the image. It is not when it names the answer again (a synonym
or a spelling variant) or names a part, the whole, a kind or the parent kind of the answer.
:meth:`Relations.relation` says which of these holds for two label texts (or None), and the
question builder never puts two related labels among the options of one question: not the
answer and a distractor (two right answers), and not two distractors either (a blind solver
could rule both out, since the answer never has a related distractor).

Body regions (``regions``) give distractors their plausibility order: same region first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .schemas import load_yaml
from .taxonomy import LABEL_MAPS, normalize_key

RELATIONS_FILE = LABEL_MAPS / "relations.yaml"
EDGE_KINDS = ("part_of", "is_a")


def fold(text: str) -> str:
    """Spelling-variant key: case, hyphens, punctuation and a plural 's' do not matter.

    'High-grade dysplasia' and 'high grade dysplasia' fold alike, as do 'clavicle' and
    'clavicles'; words of three letters or fewer and '-ss' endings keep their 's'.
    """
    words = re.sub(r"[^0-9a-z]+", " ", normalize_key(text).replace("'", "")).split()
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
                    for w in words)


@dataclass
class Relations:
    """Synonym groups, part/kind edges and region stems, all keyed by :func:`fold`."""

    canonical: dict[str, str] = field(default_factory=dict)  # folded text -> folded first
    display: dict[str, str] = field(default_factory=dict)  # folded first -> its text
    parents: dict[str, dict[str, str]] = field(default_factory=dict)  # child -> parent -> kind
    regions: list[tuple[str, str]] = field(default_factory=list)  # (stem, region), in order
    _memo: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_yaml(cls, path: Path = RELATIONS_FILE) -> Relations:
        try:
            data = load_yaml(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read label relations: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping")
        unknown = set(data) - {"synonyms", "part_of", "contains", "is_a", "regions"}
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}")
        rel = cls()
        for i, group in enumerate(data.get("synonyms") or []):
            if not isinstance(group, list) or len(group) < 2:
                raise ConfigError(f"{path}: synonyms[{i}]: expected a list of two or more texts")
            head = fold(str(group[0]))
            rel.display.setdefault(head, str(group[0]))
            for text in group:
                rel.canonical.setdefault(fold(str(text)), head)
        for kind, inverse in (("part_of", False), ("contains", True), ("is_a", False)):
            for child, parents in _mapping(data, kind, path).items():
                for parent in parents:
                    a, b = (parent, child) if inverse else (child, parent)
                    rel.parents.setdefault(rel.key(a), {})[rel.key(b)] = (
                        "part_of" if kind == "contains" else kind)
        for region, stems in _mapping(data, "regions", path).items():
            rel.regions.extend((fold(s), region) for s in stems)
        return rel

    def key(self, text: str) -> str:
        """The folded text of the synonym group's first member (else of the text itself)."""
        k = fold(text)
        return self.canonical.get(k, k)

    def ancestors(self, text: str) -> dict[str, str]:
        """Every whole and parent kind of a label (transitively), with the first edge's kind."""
        memo = ("ancestors", text)
        if memo not in self._memo:
            self._memo[memo] = dict(_ancestors(self, self.key(text)))
        return self._memo[memo]

    def relation(self, a: str, b: str) -> str | None:
        """Why ``a`` and ``b`` cannot both be options of one question, or None when they can."""
        memo = (a, b)
        if memo not in self._memo:
            self._memo[memo] = self._relation(a, b)
        return self._memo[memo]

    def _relation(self, a: str, b: str) -> str | None:
        if normalize_key(a) == normalize_key(b):
            return "same label"
        if fold(a) == fold(b):
            return "spelling variant"
        ka, kb = self.key(a), self.key(b)
        if ka == kb:
            return "synonym"
        up_a = self.ancestors(a)
        if kb in up_a:
            return "part of" if up_a[kb] == "part_of" else "kind of"
        up_b = self.ancestors(b)
        if ka in up_b:
            return "whole of" if up_b[ka] == "part_of" else "parent kind of"
        return None

    def region(self, label: str) -> str | None:
        """The body region (or scale: blood, cell) of a label, from its first matching stem."""
        memo = ("region", label)
        if memo not in self._memo:
            text = f" {self.key(label)} "
            self._memo[memo] = next(
                (region for stem, region in self.regions if f" {stem}" in text), None)
        return self._memo[memo]


def _mapping(data: dict[str, Any], key: str, path: Path) -> dict[str, list[str]]:
    raw = data.get(key) or {}
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise ConfigError(f"{path}: {key}: expected a mapping of text -> list of texts")
    return {str(k): [str(x) for x in v] for k, v in raw.items()}


def _ancestors(rel: Relations, key: str) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    stack = [(p, kind) for p, kind in rel.parents.get(key, {}).items()]
    while stack:
        node, kind = stack.pop()
        if node in seen or node == key:
            continue
        seen[node] = kind
        stack.extend((p, kind) for p in rel.parents.get(node, {}))
    return sorted(seen.items())


@lru_cache(maxsize=4)
def load_relations(path: Path = RELATIONS_FILE) -> Relations:
    return Relations.from_yaml(path)
