"""Crash safety as a set: a killed or interrupted build never shows a mix, leaves nothing behind.

A real ``gmai-build`` subprocess (2 workers: a spawned process pool) is
SIGKILLed at each named point of a build (``GMAI_BUILD_FAILPOINT``, see lifecycle.py), or
interrupted by SIGINT/SIGTERM. Readers must see the previous build or the new one, complete;
the next build must remove the debris and publish byte-identical outputs; no helper process may
outlive the build.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import (
    REPO,
    leftovers,
    no_orphans,
    processes_with,
    published,
    write_yaml,
    xray_class_folders,
    xray_source,
)

MAP = ("department: Pulmonary Medicine\n"
       "labels: {normal: normal, pneumonia: pneumonia, cardiomegaly: cardiomegaly}\n")
# Before the commit point readers must still see build A; from it on, build B.
BEFORE_COMMIT = ["helpers", "reading", "writing", "staged", "renamed", "linked"]
AFTER_COMMIT = ["swapped"]
UNTOUCHED = ["helpers"]  # the workers start before the output folder is touched


class Project:
    """Build A (two classes), then build B (a third class added) of real X-rays."""

    def __init__(self, root: Path):
        self.root = root
        xray_class_folders(root / "a", {"normal": 6, "pneumonia": 6})
        xray_class_folders(root / "b", {"normal": 6, "pneumonia": 6, "cardiomegaly": 6})
        (root / "map.yaml").write_text(MAP)
        self.a = write_yaml(root / "a.yaml", {"build": {"name": "CS"},
                                              "sources": [xray_source(root="a")]})
        self.b = write_yaml(root / "b.yaml", {"build": {"name": "CS"},
                                              "sources": [xray_source(root="b")]})

    def start(self, cfg: Path, out: Path, failpoint: str | None = None,
              marker: str = "") -> subprocess.Popen:
        env = {**os.environ, "GMAI_TEST_MARK": marker or uuid.uuid4().hex}
        env.pop("GMAI_BUILD_FAILPOINT", None)
        if failpoint:
            env["GMAI_BUILD_FAILPOINT"] = failpoint
        proc = subprocess.Popen(
            [sys.executable, "-m", "gmai_build.cli", "--sources", str(cfg), "--out", str(out),
             "--workers", "2", "--no-progress"],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # its own process group, as a command typed in a terminal
        )
        return proc

    def run(self, cfg: Path, out: Path, failpoint: str | None = None,
            marker: str = "") -> subprocess.CompletedProcess:
        proc = self.start(cfg, out, failpoint, marker)
        return finish(proc)


def finish(proc: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    """Wait for a build; an orphan holding its output pipes open must fail, not hang, the test."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the build and all it started
        proc.communicate()
        pytest.fail(f"the build or a process it started was still running after {timeout} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Project, Path, Path]:
    """The project, a folder holding build A, and the uninterrupted reference A-then-B."""
    p = Project(tmp_path_factory.mktemp("crash"))
    out_a = p.root / "out_a"
    assert p.run(p.a, out_a).returncode == 0
    ref_b = p.root / "ref_b"
    shutil.copytree(out_a, ref_b, symlinks=True)
    assert p.run(p.b, ref_b).returncode == 0
    assert published(ref_b) != published(out_a)
    return p, out_a, ref_b


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.mark.parametrize("point", BEFORE_COMMIT + AFTER_COMMIT)
def test_sigkill_at_each_point_then_rebuild(project, tmp_path: Path, point: str) -> None:
    p, out_a, ref_b = project
    out = _copy(out_a, tmp_path / "out")
    marker = uuid.uuid4().hex
    killed = p.run(p.b, out, failpoint=point, marker=marker)
    assert killed.returncode == -signal.SIGKILL
    no_orphans(marker)
    # A reader sees one complete build: A before the commit point, B from it on.
    assert published(out) == published(out_a if point in BEFORE_COMMIT else ref_b)
    rerun = p.run(p.b, out)
    assert rerun.returncode == 0, rerun.stderr
    assert not leftovers(out)
    after, ref = published(out), published(ref_b)
    if point in AFTER_COMMIT:  # B was already published: the rerun is a build with no change
        after.pop("build.json"), ref.pop("build.json")
    assert after == ref, "the rebuild after a crash must be byte-identical"
    if point in UNTOUCHED:
        assert "removed what an interrupted build left" not in rerun.stdout
    elif point not in AFTER_COMMIT:
        assert "removed what an interrupted build left" in rerun.stdout


def test_sigkill_from_outside_while_workers_run(project, tmp_path: Path) -> None:
    """A kill from outside, at whatever moment the pool and manager are up."""
    p, out_a, ref_b = project
    out = _copy(out_a, tmp_path / "out")
    marker = uuid.uuid4().hex
    proc = p.start(p.b, out, marker=marker)
    deadline = time.monotonic() + 60
    while len(processes_with(marker)) < 3 and proc.poll() is None:  # build + manager + pool
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()
    finish(proc, timeout=30)
    no_orphans(marker)
    assert published(out) in (published(out_a), published(ref_b))
    assert p.run(p.b, out).returncode == 0
    assert not leftovers(out)
    assert published(out) == published(ref_b) or proc.returncode == 0


@pytest.mark.parametrize("how, code", [("SIGTERM", 143), ("SIGINT", 130)])
@pytest.mark.parametrize("point", ["helpers", "reading", "writing"])
def test_sigint_sigterm_one_line_nothing_left(project, tmp_path: Path, how: str, code: int,
                                             point: str) -> None:
    p, out_a, _ = project
    out = _copy(out_a, tmp_path / "out")
    marker = uuid.uuid4().hex
    proc = p.start(p.b, out, failpoint=f"{point}:{how}", marker=marker)
    done = finish(proc)
    stderr = done.stderr
    assert proc.returncode == code
    assert stderr.strip().splitlines() == [
        f"gmai-build: interrupted by {how}; the output folder holds the last complete build, "
        "nothing partial"], stderr
    no_orphans(marker)
    assert published(out) == published(out_a)
    assert not leftovers(out)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_signals_at_random_moments(project, tmp_path: Path, how: signal.Signals) -> None:
    """SIGTERM to the build (as `kill` does) or SIGINT to its process group (as Ctrl-C does)
    at moments spread over a whole build: it completes or stops with one line, never a
    traceback, and leaves only a complete build and no process behind."""
    p, out_a, ref_b = project
    started = time.monotonic()
    p.run(p.b, _copy(out_a, tmp_path / "timing"))
    duration = time.monotonic() - started
    outcomes = []
    for k in range(1, 5):
        out = _copy(out_a, tmp_path / f"out{k}")
        marker = uuid.uuid4().hex
        proc = p.start(p.b, out, marker=marker)
        time.sleep(duration * k / 5)
        if how == signal.SIGINT:
            os.killpg(proc.pid, how)
        else:
            proc.send_signal(how)
        done = finish(proc)
        assert "Traceback" not in done.stderr, done.stderr
        if done.returncode == 128 + how:
            assert done.stderr.strip().splitlines() == [
                f"gmai-build: interrupted by {how.name}; the output folder holds the last "
                "complete build, nothing partial"]
        else:  # finished first, or stopped by the default action before Python was ready
            assert done.returncode in (0, -how), done.stderr
        no_orphans(marker)
        assert published(out) in (published(out_a), published(ref_b))
        assert not leftovers(out)
        outcomes.append(done.returncode)
    assert 128 + how in outcomes  # (the moments do reach the build itself)


def test_a_signal_during_publish_waits_for_it(project, tmp_path: Path) -> None:
    """SIGTERM between the rename and the pointer swap: held back until B is published."""
    p, out_a, ref_b = project
    out = _copy(out_a, tmp_path / "out")
    done = p.run(p.b, out, failpoint="renamed:SIGTERM")
    assert done.returncode == 143 and "Traceback" not in done.stderr
    assert published(out) == published(ref_b) and not leftovers(out)


def test_second_build_into_the_same_folder_is_refused(project, tmp_path: Path) -> None:
    import fcntl

    p, out_a, _ = project
    out = _copy(out_a, tmp_path / "out")
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = p.run(p.b, out)
    assert proc.returncode == 1
    assert "another gmai-build is writing into this folder" in proc.stderr
    assert published(out) == published(out_a)


def test_layout_links_through_one_pointer(project) -> None:
    """Every published name is a link through `current`: one rename switches them all."""
    _, out_a, _ = project
    names = sorted(published(out_a))
    assert names == sorted(["CS_VAL.tsv", "CS_TEST.tsv", "CS_TEST_answers.tsv", "manifest.jsonl",
                            "summary.json", "summary.md", "build.json", "coverage.json",
                            "coverage.md"])
    for name in names:
        assert os.readlink(out_a / name) == f"current/{name}"
    assert os.readlink(out_a / "current").startswith(".builds/build-")
    assert sorted(os.listdir(out_a / "current")) == names  # the workers' image files are not published


def test_outputs_of_the_former_layout_are_replaced(project, tmp_path: Path) -> None:
    """An --out written by an older gmai-build (plain files, .staging-* debris) is taken over."""
    p, out_a, _ = project
    out = tmp_path / "old"
    out.mkdir()
    for name in published(out_a):
        shutil.copyfile(out_a / name, out / name)
    (out / ".staging-abc").mkdir()
    (out / ".staging-abc" / "CS_VAL.tsv").write_text("partial")
    assert p.run(p.a, out).returncode == 0
    after, before = published(out), published(out_a)
    after.pop("build.json"), before.pop("build.json")  # says "incremental": it reused them
    assert after == before
    assert not leftovers(out)
