"""``gmai-build datasets``: the catalog of dataset cards, or one card and the layout to download
into.

    gmai-build datasets                       # name, modality, granularities, licence, verified how
    gmai-build datasets msd_spleen            # the card, its layout and a one-line source entry
    gmai-build datasets msd_spleen --replica DIR   # a tiny synthetic copy of the layout
    gmai-build datasets --sources sources.yaml     # also the cards beside that sources file
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

import yaml

from .cards import Card, all_cards, card_files, card_folders, load_card
from .cli import add_output_flags, quiet
from .config import expand_path
from .errors import BuildError, ConfigError


def _folders(sources: Path | None) -> list[Path]:
    if sources is None:
        return card_folders()
    if not sources.is_file():
        raise BuildError(f"{sources}: no such file")
    data = yaml.safe_load(sources.read_text(encoding="utf-8")) or {}
    build = data.get("build") if isinstance(data, dict) else None
    extra = [expand_path(str(p), sources.parent, f"{sources}: build.cards[{i}]")
             for i, p in enumerate((build or {}).get("cards") or [])]
    return card_folders(sources, extra)


def _verified(card: Card) -> str:
    return card.info.verified.how.replace("_", " ")


def _short_granularities(card: Card) -> str:
    return ", ".join(g.split()[0] for g in card.info.granularities) or "-"


def listing(cards: list[Card]) -> list[str]:
    """One line per card: supported catalog cards first, then examples, then unsupported."""
    def group(c: Card) -> int:
        return 0 if c.info.supported and c.info.catalog else (1 if c.info.supported else 2)

    rows = [("name", "modality", "granularities", "licence", "access", "verified")]
    for c in sorted(cards, key=lambda c: (group(c), c.name)):
        licence = str(c.settings.get("license", ""))
        if len(licence) > 40:
            licence = licence[:37] + "..."
        access = "registration" if c.info.access.registration else "open"
        name = c.name + ("" if c.info.supported else " (unsupported)") \
            + ("" if c.info.catalog else " (example)")
        rows.append((name, str(c.settings.get("modality", "")), _short_granularities(c),
                     licence, access, _verified(c)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
    n_ok = sum(1 for c in cards if c.info.supported and c.info.catalog)
    lines.append(f"{n_ok} public datasets buildable, {sum(not c.info.supported for c in cards)} "
                 "documented but not yet supported; gmai-build datasets NAME for one card")
    return lines


def layout_tree(card: Card) -> list[str]:
    """The layout to download into, as an indented listing under the dataset's folder."""
    top = card.info.folder or card.name
    lines = [f"{top}/"]
    for entry in card.info.layout:
        lines.append(f"  {entry.path:60s}  {entry.what}")
    return lines


def describe(card: Card) -> list[str]:
    lines = [f"# {card.path}", card.path.read_text(encoding="utf-8").rstrip(), ""]
    if not card.info.supported:
        lines.append(f"Not buildable yet: {card.info.reason}")
        return lines
    access = card.info.access
    lines.append("Access: " + ("registration needed" if access.registration else "open download")
                 + ("; redistribution allowed" if access.redistribution
                    else "; do not redistribute copies")
                 + (f" ({access.note})" if access.note else ""))
    lines += ["", "Download into this layout (paths under the dataset's folder; {case} and "
              "{label} stand for any case id and raw label):", *layout_tree(card), "",
              "sources.yaml entry:",
              f"  - {{dataset: {card.name}, root: /path/to/{card.info.folder or card.name}}}"]
    return lines


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="gmai-build datasets",
        description="List the dataset cards (bundled, and your own beside --sources), or print "
                    "one card with the layout to download into.")
    p.add_argument("name", nargs="?", help="a dataset card's name")
    p.add_argument("--sources", type=Path, help="also list the cards this sources file sees")
    p.add_argument("--replica", type=Path, metavar="DIR",
                   help="with NAME: write a tiny synthetic replica of the card's layout into DIR")
    add_output_flags(p)
    args = p.parse_args(argv)
    silent = quiet(args)
    folders = _folders(args.sources)
    if args.name is None:
        if args.replica is not None:
            raise BuildError("--replica needs a dataset NAME")
        cards = all_cards(folders)
        if not silent:
            print("\n".join(listing(cards)))
        return 0
    files = card_files(folders)
    if args.name not in files:
        hint = difflib.get_close_matches(args.name, list(files), n=1)
        raise ConfigError(f"unknown dataset '{args.name}'"
                          + (f" (did you mean '{hint[0]}'?)" if hint else "")
                          + "; gmai-build datasets lists them")
    card = load_card(files[args.name])
    if args.replica is not None:
        from .replica import write_replica

        write_replica(card, args.replica)
        if not silent:
            print(f"{args.replica}: replica of {card.name}'s layout "
                  f"(gmai-build validate on a sources file naming it checks it)")
        return 0
    if not silent:
        print("\n".join(describe(card)))
    return 0
