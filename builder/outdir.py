"""The output folder: every build in its own folder, published by one atomic rename.

Layout of ``--out`` (``NAME`` is ``build.name``)::

    out/
      .builds/build-000007/      the complete files of the published build (read-only use)
      current -> .builds/build-000007
      NAME_VAL.tsv -> current/NAME_VAL.tsv      the names users and VLMEvalKit read
      NAME_TEST.tsv -> current/NAME_TEST.tsv    (one link per file of the build)
      ... manifest.jsonl, summary.md, summary.json, build.json likewise
      .lock                      held (flock) while a build writes here

A build writes into ``.builds/.staging-*``, fsyncs it (the manifest last), renames it to the
next ``build-NNNNNN`` and then swaps ``current`` with one ``rename(2)`` of a fresh symlink. The
top-level names go through ``current``, so that one rename switches every file at once: a reader
sees the old build or the new one, never a mix. To read several files of one build while
another build may be publishing, resolve ``current`` once (``os.path.realpath``) and read from
there.

Anything a killed build left (a staging folder, a build folder that was never made current, a
top-level link to a file the current build does not have) is removed by the next build, which
holds ``.lock`` so that two builds never write into one folder at the same time.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BuildError
from .lifecycle import deferred_signals, failpoint

BUILDS = ".builds"
CURRENT = "current"
LOCK = ".lock"
STAGING_PREFIX = ".staging-"
_BUILD_NAME = re.compile(r"^build-(\d{6})$")


def _fsync(path: Path) -> None:
    """Flush a file or a folder (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path, last: str | None) -> None:
    """Flush every file under root to disk (``last`` after all others), then the folders."""
    files = sorted((p for p in root.rglob("*") if p.is_file() and not p.is_symlink()),
                   key=lambda p: p.name == last)
    for p in files:
        _fsync(p)
    for d in sorted({p.parent for p in files} | {root}, key=lambda d: -len(d.parts)):
        _fsync(d)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` with one rename (readers never see it missing)."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.with_name(f".{link.name}.new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


class OutputFolder:
    """One ``--out`` folder: lock, staging, publish and the cleanup of a killed build's debris."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.builds = self.path / BUILDS
        self.current = self.path / CURRENT

    def _ensure(self) -> None:
        try:
            self.builds.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BuildError(f"cannot create the output folder: {exc.strerror}",
                             file=self.path) from None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (released by the kernel even if this process is killed)."""
        self._ensure()
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BuildError("another gmai-build is writing into this folder; wait for it "
                                 "to finish or choose another --out", file=self.path) from None
            yield
        finally:
            os.close(fd)

    def current_build(self) -> Path | None:
        if not self.current.is_symlink():
            return None
        target = self.path / os.readlink(self.current)
        return target if target.is_dir() else None

    def remove_leftovers(self) -> list[str]:
        """Remove what a killed build left behind; returns their names (for the log)."""
        self._ensure()
        keep = self.current_build()
        removed = []
        for p in sorted(self.builds.iterdir()):
            if keep is not None and p.resolve() == keep.resolve():
                continue
            _remove(p)
            removed.append(f"{BUILDS}/{p.name}")
        for p in sorted(self.path.iterdir()):  # staging of the former layout, stale temp links
            if p.name.startswith(STAGING_PREFIX) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
                removed.append(p.name)
            elif p.name.startswith(".") and p.name.endswith(".new") and p.is_symlink():
                p.unlink()
                removed.append(p.name)
        self._remove_dangling_links()
        return removed

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A private folder for the new build; removed unless :meth:`publish` took it."""
        self._ensure()
        stage = self.builds / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        stage.mkdir()  # (not mkdtemp: the published folder keeps the user's umask, not 0700)
        try:
            yield stage
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)

    def _next_name(self) -> str:
        numbers = [int(m.group(1)) for p in self.builds.iterdir()
                   if (m := _BUILD_NAME.match(p.name))]
        return f"build-{max(numbers, default=0) + 1:06d}"

    def publish(self, stage: Path, last: str) -> Path:
        """Make ``stage`` the current build in one atomic step; returns its final folder.

        ``last`` (the manifest) is flushed after every other file: a build folder whose
        manifest is on disk is complete.
        """
        _fsync_tree(stage, last)
        failpoint("staged")
        with deferred_signals():
            final = self.builds / self._next_name()
            os.rename(stage, final)
            _fsync(self.builds)
            failpoint("renamed")
            # Links first: before the swap they point through the old `current` (a name that
            # is new in this build is a dangling link, i.e. absent, until the swap).
            for entry in sorted(os.listdir(final)):
                _replace_symlink(self.path / entry, f"{CURRENT}/{entry}")
            failpoint("linked")
            _replace_symlink(self.current, f"{BUILDS}/{final.name}")  # the commit point
            _fsync(self.path)
            failpoint("swapped")
            for p in self.builds.iterdir():
                if p != final:
                    _remove(p)
            self._remove_dangling_links()
        return final

    def _remove_dangling_links(self) -> None:
        """Top-level links into ``current`` whose file the current build does not have."""
        for p in self.path.iterdir():
            if p.is_symlink() and os.readlink(p).startswith(f"{CURRENT}/") and not p.exists():
                p.unlink()
