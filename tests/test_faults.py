"""Faults a run must survive, injected for real: killed workers, cancels, dying clients, an
unwritable home, failed writes, torn event lines, concurrent runs and concurrent run creation.

The runs use the tiny random BERT on the demo data with a checkpoint every ~0.3 s. A test that
stops a worker at a training step has the worker pause there (``BERTUI_TEST_PAUSE_AT_STEP``, see
bertui.worker) and signals it while it waits, so where it stops never depends on the CPU's
speed. Nothing sleeps for a fixed long time: everything polls with a deadline.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bertui.core import runs as runs_mod
from bertui.core.events import EventReader, read_events
from bertui.core.runs import (
    ACTIVE_STATES,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVENTS_FILE,
    LOG_FILE,
    METRICS_FILE,
    MODEL_DIR,
    STATUS_FILE,
    Run,
    atomic_write_json,
    create_run,
    last_checkpoint,
    pid_alive,
)
from bertui.worker import PAUSE_ENV
from conftest import bertui_cmd, run_bertui

RUN_TIMEOUT = 180.0
FAST_CHECKPOINTS = ("--checkpoint-minutes", "0.005")  # a checkpoint every 0.3 s of training
STEPS_PER_EPOCH = 360 // 8  # the demo's train split at --batch-size 8


# --- helpers ---------------------------------------------------------------------------------


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_done(path: Path, timeout: float = RUN_TIMEOUT) -> str:
    """Poll a run until it is no longer queued or running; returns its state."""
    run = Run.load(path)

    def done():
        state = run.refresh().state
        return state if state not in ACTIVE_STATES else None

    try:
        return wait_for(done, timeout, f"run {path.name} to end")
    except AssertionError:
        log_path = path / LOG_FILE
        log = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        raise AssertionError(
            f"run {path.name} still {run.state} after {timeout} s\n{log}"
        ) from None


def train_steps(path: Path) -> list[int]:
    return [e["step"] for e in read_events(path / EVENTS_FILE) if e.get("type") == "train"]


def pause_at(step: int) -> dict[str, str]:
    """The environment in which a worker pauses at the end of training step ``step``."""
    return {PAUSE_ENV: str(step)}


def wait_paused(path: Path, step: int, timeout: float = RUN_TIMEOUT) -> tuple[int, float]:
    """Wait until the run's worker pauses at ``step`` (started with ``pause_at(step)``); its pid
    and process start time. It then waits there for SIGTERM (cancel at that step), SIGKILL or
    SIGUSR1 (go on)."""
    run = Run.load(path)

    def paused():
        status = runs_mod.read_json(path / STATUS_FILE, {}) or {}
        if status.get("state") == "running" and status.get("paused_at_step") == step:
            return int(status["pid"]), float(status["pid_started"])
        if run.refresh().state not in ACTIVE_STATES:
            log = (path / LOG_FILE).read_text(errors="replace")[-3000:]
            raise AssertionError(f"run {path.name} ended ({run.state}) before step {step}\n{log}")
        return None

    return wait_for(paused, timeout, f"the worker of {path.name} to pause at step {step}")


def go_on(pid: int) -> None:
    """Let a paused worker train on."""
    os.kill(pid, signal.SIGUSR1)


def start_detached(home: Path, model: Path, *extra: str, env: dict | None = None) -> Path:
    proc = run_bertui(
        "train",
        "--detach",
        "--model",
        str(model),
        "--dataset",
        "demo",
        *FAST_CHECKPOINTS,
        *extra,
        home=home,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    path = home / "runs" / run_id
    assert (path / CONFIG_FILE).exists(), proc.stdout
    return path


def runs_json(home: Path) -> dict[str, dict]:
    proc = run_bertui("runs", "--json", home=home, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {row["id"]: row for row in json.loads(proc.stdout)}


def assert_complete(path: Path, probe: bool = True) -> dict:
    metrics = json.loads((path / METRICS_FILE).read_text())
    for key in ("pretrained", "finetuned", "train"):
        assert metrics.get(key), f"metrics.json has no {key}: {sorted(metrics)}"
    if probe:
        assert metrics.get("probe"), "metrics.json has no probe"
    assert metrics["finetuned"]["accuracy"] is not None
    assert (path / MODEL_DIR / "config.json").exists()
    assert list((path / MODEL_DIR).glob("*.safetensors"))
    return metrics


def load_model(path: Path):
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(path / MODEL_DIR), device="cpu")
    out = clf(["a lovely evening", "a dreadful evening"])
    assert len(out) == 2 and all("label" in o for o in out)
    return out


# --- (a) the worker is SIGKILLed mid-training --------------------------------------------------


def test_worker_sigkill_then_resume(tiny_model, bertui_home):
    # Killed in the second epoch: the first epoch's end (at least) is saved to resume from.
    kill_at = STEPS_PER_EPOCH + 5
    path = start_detached(bertui_home, tiny_model, "--epochs", "2", "--batch-size", "8",
                          env=pause_at(kill_at))
    pid, started = wait_paused(path, kill_at)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid, started), 30, "the killed worker to be gone")
    killed_at = max(train_steps(path))
    assert killed_at == kill_at - 1  # paused before its step's log line
    before = (path / EVENTS_FILE).read_bytes()
    checkpoint = last_checkpoint(path / CHECKPOINTS_DIR)
    assert checkpoint is not None

    # Clients see it as lost, with resume offered.
    row = wait_for(
        lambda: (r := runs_json(bertui_home).get(path.name)) and r["status"] == "lost" and r,
        30,
        "bertui runs to show the run as lost",
    )
    assert row["accuracy_after"] is None

    proc = run_bertui("resume", path.name, "--detach", home=bertui_home, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == path.name
    assert wait_done(path) == "finished", (path / LOG_FILE).read_text()[-3000:]

    after = (path / EVENTS_FILE).read_bytes()
    assert after.startswith(before), "events written before the kill were changed or lost"
    events = read_events(path / EVENTS_FILE)
    resumes = [e for e in events if e["type"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["checkpoint"] == str(checkpoint)
    starts = [e for e in events if e["type"] == "run_start"]
    assert starts[-1]["resumed_from"] == str(checkpoint)
    ckpt_step = int(checkpoint.name.split("-")[1])
    assert ckpt_step <= killed_at
    # Training went on from the checkpoint: the steps after it were logged (again) after resume.
    resume_index = events.index(resumes[0])
    later = [e["step"] for e in events[resume_index:] if e["type"] == "train"]
    assert later and min(later) == ckpt_step + 1
    total = starts[0]["total_steps"]
    assert set(train_steps(path)) == set(range(1, total + 1))

    metrics = assert_complete(path)
    assert metrics["train"]["resumed"] is True
    assert metrics["train"]["steps"] == total
    status = json.loads((path / STATUS_FILE).read_text())
    assert status["state"] == "finished" and status["resumed"] is True
    assert runs_json(bertui_home)[path.name]["status"] == "finished"
    load_model(path)


# --- (b) cancel, then resume -------------------------------------------------------------------


def test_cancel_saves_a_checkpoint_and_resumes(tiny_model, bertui_home):
    path = start_detached(
        bertui_home, tiny_model, "--epochs", "2", "--batch-size", "8", "--no-probe",
        env=pause_at(5),
    )
    pid, started = wait_paused(path, 5)
    proc = run_bertui("cancel", path.name, "--wait", "60", home=bertui_home, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert Run.load(path).state == "cancelled"
    wait_for(lambda: not pid_alive(pid, started), 30, "the cancelled worker to exit")
    checkpoint = last_checkpoint(path / CHECKPOINTS_DIR)
    assert checkpoint is not None and checkpoint.name == "checkpoint-5"  # where it was stopped
    events = read_events(path / EVENTS_FILE)
    assert events[-1]["type"] == "run_end" and events[-1]["state"] == "cancelled"
    assert runs_json(bertui_home)[path.name]["status"] == "cancelled"

    proc = run_bertui(
        "resume", path.name, "--quiet", "--json", home=bertui_home, timeout=RUN_TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert metrics["finetuned"] and metrics["train"]["resumed"] is True
    assert Run.load(path).state == "finished"
    events = read_events(path / EVENTS_FILE)
    assert [e for e in events if e["type"] == "resume"][0]["checkpoint"] == str(checkpoint)
    assert_complete(path, probe=False)


def test_a_hung_worker_keeps_its_run(tiny_model, bertui_home):
    """A worker that stops answering (SIGSTOP here; a hung filesystem or a suspended VM in
    life) shows as lost once its heartbeat is minutes old, but it still holds the run's lock:
    resume is refused in one line, nothing is written, and the worker, woken, finishes alone."""
    path = start_detached(
        bertui_home, tiny_model, "--epochs", "2", "--batch-size", "8", "--no-probe",
        env=pause_at(3),
    )
    pid, _ = wait_paused(path, 3)
    os.kill(pid, signal.SIGSTOP)
    try:
        status = json.loads((path / STATUS_FILE).read_text())
        status["heartbeat"] -= 10 * runs_mod.STALE_AFTER_SECONDS
        atomic_write_json(path / STATUS_FILE, status)
        assert runs_json(bertui_home)[path.name]["status"] == "lost"
        before = (path / STATUS_FILE).read_bytes()
        proc = run_bertui("resume", path.name, "--detach", home=bertui_home, timeout=120)
        line = _assert_one_line_exit_2(proc, "still has a live worker")
        assert f"pid {pid}" in line
        assert (path / STATUS_FILE).read_bytes() == before
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: Run.load(path).state != "lost", 30, "the woken worker's heartbeat")
    go_on(pid)
    assert wait_done(path) == "finished", (path / LOG_FILE).read_text()[-3000:]
    events = read_events(path / EVENTS_FILE)
    assert not [e for e in events if e["type"] == "resume"]
    assert len([e for e in events if e["type"] == "run_start"]) == 1
    assert_complete(path, probe=False)


@pytest.mark.parametrize("stops", [
    # cancelled in the first epoch and again in the second (checkpoints every 0.3 s)
    (("term", 12), ("term", STEPS_PER_EPOCH + 9)),
    # killed in the second epoch with only the first epoch's end saved, so it resumes from an
    # epoch boundary; then cancelled later in that epoch and resumed again
    (("kill", STEPS_PER_EPOCH + 5), ("term", STEPS_PER_EPOCH + 25)),
], ids=["mid-epoch-twice", "from-an-epoch-boundary"])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tiny_model, bertui_home, stops):
    """Stopped and resumed twice, a run trains on the same batches in the same order, with the
    same dropout masks, as one left alone: the fine-tuned weights are the same. (The Trainer
    draws each epoch's order from torch's generator, whose state a resumed process would
    otherwise not share: rows trained twice, others never.) The worker pauses at each step the
    test names and is signalled there (SIGTERM as `bertui cancel` sends it: it stops at
    exactly that step, its checkpoint saved; SIGKILL: only the checkpoints before it remain)."""
    from safetensors.torch import load_file

    options = ("--epochs", "2", "--batch-size", "8", "--no-probe")
    alone = run_bertui("train", "--model", str(tiny_model), "--dataset", "demo", *options,
                       "--quiet", "--json", home=bertui_home, timeout=RUN_TIMEOUT)
    assert alone.returncode == 0, alone.stderr
    every = () if stops[0][0] == "term" else ("--checkpoint-minutes", "10")
    path = start_detached(bertui_home, tiny_model, *options, *every, env=pause_at(stops[0][1]))
    for (how, step), then in zip(stops, [*stops[1:], None]):
        pid, started = wait_paused(path, step)
        os.kill(pid, signal.SIGTERM if how == "term" else signal.SIGKILL)
        wait_for(lambda p=pid, s=started: not pid_alive(p, s), 60, "the stopped worker to exit")
        proc = run_bertui("resume", path.name, "--detach", home=bertui_home, timeout=120,
                          env=pause_at(then[1]) if then else None)
        assert proc.returncode == 0, proc.stderr
    assert wait_done(path) == "finished", (path / LOG_FILE).read_text()[-3000:]
    resumes = [e for e in read_events(path / EVENTS_FILE) if e["type"] == "resume"]
    assert len(resumes) == 2 and all(e["checkpoint"] for e in resumes)
    resumed_from = [int(e["checkpoint"].rsplit("-", 1)[1]) for e in resumes]
    # A cancel saves the step it stops at; a kill leaves the first epoch's end.
    assert resumed_from == [step if how == "term" else STEPS_PER_EPOCH for how, step in stops]

    reference = sorted((bertui_home / "runs").iterdir())[0]
    assert reference != path
    a = load_file(str(reference / MODEL_DIR / "model.safetensors"))
    b = load_file(str(path / MODEL_DIR / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, f"the resumed run's weights differ by up to {worst}"
    ma, mb = json.loads((reference / METRICS_FILE).read_text()), assert_complete(path, False)
    assert ma["finetuned"]["accuracy"] == mb["finetuned"]["accuracy"]


def test_a_resume_on_relabelled_data_fails_in_one_line(tiny_model, bertui_home, tmp_path):
    """The checkpoint's head rows mean the labels of the run's start: a resume on data whose
    labels changed is refused (the run fails, its reason says why), and it resumes once the
    data is back."""
    rows = [(f"a {'fine' if i % 2 else 'poor'} thing number {i}", "good" if i % 2 else "bad")
            for i in range(120)]
    data = tmp_path / "d.csv"
    original = "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows)
    data.write_text(original)
    path = start_detached(bertui_home, tiny_model, "--dataset", str(data), "--epochs", "2",
                          "--batch-size", "4", "--no-probe", env=pause_at(3))
    wait_paused(path, 3)
    proc = run_bertui("cancel", path.name, "--wait", "60", home=bertui_home, timeout=90)
    assert proc.returncode == 0, proc.stderr
    data.write_text(original.replace(",good", ",positive").replace(",bad", ",negative"))
    proc = run_bertui("resume", path.name, "--detach", home=bertui_home, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert wait_done(path) == "failed"
    error = json.loads((path / STATUS_FILE).read_text())["error"]
    assert "the data's labels changed since the run was created (bad, good then, negative, " \
           "positive now)" in error
    data.write_text(original)
    proc = run_bertui("resume", path.name, "--detach", home=bertui_home, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert wait_done(path) == "finished", (path / LOG_FILE).read_text()[-3000:]


# --- (c) the client dies -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_client_dies_worker_finishes(tiny_model, bertui_home, tmp_path, sig):
    env = {**os.environ, "BERTUI_HOME": str(bertui_home), "HF_HUB_OFFLINE": "1", **pause_at(3)}
    with open(tmp_path / "client.err", "wb") as err:
        client = subprocess.Popen(
            bertui_cmd(
                "train",
                "--model",
                str(tiny_model),
                "--dataset",
                "demo",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--no-probe",
                *FAST_CHECKPOINTS,
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            start_new_session=True,
            # A terminal's client has SIGHUP's default action, even if this test runner was
            # started under nohup (which would otherwise be inherited).
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
        )
    try:
        runs_root = bertui_home / "runs"
        path = wait_for(
            lambda: runs_root.exists() and next(runs_root.iterdir(), None),
            120,
            "the client to create its run",
        )
        pid, _ = wait_paused(path, 3)
        assert client.poll() is None, "the client ended early"
        os.killpg(client.pid, sig)  # the whole terminal session goes, as when SSH drops
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode != 0
    assert Run.load(path).state == "running"
    go_on(pid)
    assert wait_done(path) == "finished"
    assert_complete(path, probe=False)


# --- (d) an unwritable home --------------------------------------------------------------------


def _assert_one_line_exit_2(proc: subprocess.CompletedProcess, *says: str) -> str:
    line = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr
    assert line and "\n" not in line and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert any(s in line for s in says), line
    return line


def test_home_under_a_regular_file(tiny_model, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    home = blocker / "bertui"
    proc = run_bertui(
        "train", "--detach", "--model", str(tiny_model), "--dataset", "demo", home=home, timeout=120
    )
    _assert_one_line_exit_2(proc, "cannot create the runs folder", "Not a directory")
    proc = run_bertui("runs", home=home, timeout=60)
    _assert_one_line_exit_2(proc, "Not a directory", "cannot")
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root ignores directory permissions (the "
    "regular-file case above covers an unusable home)",
)
def test_home_without_write_permission(tiny_model, tmp_path):
    home = tmp_path / "ro-home"
    (home / "runs").mkdir(parents=True)
    home.chmod(0o500)
    (home / "runs").chmod(0o500)
    try:
        proc = run_bertui(
            "train",
            "--detach",
            "--model",
            str(tiny_model),
            "--dataset",
            "demo",
            home=home,
            timeout=120,
        )
        _assert_one_line_exit_2(proc, "cannot", "permission denied", "Permission denied")
        assert list((home / "runs").iterdir()) == []
    finally:
        (home / "runs").chmod(0o700)
        home.chmod(0o700)


# --- (e) status.json / metrics.json are never half-written --------------------------------------


@pytest.mark.parametrize("where", ["replace", "fsync", "write"])
def test_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch, where):
    target = tmp_path / "status.json"
    atomic_write_json(target, {"state": "running", "step": 7})
    old = target.read_bytes()

    def disk_full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "replace":
        monkeypatch.setattr(runs_mod.os, "replace", disk_full)
    elif where == "fsync":
        monkeypatch.setattr(runs_mod.os, "fsync", disk_full)
    else:
        real_fdopen = os.fdopen

        class FullFile:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, text):
                self.fh.write(text[: len(text) // 2])
                self.fh.flush()
                disk_full()

        monkeypatch.setattr(
            runs_mod.os, "fdopen", lambda fd, *a, **k: FullFile(real_fdopen(fd, *a, **k))
        )
    with pytest.raises(OSError) as info:
        atomic_write_json(target, {"state": "finished", "step": 99, "pad": "x" * 100_000})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == old
    assert json.loads(target.read_text()) == {"state": "running", "step": 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"], "a temp file was left"


def test_unserialisable_metrics_leave_no_file(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"finetuned": {"accuracy": 0.9}})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"finetuned": object()})
    assert json.loads(target.read_text()) == {"finetuned": {"accuracy": 0.9}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


# --- (f) a reader survives a half-written last event line ---------------------------------------


def test_reader_survives_a_half_written_last_line(finished_run, bertui_home):
    path = bertui_home / "runs" / finished_run.name
    shutil.copytree(finished_run, path, ignore=shutil.ignore_patterns(CHECKPOINTS_DIR, MODEL_DIR))
    events_path = path / EVENTS_FILE
    original = read_events(events_path)
    assert original

    half = b'{"v":1,"type":"progress","time":1.0,"step":9999,"total_st'
    with open(events_path, "ab") as fh:
        fh.write(half)
    reader = EventReader(events_path)
    assert reader.read_new() == original
    assert reader.bad_lines == 0
    assert reader.read_new() == []  # the torn line is left for later, not misread
    row = runs_json(bertui_home)[path.name]
    assert row["status"] == "finished" and row["accuracy_after"] is not None

    # The writer finishes the line: the reader picks up exactly that event.
    with open(events_path, "ab") as fh:
        fh.write(b'eps":10000}\n')
    new = reader.read_new()
    assert [(e["type"], e["step"]) for e in new] == [("progress", 9999)]

    # A torn line in the middle (a crash, then more appends) is skipped and counted.
    with open(events_path, "ab") as fh:
        fh.write(b'{"v":1,"type":"tra\n{"v":1,"type":"log","time":2.0,"step":0,"message":"x"}\n')
    new = reader.read_new()
    assert [e["type"] for e in new] == ["log"] and reader.bad_lines == 1
    assert len(read_events(events_path)) == len(original) + 2
    assert runs_json(bertui_home)[path.name]["status"] == "finished"


# --- (g) two runs at once -----------------------------------------------------------------------


def test_two_runs_at_once(tiny_model, bertui_home):
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(
                start_detached,
                bertui_home,
                tiny_model,
                "--epochs",
                "1",
                "--no-probe",
                "--name",
                f"twin-{i}",
            )
            for i in range(2)
        ]
        paths = [f.result() for f in futures]
    assert paths[0].name != paths[1].name

    # While both run, their status.json and metrics.json are always whole JSON.
    torn: list[str] = []
    stop = threading.Event()

    def read_all():
        while not stop.is_set():
            for p in paths:
                for name in (STATUS_FILE, METRICS_FILE):
                    try:
                        json.loads((p / name).read_text())
                    except FileNotFoundError:
                        if name == STATUS_FILE:
                            torn.append(f"{p.name}/{name} missing")
                    except ValueError:
                        torn.append(f"{p.name}/{name}")
            time.sleep(0.01)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    try:
        states = [wait_done(p) for p in paths]
    finally:
        stop.set()
        reader.join(5)
    assert states == ["finished", "finished"]
    assert torn == []
    for p in paths:
        assert_complete(p, probe=False)
    rows = runs_json(bertui_home)
    assert {rows[p.name]["name"] for p in paths} == {"twin-0", "twin-1"}


# --- (h) many concurrent create_run calls never collide -----------------------------------------


def test_concurrent_create_run_never_collides(bertui_home):
    n = 64
    barrier = threading.Barrier(16)

    def make(i: int) -> str:
        if i < 16:
            barrier.wait()  # the first 16 start in the very same instant
        return create_run({"name": f"r{i}", "model": {"spec": "default"}}, bertui_home).id

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(make, range(n)))
    assert len(set(ids)) == n
    dirs = [p for p in (bertui_home / "runs").iterdir() if p.is_dir()]
    assert len(dirs) == n
    for p in dirs:
        assert (p / CONFIG_FILE).exists()
        assert json.loads((p / STATUS_FILE).read_text())["state"] == "queued"
        assert (p.stat().st_mode & 0o777) == 0o700
    assert not [p for p in (bertui_home / "runs").rglob("*.tmp")]
