"""``gmai-build``: build a benchmark (default), ``validate`` a config, list ``formats``.

    gmai-build --sources sources.yaml --out build/
    gmai-build validate --sources sources.yaml
    gmai-build formats
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import BuildError
from .lifecycle import Interrupted, install_signal_handlers


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gmai-build",
        description="Build a GMAI-MMBench-style VQA benchmark from the datasets in sources.yaml.",
        epilog="Subcommands: 'gmai-build validate --sources FILE' checks config, label maps and "
        "question pools without building; 'gmai-build formats' lists the converters.",
    )
    p.add_argument("--sources", required=True, type=Path, help="the sources.yaml to build")
    p.add_argument("--out", type=Path, help="output folder (default: build.out in the YAML)")
    p.add_argument("--workers", type=int, help="worker processes (default: build.workers)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--rebuild", action="store_true",
                   help="start over: ignore the build already in --out (new indices, nothing reused)")
    p.add_argument("--version", action="version", version=f"gmai-build {__version__}")
    return p


def _validate(argv: list[str]) -> int:
    from .config import load_config
    from .pipeline import check_known_labels, discover, prepare

    p = argparse.ArgumentParser(prog="gmai-build validate",
                                description="Check sources.yaml, label maps and question pools.")
    p.add_argument("--sources", required=True, type=Path)
    args = p.parse_args(argv)
    config = load_config(args.sources)
    _, contexts, _ = prepare(config)
    for ctx in contexts.values():
        items = discover(ctx)
        check_known_labels(ctx, items)
        print(f"{ctx.config.name}: {ctx.config.format}, {len(items)} items, label map OK")
    print(f"{args.sources}: OK ({len(config.sources)} sources)")
    return 0


def _formats() -> int:
    from .converters import registry

    for name, cls in registry().items():
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        print(f"{name:24s} {doc[0] if doc else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    install_signal_handlers()
    try:
        if argv[:1] == ["validate"]:
            return _validate(argv[1:])
        if argv[:1] == ["formats"]:
            return _formats()
        if argv[:1] == ["build"]:
            argv = argv[1:]
        args = _parser().parse_args(argv)
        from .config import load_config
        from .pipeline import build

        config = load_config(args.sources)
        out = args.out or config.build.out
        if out is None:
            print("gmai-build: error: give --out or set build.out in the sources file",
                  file=sys.stderr)
            return 2
        build(config, out, workers=args.workers, progress=not args.no_progress,
              rebuild=args.rebuild)
        print(f"gmai-build: wrote {out}", file=sys.stderr)
        return 0
    except BuildError as exc:
        print(f"gmai-build: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # SIGINT or SIGTERM: see lifecycle.py; outdir.py's layout
        name = exc.name if isinstance(exc, Interrupted) else "SIGINT"
        print(f"gmai-build: interrupted by {name}; the output folder holds the last complete "
              "build, nothing partial", file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else 130


if __name__ == "__main__":
    raise SystemExit(main())
