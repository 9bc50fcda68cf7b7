"""``--executor ray``: the same build, byte for byte, as the local executor; the user's errors
as one line, whether they happen in a Ray task or in reaching the cluster; a quiet terminal.

Most tests use a local Ray that this module starts (2 CPUs) and stops; the build finds it
running and uses it. One test lets ``gmai-build --executor ray`` start (and stop) its own Ray, as
a user's first run does, and checks that nothing of Ray's reaches the terminal. Without
``ray`` installed the module is skipped; what the CLI says then: test_executors.py.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install 'gmai-build[ray]' (the test extra has it)")

from gmai_build.cli import main  # noqa: E402
from helpers import (  # noqa: E402
    leftovers,
    no_orphans,
    published,
    realdata,
    run_cli,
    write_yaml,
)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def _build(sources: Path, out: Path, *extra: str) -> int:
    return main(["--sources", str(sources), "--out", str(out), "--no-progress", *extra])


def test_ray_build_is_byte_identical_to_local_builds(
        tmp_path: Path, local_ray: None, mixed_reference: tuple[Path, Path]) -> None:
    """Every published file equals the --workers 1 build's and the local --workers 2 build's."""
    sources, one = mixed_reference
    assert _build(sources, tmp_path / "local2", "--workers", "2") == 0
    assert _build(sources, tmp_path / "ray", "--executor", "ray") == 0
    reference = published(one)
    assert {"MIX_TEST.tsv", "MIX_VAL.tsv", "MIX_TEST_answers.tsv", "manifest.jsonl",
            "build.json", "summary.json", "summary.md", "coverage.json",
            "coverage.md"} <= set(reference)
    assert published(tmp_path / "local2") == reference
    assert published(tmp_path / "ray") == reference
    assert leftovers(tmp_path / "ray") == []


def test_ray_task_error_reaches_the_user_as_the_local_one_line(
        tmp_path: Path, local_ray: None, capsys) -> None:
    """A corrupt image under on_error: fail raises a BuildError inside a Ray task: the user
    sees the same message as with local workers, not Ray's wrapped traceback."""
    root = tmp_path / "voc"
    shutil.copytree(realdata("voc_bccd"), root)
    images = sorted((root / "JPEGImages").iterdir())
    images[5].write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    sources = write_yaml(tmp_path / "sources.yaml", {
        "build": {"name": "BCCD", "on_error": "fail"},
        "sources": [{"name": "bccd", "format": "voc", "root": str(root),
                     "modality": "Microscopy", "label_map": "bccd", "license": "MIT",
                     "citation": "BCCD Dataset, Shenggan, 2017", "identifying_paths": False}]})
    errors = {}
    for name, flags in {"inline": ("--workers", "1"), "pool": ("--workers", "2"),
                        "ray": ("--executor", "ray")}.items():
        out = tmp_path / name
        assert _build(sources, out, *flags) == 1
        errors[name] = capsys.readouterr().err
        assert not out.exists() or published(out) == {}
    assert errors["ray"] == errors["inline"] == errors["pool"]
    first = errors["ray"].splitlines()[0]
    assert first == (f"gmai-build: error: source 'bccd': file JPEGImages/{images[5].name}: "
                     "cannot read image: Truncated File Read")
    assert "Traceback" not in errors["ray"] and "Ray" not in errors["ray"]


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cluster_is_one_line_and_publishes_nothing(tmp_path: Path) -> None:
    """--ray-address or RAY_ADDRESS naming a cluster that is not there: one line at once
    (Ray alone would retry for minutes, printing warnings), exit 1, no output."""
    import os

    sources = write_yaml(tmp_path / "sources.yaml", {
        "build": {"name": "BCCD"},
        "sources": [{"name": "bccd", "format": "voc", "root": str(realdata("voc_bccd")),
                     "modality": "Microscopy", "label_map": "bccd", "license": "MIT",
                     "citation": "BCCD", "identifying_paths": False}]})
    address = f"127.0.0.1:{_unused_port()}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for extra, environ in (
            (["--ray-address", address], env),
            ([], {**env, "RAY_ADDRESS": address}),
            ([], {**env, "RAY_ADDRESS": f"ray://{address}"})):
        out = tmp_path / "out"
        r = run_cli("--sources", str(sources), "--out", str(out), "--executor", "ray",
                    "--no-progress", *extra, env=environ, timeout=60)
        assert r.returncode == 1, r.stderr
        assert r.stdout == ""
        [line] = r.stderr.splitlines()
        assert line.startswith("gmai-build: error: cannot reach the Ray cluster at ")
        assert address in line and "ray start --head" in line
        assert not out.exists() or published(out) == {}


def test_cli_starts_its_own_local_ray_quietly(tmp_path: Path,
                                              mixed_reference: tuple[Path, Path]) -> None:
    """A user's `gmai-build --executor ray` without a cluster: Ray starts locally, the build
    matches the local one, and the terminal shows gmai-build's summary only (no Ray banner,
    log lines or authentication notices); Ray is stopped afterwards."""
    import os

    sources, one = mixed_reference
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = tmp_path / "out"
    r = run_cli("--sources", str(sources), "--out", str(out), "--executor", "ray",
                "--workers", "2", "--no-progress", env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith("MIX: ") and "Ray" not in r.stdout and "ray" not in r.stdout
    assert published(out) == published(one)


@pytest.mark.parametrize("how, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_stop_signal_during_a_ray_build_is_one_line(tmp_path: Path, how: str, code: int,
                                                    mixed_reference: tuple[Path, Path]) -> None:
    """SIGTERM (as `kill` sends it) or SIGINT to the process group (as Ctrl-C does) while
    results come back from Ray: the one line of a local build, not the stack dump of the
    signal handler Ray's core installs; nothing published, Ray stopped."""
    import os
    import uuid

    sources, _ = mixed_reference
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(GMAI_BUILD_FAILPOINT=f"reading:{how}", GMAI_TEST_MARK=marker)
    out = tmp_path / "out"
    r = run_cli("--sources", str(sources), "--out", str(out), "--executor", "ray",
                "--workers", "2", "--no-progress", env=env, timeout=300,
                start_new_session=True)  # (its own process group, for the SIGINT)
    assert r.returncode == code, r.stderr
    assert r.stderr.splitlines() == [
        f"gmai-build: interrupted by {how}; the output folder holds the last complete build, "
        "nothing partial"]
    assert published(out) == {} and leftovers(out) == []
    no_orphans(marker)  # Ray's own processes (GCS, raylet, workers) included
