"""sources.yaml path expansion: environment variables, defaults and package folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from gmai_build.config import expand_path
from gmai_build.errors import ConfigError


def test_env_value_is_relative_to_cwd_default_to_the_yaml(tmp_path: Path, monkeypatch) -> None:
    yaml_dir = tmp_path / "project" / "configs"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_HOME", "datasets")
    assert expand_path("${DATA_HOME}/x", yaml_dir, "w") == (tmp_path / "datasets" / "x")
    monkeypatch.delenv("DATA_HOME")
    assert expand_path("${DATA_HOME:-../data}/x", yaml_dir, "w") == yaml_dir / "../data/x"
    with pytest.raises(ConfigError, match="environment variable DATA_HOME is not set"):
        expand_path("${DATA_HOME}/x", yaml_dir, "sources[0].root")


def test_pkg_placeholder_points_into_an_installed_package(tmp_path: Path) -> None:
    import pydicom

    got = expand_path("{pkg:pydicom}/data", tmp_path, "w")
    assert got == Path(pydicom.__file__).parent / "data"
    with pytest.raises(ConfigError, match="'no_such_pkg_xyz' is not installed"):
        expand_path("{pkg:no_such_pkg_xyz}/data", tmp_path, "w")
