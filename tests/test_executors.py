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
    """No --workers and no build.workers: default_workers(); either one overrides it. The CLI
    starts local workers before it reads the config (they import the stages meanwhile); when
    the config asks for another number (build.workers), the build starts its own instead."""
    from gmai_build import cli, config, pipeline

    events: list[tuple[str, ...]] = []

    def recording(who: str):
        @contextmanager
        def start(name, workers, ray_address=None, **options):
            events.append((who, name, str(workers)))
            ex = executors.InlineExecutor()  # (one process is enough to build)
            ex.workers = workers
            yield ex

        return start

    real_load = config.load_config

    def load(path):
        events.append(("config read",))
        return real_load(path)

    monkeypatch.setattr(cli, "executor", recording("cli"))
    monkeypatch.setattr(pipeline, "executor", recording("build"))
    monkeypatch.setattr(config, "load_config", load)
    for module in (cli, pipeline):
        monkeypatch.setattr(module, "default_workers", lambda: 7)
    sources = copy_example(tmp_path)
    text = sources.read_text()
    assert "workers:" not in text
    args = ["--sources", str(sources), "--no-progress", "-q"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    assert main([*args, "--out", str(tmp_path / "c"), "--workers", "1"]) == 0
    sources.write_text(text.replace("build:\n", "build:\n  workers: 3\n", 1))
    assert main([*args, "--out", str(tmp_path / "d")]) == 0
    assert events == [
        ("cli", "local", "7"), ("config read",),
        ("cli", "local", "2"), ("config read",),
        ("config read",), ("build", "local", "1"),  # (one worker: the build runs in-process)
        ("cli", "local", "7"), ("config read",), ("build", "local", "3"),
    ]
    outputs = [{k: v for k, v in published(tmp_path / d).items() if k.endswith((".tsv", ".jsonl"))}
               for d in "abcd"]
    assert outputs[0] and all(o == outputs[0] for o in outputs)


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
