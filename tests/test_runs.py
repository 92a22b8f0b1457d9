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

from bertui.core import runs
from bertui.core.runs import (
    EventReader,
    Run,
    RunError,
    append_event,
    atomic_write_json,
    create_run,
    find_run,
    list_runs,
    make_event,
)


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
        runs.delete_run(run.refresh())
    atomic_write_json(run.status_path, {"state": "finished"})
    runs.delete_run(run.refresh())
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
