"""Fixtures shared by every test module."""

from __future__ import annotations

import os

import pytest

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
