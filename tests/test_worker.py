"""The worker process and how it is started: its argv, its heartbeat, a spawn that fails."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from bertui.core.events import read_events
from bertui.core.launch import resume_run, start_run
from bertui.core.runs import RunError, atomic_write_json, create_run, read_json
from bertui.worker import Worker


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return value


# --- the heartbeat has a thread of its own ------------------------------------------------------


def test_the_heartbeat_goes_on_while_every_telemetry_sample_raises(bertui_home, monkeypatch):
    """psutil failing on every sample (here: virtual_memory) must not stop the heartbeat, or a
    live run would look lost to every client."""
    import psutil

    def broken():
        raise psutil.AccessDenied(pid=None, name="virtual_memory")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    monkeypatch.setattr("bertui.worker.HEARTBEAT_SECONDS", 0.2)
    run = create_run({"name": "beating"})
    worker = Worker(run.path)
    worker.rec.set(state="running")
    beats = {read_json(run.status_path)["heartbeat"]}
    worker.start_background()
    try:
        wait_for(lambda: beats.add(read_json(run.status_path)["heartbeat"]) or len(beats) >= 4,
                 20, "the heartbeat to advance three times")
    finally:
        worker.stop_background()
    assert sorted(beats) == list(sorted(beats)) and len(beats) >= 4
    assert not [e for e in read_events(run.events_path) if e["type"] == "telemetry"]


# --- the worker's command line -----------------------------------------------------------------


def worker(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertui.worker", *argv],
                          capture_output=True, text=True, timeout=60)


def test_a_mistyped_flag_is_refused_not_ignored(bertui_home):
    """``--resme`` once started a fresh run where a resume was meant."""
    run = create_run({"name": "typo"})
    before = run.status_path.read_bytes()
    proc = worker(str(run.path), "--resme")
    assert proc.returncode == 2
    assert "unrecognized arguments: --resme" in proc.stderr and "usage:" in proc.stderr
    assert run.status_path.read_bytes() == before and not run.events_path.exists()


@pytest.mark.parametrize("argv, says", [
    ((), "the following arguments are required: RUN_DIR"),
    (("a", "b"), "unrecognized arguments: b"),
])
def test_a_bad_command_line_gets_the_usage(argv, says):
    proc = worker(*argv)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr


def test_the_flag_may_come_first_and_a_missing_run_is_one_line(tmp_path):
    proc = worker("--resume", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"bertui.worker: no run at {tmp_path / 'nowhere'}"


# --- a worker that cannot be started leaves nothing queued --------------------------------------


@pytest.fixture(params=["missing", "exits-1"])
def broken_python(request, tmp_path, monkeypatch):
    """An interpreter the launcher cannot run: missing, or one that exits 1 at once."""
    path = tmp_path / "python"
    if request.param == "exits-1":
        path.write_text("#!/bin/sh\necho 'cannot run here' >&2\nexit 1\n")
        path.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(path))
    return "No such file or directory" if request.param == "missing" else "cannot run here"


def test_start_run_removes_the_run_when_its_worker_cannot_start(bertui_home, broken_python):
    with pytest.raises(RunError) as info:
        start_run({"name": "never", "model": {"spec": "default"}}, bertui_home)
    assert list((bertui_home / "runs").iterdir()) == []  # no queued run left behind
    message = str(info.value)
    assert message.startswith("could not start the worker: ") and broken_python in message
    assert message.endswith("; no run was created") and "\n" not in message


def test_resume_run_puts_the_status_back_when_its_worker_cannot_start(bertui_home,
                                                                      broken_python):
    run = create_run({"name": "stays-cancelled"})
    atomic_write_json(run.status_path, {"state": "cancelled", "error": None, "ended": 1.0})
    before = json.loads(run.status_path.read_text())
    with pytest.raises(RunError, match=f"could not start the worker: .*{broken_python}"):
        resume_run(run)
    assert json.loads(run.status_path.read_text()) == before
    assert run.refresh().state == "cancelled"


def test_bertui_train_says_so_in_one_line(tiny_model, bertui_home, broken_python, capsys):
    from bertui.cli import main

    code = main(["train", "--detach", "--model", str(tiny_model), "--dataset", "demo"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith("bertui: could not start the worker: ") and broken_python in err
    assert err.endswith("; no run was created")
    assert list((bertui_home / "runs").iterdir()) == []
