"""Converter.path confines entries to the source root exactly as ``os.path.realpath`` does,
whatever the entry: folders and files that are symlinks (inside or out), ``..`` anywhere, ``.``,
missing files, and after a folder's resolution has been remembered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gmai_build.converters.base import Converter, NoOptions
from gmai_build.errors import BuildError


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    for d in (root / "a" / "b", outside / "c"):
        d.mkdir(parents=True)
    for f in (root / "a" / "x.png", root / "a" / "b" / "y.png", outside / "c" / "z.png"):
        f.write_bytes(b"")
    (root / "in_link").symlink_to(root / "a")  # a folder symlink that stays inside
    (root / "out_link").symlink_to(outside)  # a folder symlink that leaves
    (root / "a" / "file_out").symlink_to(outside / "c" / "z.png")  # a file symlink that leaves
    (root / "a" / "file_in").symlink_to(root / "a" / "b" / "y.png")
    return root


ENTRIES = ["a/x.png", "a/b/y.png", "a/b/../x.png", "a/../a/b/y.png", "in_link/x.png",
           "in_link/b/y.png", "out_link/c/z.png", "a/file_out", "a/file_in", "a/missing.png",
           "a/b/..", "a/.", ".", "..", "../outside/c/z.png", "a/../../root/a/x.png",
           "a/b/../../..", "in_link/../x.png"]


def _inside(root: Path, entry: str) -> bool:
    real, real_root = os.path.realpath(root / entry), os.path.realpath(root)
    return real == real_root or real.startswith(real_root + os.sep)


@pytest.mark.parametrize("repeat", [1, 2])  # the second pass uses the remembered folders
def test_path_agrees_with_realpath(tmp_path: Path, repeat: int) -> None:
    root = _tree(tmp_path)
    conv = Converter("s", root, NoOptions())
    for _ in range(repeat):
        for entry in ENTRIES:
            if _inside(root, entry):
                assert conv.path(entry) == root / entry, entry
            else:
                with pytest.raises(BuildError, match="outside the source root"):
                    conv.path(entry)
    # absolute entries too
    assert conv.path(root / "a" / "x.png") == root / "a" / "x.png"
    with pytest.raises(BuildError, match="outside the source root"):
        conv.path(tmp_path / "outside" / "c" / "z.png")


def test_a_folder_symlink_changed_between_converters_is_seen(tmp_path: Path) -> None:
    """The remembered resolutions belong to one converter (and are not pickled to workers)."""
    import pickle

    root = _tree(tmp_path)
    conv = Converter("s", root, NoOptions())
    assert conv.path("in_link/x.png")
    copy = pickle.loads(pickle.dumps(conv))
    assert copy._real_folders == {} and copy.path("in_link/x.png") == root / "in_link" / "x.png"
    (root / "in_link").unlink()
    (root / "in_link").symlink_to(tmp_path / "outside")
    with pytest.raises(BuildError, match="outside the source root"):
        Converter("s", root, NoOptions()).path("in_link/c/z.png")
