"""Fixtures shared by every test module."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_salt_key(tmp_path_factory: pytest.TempPathFactory):
    """Builds without build.salt use a per-user key: keep the tests' key out of the real home."""
    key = tmp_path_factory.mktemp("gmai-key") / "key"
    old = os.environ.get("GMAI_BUILD_KEY_FILE")
    os.environ["GMAI_BUILD_KEY_FILE"] = str(key)
    yield key
    if old is None:
        os.environ.pop("GMAI_BUILD_KEY_FILE", None)
    else:
        os.environ["GMAI_BUILD_KEY_FILE"] = old
