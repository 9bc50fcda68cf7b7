"""Shared fixtures: a fixed salt key for every test, and builds of the bundled example and of the
real-data example, made once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import REPO, mixed_realdata_sources, realdata


@pytest.fixture(scope="session")
def example_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled fundus example, built with CircularEval copies (read-only: do not modify)."""
    out = tmp_path_factory.mktemp("example") / "build"
    from gmai_build.cli import main

    assert main(["--sources", str(REPO / "examples" / "sources.yaml"), "--out", str(out),
                 "--workers", "1", "--no-progress", "--circular"]) == 0
    return out


@pytest.fixture(scope="session")
def realdata_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/realdata_sources.yaml (4 modalities, 4 granularities, 140 questions) with
    CircularEval copies; skipped where the real samples are absent (read-only)."""
    root = realdata()
    out = tmp_path_factory.mktemp("realdata") / "build"
    old = os.environ.get("GMAI_REALDATA")
    os.environ["GMAI_REALDATA"] = str(root)
    try:
        from gmai_build.cli import main

        assert main(["--sources", str(REPO / "examples" / "realdata_sources.yaml"), "--out",
                     str(out), "--workers", "2", "--no-progress", "--circular"]) == 0
    finally:
        if old is None:
            os.environ.pop("GMAI_REALDATA", None)
        else:
            os.environ["GMAI_REALDATA"] = old
    return out


@pytest.fixture(scope="session")
def mixed_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sources.yaml, output) of :func:`helpers.mixed_realdata_sources` built on one worker
    (in this process): the reference every executor and worker count must match byte for
    byte (read-only)."""
    from gmai_build.cli import main

    folder = tmp_path_factory.mktemp("mixed")
    sources = mixed_realdata_sources(folder)
    out = folder / "one-worker"
    assert main(["--sources", str(sources), "--out", str(out), "--workers", "1",
                 "--no-progress", "--no-cache"]) == 0
    return sources, out


# A fixed key: splits (a function of the salted group) are the same in every test run.
TEST_KEY = "5eed" * 16


@pytest.fixture(autouse=True, scope="session")
def _private_salt_key(tmp_path_factory: pytest.TempPathFactory):
    """Builds without build.salt use a per-user key: the tests' key is fixed and kept out of
    the real home."""
    key = tmp_path_factory.mktemp("gmai-key") / "key"
    key.write_text(TEST_KEY + "\n")
    key.chmod(0o600)
    old = os.environ.get("GMAI_BUILD_KEY_FILE")
    os.environ["GMAI_BUILD_KEY_FILE"] = str(key)
    yield key
    if old is None:
        os.environ.pop("GMAI_BUILD_KEY_FILE", None)
    else:
        os.environ["GMAI_BUILD_KEY_FILE"] = old
