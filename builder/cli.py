"""``gmai-build``: build a benchmark (the default command), or run a subcommand.

    gmai-build --sources sources.yaml --out build/        (same as: gmai-build build ...)
    gmai-build validate --sources sources.yaml
    gmai-build formats [NAME]
    gmai-build datasets [NAME]
    gmai-build subset --from build/ --out subset/ [--task T] [--department D] [--modality M] ...
    gmai-build preview build/ --out gallery.html
    gmai-build audit BUILD [--answers KEY]

Adding a subcommand is one line in :data:`SUBCOMMANDS`: its name, the ``module:function`` that
runs it (imported only when that subcommand runs) and a one-line help. The function takes the
arguments after the subcommand's name (``list[str]``) and returns the exit status; it parses
them with its own :class:`argparse.ArgumentParser` (``prog="gmai-build NAME"``; see
:func:`add_output_flags` for ``--quiet``). It raises :class:`~gmai_build.errors.BuildError` for
anything the user got wrong: :func:`main` prints it as one line, never a traceback, and also
ends quietly when stdout is a closed pipe (``gmai-build ... | head``) or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from . import __version__
from .errors import BuildError
from .executors import EXECUTORS, WORKER_STAGE, Executor, default_workers, executor
from .lifecycle import Interrupted, install_signal_handlers

# name -> ("module:function" relative to gmai_build, one-line help). One line per subcommand.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build": ("cli:cmd_build", "build a benchmark (the default when no subcommand is given)"),
    "validate": ("validate:main", "check a sources.yaml and every file it names, without "
                                  "decoding pixels"),
    "formats": ("formats:main", "list the source formats, or one format's options"),
    "datasets": ("datasets:main", "list the dataset cards, or print one with its download layout"),
    "export": ("export:main", "export a build for HF datasets (parquet), lmms-eval or "
                              "VLMEvalKit"),
    "subset": ("subset:main", "keep the questions on chosen tree branches (task, department, "
                              "modality, granularity, source, label) as a build of their own"),
    "preview": ("preview:main", "write a self-contained HTML gallery of a build"),
    "audit": ("audit:main", "prove a built benchmark cannot be solved without its images"),
}


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``--quiet/-q`` (print only errors), shared by the subcommands: read it with :func:`quiet`."""
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")


def add_path_flag(parser: argparse.ArgumentParser) -> None:
    """``--show-paths``: messages name input files by path instead of token (terminal only)."""
    parser.add_argument("--show-paths", action="store_true",
                        help="name input files by their real paths in messages on this terminal "
                        "(outputs always use tokens)")


def quiet(args: argparse.Namespace) -> bool:
    """True under ``--quiet``, which also silences library warnings (e.g. DICOM readers')."""
    if getattr(args, "quiet", False):
        warnings.simplefilter("ignore")
        return True
    return False


def _build_parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:10s} {text}" for name, (_, text) in SUBCOMMANDS.items())
    p = argparse.ArgumentParser(
        prog="gmai-build",
        description="Build a GMAI-MMBench-style VQA benchmark from the datasets in sources.yaml.",
        epilog=f"subcommands (gmai-build NAME --help):\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sources", required=True, type=Path, help="the sources.yaml to build")
    p.add_argument("--out", type=Path, help="output folder (default: build.out in the YAML)")
    p.add_argument("--workers", type=int,
                   help="worker processes (default: build.workers, else one per core)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where the workers run: local processes (default) or Ray "
                        "(pip install 'gmai-build[ray]')")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="the Ray cluster to use with --executor ray (default: $RAY_ADDRESS, "
                        "else a local Ray with --workers CPUs); a cluster's CPUs set the "
                        "parallelism")
    p.add_argument("--no-cache", action="store_true",
                   help="read every source again, ignoring and not writing the per-source cache "
                        "(--out/.cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--rebuild", action="store_true",
                   help="start over: ignore the build already in --out (new indices, nothing reused)")
    p.add_argument("--circular", action="store_true",
                   help="also write CircularEval copies (<name>_circular_*.tsv; build.circular)")
    add_path_flag(p)
    add_output_flags(p)
    p.add_argument("--version", action="version", version=f"gmai-build {__version__}")
    return p


def cmd_build(argv: list[str]) -> int:
    """Build into ``--out``; prints a short summary (``summary.md`` holds the full one)."""
    args = _build_parser().parse_args(argv)
    if args.ray_address and args.executor != "ray":
        raise BuildError("--ray-address needs --executor ray")
    with ExitStack() as stack:
        # Local workers start first: each imports the stages (half a second) while this
        # process imports and reads the config (as long again) and discovers the sources.
        workers = args.workers or default_workers()
        early = (stack.enter_context(executor("local", workers, preload=WORKER_STAGE))
                 if args.executor == "local" and workers > 1 else None)
        return _build(args, early)


def _build(args: argparse.Namespace, early: Executor | None) -> int:
    from .config import load_config
    from .console import short_summary
    from .coverage import coverage_lines
    from .pipeline import RunOptions, build, build_workers

    config = load_config(args.sources)
    out = args.out or config.build.out
    if out is None:
        raise BuildError(f"{args.sources}: give --out or set build.out in the sources file")
    if args.circular:
        config.build.circular = True
    silent = quiet(args)
    if not silent:
        for line in config.skipped:  # optional sources whose root is absent
            print(line, file=sys.stderr)
    progress = not (args.no_progress or silent) and sys.stderr.isatty()
    notices: list[str] = []  # what changed since the previous build in --out (rebuild.py)
    run = RunOptions(workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                     cache=not args.no_cache, progress=progress)
    if early is not None and early.workers != build_workers(config, run):
        early.close()  # (build.workers in the config asks for another number)
        early = None
    summary = build(config, out, log=lambda _: None, show_paths=args.show_paths,
                    notify=notices.append, rebuild=args.rebuild, run=run, started=early)
    if not silent:
        print(short_summary(summary, config.build.name, Path(out)))
        print("\n".join([coverage_lines(Path(out), short=True), *notices]))
    return 0


def _resolve(name: str) -> Callable[[list[str]], int]:
    module_name, _, function = SUBCOMMANDS[name][0].partition(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, function)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    install_signal_handlers()
    if argv[:1] and argv[0] in SUBCOMMANDS:
        command, rest = _resolve(argv[0]), argv[1:]
    else:
        command, rest = cmd_build, argv
    try:
        status = command(rest)
        sys.stdout.flush()  # a closed pipe must fail here, not in the interpreter's exit flush
        return status
    except BuildError as exc:
        print(f"gmai-build: error: {exc}", file=sys.stderr)
        if exc.redacted:
            print("gmai-build: (input files are named by their tokens; add --show-paths to see "
                  "their paths)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly. stdout is pointed at devnull so
        # the interpreter's final flush does not raise a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe
    except KeyboardInterrupt as exc:  # SIGINT or SIGTERM: see lifecycle.py; outdir.py's layout
        name = exc.name if isinstance(exc, Interrupted) else "SIGINT"
        print(f"gmai-build: interrupted by {name}; the output folder holds the last complete "
              "build, nothing partial", file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else 130


if __name__ == "__main__":
    raise SystemExit(main())
