"""The run-directory contract: atomic files, the event log, run ids, lost runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertui.core import process, runs
from bertui.core.events import EventReader, append_event, make_event
from bertui.core.launch import delete_run
from bertui.core.runs import (
    Run,
    RunError,
    atomic_write_json,
    create_run,
    find_run,
    list_runs,
)
from conftest import hold_lock


def test_atomic_write_keeps_old_content_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    atomic_write_json(target, {"state": "running"})

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_json(target, {"state": "finished"})
    assert json.loads(target.read_text()) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left


def test_atomic_write_replaces_content(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}


def test_event_reader_tolerates_a_half_written_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    append_event(path, make_event("progress", 1, samples_per_s=10.0))
    append_event(path, make_event("progress", 2, samples_per_s=11.0))
    with open(path, "ab") as fh:
        fh.write(b'{"v":1,"type":"progress","time":1.0,"st')  # the writer is mid-line
    reader = EventReader(path)
    events = reader.read_new()
    assert [e["step"] for e in events] == [1, 2]
    assert reader.read_new() == []  # the partial line is not consumed yet
    with open(path, "ab") as fh:
        fh.write(b'ep":3}\n')
    assert [e["step"] for e in reader.read_new()] == [3]


def test_event_reader_skips_garbage_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'not json\n{"v":1,"type":"log","time":0,"step":0}\n[1,2]\n')
    reader = EventReader(path)
    assert [e["type"] for e in reader.read_new()] == ["log"]
    assert reader.bad_lines == 2


def test_every_event_has_version_type_time_and_step():
    event = make_event("train", 7, loss=0.5)
    assert {"v", "type", "time", "step"} <= event.keys()
    assert event["step"] == 7 and event["type"] == "train"


def test_create_run_is_private_and_queued(bertui_home):
    run = create_run({"name": "first", "model": {"spec": "default"}})
    assert run.path.parent == bertui_home / "runs"
    assert stat.S_IMODE(run.path.stat().st_mode) == 0o700
    assert run.config["name"] == "first"
    assert run.status["state"] == "queued"


def test_run_ids_never_collide(bertui_home):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda i: create_run({"name": f"r{i}"}), range(40)))
    assert len({r.id for r in made}) == 40
    assert len(list_runs()) == 40


def test_a_running_run_whose_pid_is_gone_is_lost(bertui_home):
    run = create_run({"name": "ghost"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    atomic_write_json(
        run.status_path,
        {
            "state": "running",
            "pid": dead.pid,
            "heartbeat": time.time(),
            "host": os.uname().nodename,
        },
    )
    assert run.refresh().state == "lost"
    assert run.summary()["status"] == "lost"


def test_a_running_run_with_a_live_pid_is_running(bertui_home):
    run = create_run({"name": "alive"})
    atomic_write_json(
        run.status_path, {"state": "running", "pid": os.getpid(), "heartbeat": time.time()}
    )
    assert run.refresh().state == "running"


def test_a_reused_pid_is_not_taken_for_the_worker(bertui_home):
    run = create_run({"name": "reused"})
    atomic_write_json(
        run.status_path,
        {"state": "running", "pid": os.getpid(), "pid_started": 1.0, "heartbeat": time.time()},
    )
    assert run.refresh().state == "lost"


def test_find_run_by_id_prefix_name_and_path(bertui_home):
    run = create_run({"name": "named"})
    assert find_run(run.id).path == run.path
    assert find_run(run.id[:-2]).path == run.path
    assert find_run("named").path == run.path
    assert find_run(str(run.path)).path == run.path
    with pytest.raises(RunError, match="no run 'nope'"):
        find_run("nope")


def test_delete_refuses_an_active_run(bertui_home):
    run = create_run({"name": "busy"})
    atomic_write_json(
        run.status_path, {"state": "running", "pid": os.getpid(), "heartbeat": time.time()}
    )
    with pytest.raises(RunError, match="cancel it first"):
        delete_run(run.refresh())
    atomic_write_json(run.status_path, {"state": "finished"})
    delete_run(run.refresh())
    assert not run.path.exists()


def test_last_checkpoint_ignores_incomplete_ones(tmp_path):
    for step, complete in ((10, True), (20, True), (30, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert runs.last_checkpoint(tmp_path).name == "checkpoint-20"
    assert runs.last_checkpoint(tmp_path / "missing") is None


def test_home_defaults_to_platform_dir(monkeypatch):
    monkeypatch.delenv("BERTUI_HOME")
    from platformdirs import user_data_dir

    assert runs.bertui_home() == Path(user_data_dir("bertui", appauthor=False))


def test_summary_reads_metrics(bertui_home):
    run = create_run({"name": "done", "model": {"spec": "default"}, "data": {"train": "demo"}})
    atomic_write_json(
        run.metrics_path,
        {
            "pretrained": {"accuracy": 0.5},
            "finetuned": {"accuracy": 0.9},
            "train": {"train_samples_per_s": 80.0},
        },
    )
    atomic_write_json(run.status_path, {"state": "finished", "started": 100.0, "ended": 160.0})
    row = Run.load(run.path).summary()
    assert row["accuracy_before"] == 0.5 and row["accuracy_after"] == 0.9
    assert row["duration_s"] == 60.0 and row["samples_per_s"] == 80.0
    assert row["model"] == "default" and row["dataset"] == "demo"


# --- the worker lock: one worker a run --------------------------------------------------------

def test_the_worker_lock_is_held_by_one_process_until_it_dies(bertui_home):
    run = create_run({"name": "locked"})
    holder = hold_lock(run.path)
    try:
        assert process.lock_run(run.path) is None
        start = time.monotonic()
        assert process.lock_run(run.path, wait=0.3) is None
        assert time.monotonic() - start >= 0.3
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
        holder.wait()
    fd = process.lock_run(run.path)
    assert fd is not None
    os.close(fd)
    # A forked child (a DataLoader worker) does not inherit it: once the worker is gone, its
    # run is free even while such a child lingers.
    holder = hold_lock(run.path, "fork")
    assert process.lock_run(run.path) is None
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait()
    fd = process.lock_run(run.path)
    assert fd is not None
    os.close(fd)


def hung_worker_status(run: Run, pid: int) -> None:
    """status.json as a worker leaves it when it hangs: running, its heartbeat minutes old."""
    old = time.time() - 10 * runs.STALE_AFTER_SECONDS
    atomic_write_json(run.status_path, {"state": "running", "pid": pid, "heartbeat": old})
    assert run.refresh().state == "lost"  # what clients show, and offer to resume


def test_a_run_whose_worker_lives_on_is_neither_resumed_nor_deleted(bertui_home, monkeypatch):
    from bertui.core.launch import resume_run

    spawned = []
    monkeypatch.setattr("bertui.core.launch.spawn", lambda path, resume, **_: spawned.append(path))
    # how long a client waits for a worker that is ending
    monkeypatch.setattr("bertui.core.process.WORKER_EXIT_SECONDS", 0.5)
    run = create_run({"name": "hung"})
    holder = hold_lock(run.path)
    try:
        hung_worker_status(run, holder.pid)
        before = run.status_path.read_bytes()
        with pytest.raises(RunError, match=f"still has a live worker \\(pid {holder.pid}\\)"):
            resume_run(run)
        with pytest.raises(RunError, match="still has a live worker"):
            delete_run(run)
        assert run.status_path.read_bytes() == before and not spawned
    finally:
        holder.kill()
        holder.wait()
    resume_run(run)  # its worker gone, the run resumes
    assert spawned == [run.path] and run.refresh().status["state"] == "queued"


def test_two_resumes_at_once_start_one_worker(bertui_home, monkeypatch):
    """A double key press in the TUI (two threads) or two clients: one resumes, one is told."""
    import threading

    from bertui.core.launch import resume_run

    spawned = []
    monkeypatch.setattr("bertui.core.launch.spawn", lambda path, resume, **_: spawned.append(path))
    run = create_run({"name": "twice"})
    atomic_write_json(run.status_path, {"state": "cancelled"})
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def resume() -> None:
        barrier.wait()
        try:
            resume_run(Run.load(run.path))
            outcomes.append("resumed")
        except RunError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("resumed") == 1 and len(spawned) == 1, outcomes
    refused = next(o for o in outcomes if o != "resumed")
    assert "is queued; only cancelled, lost or failed runs resume" in refused


def test_a_second_worker_for_a_run_exits_without_writing(bertui_home):
    run = create_run({"name": "taken"})
    holder = hold_lock(run.path)
    try:
        before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
        proc = subprocess.run([sys.executable, "-m", "bertui.worker", str(run.path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "already has a worker" in proc.stderr and "Traceback" not in proc.stderr
        after = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
        assert after == before
    finally:
        holder.kill()
        holder.wait()


def test_list_runs_leaves_out_what_it_cannot_read(bertui_home, tmp_path, monkeypatch):
    mine = create_run({"name": "mine"})
    theirs = create_run({"name": "theirs"})  # as if another user's (0700: EACCES for us)
    real_exists = Path.exists

    def exists(path, *args, **kwargs):
        if path == theirs.path / "config.toml":
            raise PermissionError(13, "Permission denied", str(path))
        return real_exists(path, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    assert [r.id for r in list_runs()] == [mine.id]
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="cannot read the runs folder .*: Not a directory"):
        list_runs(blocker / "home")



def test_cancel_never_signals_a_pid_of_another_host(bertui_home):
    """A shared runs folder (an NFS home): the run's pid belongs to the other machine; here it
    may be any process of ours (this test's own pid stands in for one)."""
    import signal

    from bertui.core.launch import cancel_run

    run = create_run({"name": "elsewhere"})
    atomic_write_json(run.status_path, {"state": "running", "pid": os.getpid(),
                                        "host": "gpu-box-a", "heartbeat": time.time()})
    assert run.refresh().state == "running"
    got = []
    previous = signal.signal(signal.SIGTERM, lambda *_: got.append("SIGTERM"))
    try:
        with pytest.raises(RunError, match="runs on gpu-box-a; cancel it there"):
            cancel_run(run)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not got


def test_a_filesystem_without_posix_locks_goes_unlocked(bertui_home, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    run = create_run({"name": "nfs"})
    monkeypatch.setattr(fcntl, "lockf", no_locks)
    fd = process.lock_run(run.path)
    assert isinstance(fd, int) and fd >= 0  # bertui goes on by pids and heartbeats
    os.close(fd)


def test_a_resume_during_a_delete_does_not_start_a_worker(bertui_home, monkeypatch):
    """The app deletes in a thread: a resume meanwhile (same process, so the POSIX lock does
    not keep it out) waits for the delete and is told the run is gone."""
    import shutil
    import threading

    from bertui.core.launch import resume_run

    spawned = []
    monkeypatch.setattr("bertui.core.launch.spawn", lambda path, resume, **_: spawned.append(path))
    run = create_run({"name": "going"})
    atomic_write_json(run.status_path, {"state": "cancelled"})
    removing = threading.Event()
    real_rmtree = shutil.rmtree

    def slow_rmtree(path, *args, **kwargs):
        removing.set()
        time.sleep(0.3)
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", slow_rmtree)
    deleting = threading.Thread(target=delete_run, args=(Run.load(run.path),))
    deleting.start()
    assert removing.wait(10)
    with pytest.raises(RunError, match="no longer exists"):
        resume_run(Run.load(run.path))
    deleting.join()
    assert not run.path.exists() and not spawned
