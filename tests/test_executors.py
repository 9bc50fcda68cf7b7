"""The local executor: spawned workers (nothing inherited by fork), one worker per core by
default; and what ``--executor ray`` says where Ray is not installed. Byte-identical outputs
across worker counts: test_build_determinism.py; the Ray executor itself: test_executor_ray.py."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from gmai_build import executors
from gmai_build.cli import main
from helpers import copy_example, published

# Changed by the test below in the driver only: a forked worker would inherit the new value, a
# spawned one imports this module afresh and sees this one.
DRIVER_STATE = "as imported"


def _worker_view(task: int) -> tuple[int, int, str, str]:
    return task, os.getpid(), mp.current_process().name, DRIVER_STATE


def test_process_executor_spawns_workers_that_inherit_nothing(monkeypatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "DRIVER_STATE", "changed in the driver")
    with executors.executor("local", 2) as ex:
        assert isinstance(ex, executors.ProcessExecutor)
        results = list(ex.imap(_worker_view, range(12)))
    assert [r[0] for r in results] == list(range(12))  # task order, whatever finished first
    assert {r[3] for r in results} == {"as imported"}
    assert os.getpid() not in {r[1] for r in results}
    assert all(name.startswith("SpawnProcess") for _, _, name, _ in results)


def test_one_worker_runs_in_this_process() -> None:
    with executors.executor("local", 1) as ex:
        assert isinstance(ex, executors.InlineExecutor)
        assert {r[1] for r in ex.imap(_worker_view, range(3))} == {os.getpid()}


def test_default_workers_is_one_per_core_this_process_may_use(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert executors.default_workers() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert executors.default_workers() == 6


def test_build_uses_one_worker_per_core_unless_told(tmp_path: Path, monkeypatch) -> None:
    """No --workers and no build.workers: default_workers(); either one overrides it."""
    from gmai_build import pipeline

    started: list[tuple[str, int]] = []
    real_executor = pipeline.executor

    @contextmanager
    def recording(name, workers, ray_address=None, **options):
        started.append((name, workers))
        with real_executor(name, 1, ray_address, **options) as ex:  # (one process is enough)
            yield ex

    monkeypatch.setattr(pipeline, "executor", recording)
    monkeypatch.setattr(pipeline, "default_workers", lambda: 7)
    sources = copy_example(tmp_path)
    text = sources.read_text()
    assert "workers:" not in text
    assert main(["--sources", str(sources), "--out", str(tmp_path / "a"), "--no-progress",
                 "-q"]) == 0
    assert main(["--sources", str(sources), "--out", str(tmp_path / "b"), "--no-progress",
                 "-q", "--workers", "2"]) == 0
    sources.write_text(text.replace("build:\n", "build:\n  workers: 3\n", 1))
    assert main(["--sources", str(sources), "--out", str(tmp_path / "c"), "--no-progress",
                 "-q"]) == 0
    assert started == [("local", 7), ("local", 2), ("local", 3)]


def test_executor_ray_without_ray_installed_says_how_to_get_it(tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    sources = copy_example(tmp_path)
    out = tmp_path / "out"
    assert main(["--sources", str(sources), "--out", str(out), "--executor", "ray",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err == ("gmai-build: error: --executor ray needs Ray: "
                   "pip install 'gmai-build[ray]'\n")
    assert not out.exists() or published(out) == {}


def test_ray_address_needs_executor_ray(tmp_path: Path, capsys) -> None:
    sources = copy_example(tmp_path)
    assert main(["--sources", str(sources), "--out", str(tmp_path / "out"),
                 "--ray-address", "127.0.0.1:6379"]) == 1
    assert capsys.readouterr().err == "gmai-build: error: --ray-address needs --executor ray\n"
