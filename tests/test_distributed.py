"""One run on several processes: real torchrun, two CPU processes over gloo, the tiny BERT.

Each test starts ``bertui train --nproc 2`` (torchrun --standalone --nproc-per-node 2 over
``bertui.worker``) on 160 demo rows. What must hold: a world of 2 with the global batch in
run_start, one writer (one event log, no duplicated line), the baselines of a one-process run,
a model that ``pipeline()`` loads; a cancel that stops both ranks at one step and resumes; a
SIGKILLed rank that fails the run within the stated bound, named, with no process left.
Where a test stops a run at a step, every rank pauses there (``BERTUI_TEST_PAUSE_AT_STEP``).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from test_faults import wait_for

from bertui.core.distributed import (
    CANCEL_FILE,
    FAILURE_BOUND_SECONDS,
    PROCESS_GROUP_TIMEOUT_SECONDS,
)
from bertui.core.events import read_events
from bertui.core.runs import ACTIVE_STATES, EVENTS_FILE, LOG_FILE, Run, last_checkpoint, read_json
from bertui.worker import PAUSE_ENV
from conftest import run_bertui

ROWS = ("--max-train-samples", "160", "--max-eval-samples", "60", "--batch-size", "8")
STEPS = 160 // (8 * 2)  # an epoch of 160 rows at 8 a process on 2 processes
RUN_TIMEOUT = 240.0

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="torchrun needs POSIX here")


def log_tail(path: Path) -> str:
    log = path / LOG_FILE
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no worker.log)"


def start(home: Path, model: Path, *extra: str, env: dict | None = None) -> Path:
    proc = run_bertui("train", "--detach", "--model", str(model), "--dataset", "demo",
                      "--epochs", "1", *ROWS, *extra, home=home, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return home / "runs" / proc.stdout.strip()


def wait_done(path: Path, timeout: float = RUN_TIMEOUT) -> str:
    run = Run.load(path)
    try:
        return wait_for(lambda: (s := run.refresh().state) not in ACTIVE_STATES and s, timeout,
                        f"run {path.name} to end")
    except AssertionError:
        raise AssertionError(f"run {path.name} still {run.state}\n{log_tail(path)}") from None


def wait_paused(path: Path, step: int) -> dict:
    """The status once every rank is paused at ``step`` (rank 0 says so; the ranks are in)."""
    def paused():
        status = read_json(path / "status.json", {}) or {}
        if status.get("paused_at_step") == step and len(status.get("ranks") or []) == 2:
            return status
        if Run.load(path).state not in ACTIVE_STATES:
            raise AssertionError(f"the run ended before step {step}\n{log_tail(path)}")
        return None

    return wait_for(paused, RUN_TIMEOUT, f"the ranks to pause at step {step}")


def processes_of(status: dict) -> list[psutil.Process]:
    """The run's processes still here: every rank and torchrun's agent."""
    found = []
    pids = [r["pid"] for r in status.get("ranks") or []] + [status.get("agent_pid"),
                                                              status.get("pid")]
    for pid in filter(None, pids):
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def metrics_of(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text())


def test_two_processes_train_as_one_run(tiny_model, bertui_home):
    two = start(bertui_home, tiny_model, "--nproc", "2", "--name", "two")
    one = start(bertui_home, tiny_model, "--name", "one")
    assert wait_done(two) == "finished", log_tail(two)
    assert wait_done(one) == "finished", log_tail(one)

    # One world of two, trained together: the global batch is both processes' (without
    # gloo each would train alone, with 160 / 8 = 20 steps).
    events = read_events(two / EVENTS_FILE)
    run_start = next(e for e in events if e["type"] == "run_start")
    assert run_start["world_size"] == 2 and run_start["global_batch_size"] == 16
    assert run_start["total_steps"] == STEPS
    metrics = metrics_of(two)
    assert metrics["train"]["steps"] == STEPS and metrics["train"]["world_size"] == 2
    one_start = next(e for e in read_events(one / EVENTS_FILE) if e["type"] == "run_start")
    assert one_start["world_size"] == 1 and one_start["total_steps"] == 2 * STEPS

    # One writer: one event log, no line twice, one run_end; every rank's output in
    # worker.log with its prefix.
    lines = (two / EVENTS_FILE).read_text().splitlines()
    assert len(lines) == len(set(lines))
    assert [e["type"] for e in events].count("run_start") == 1
    assert [e["type"] for e in events].count("run_end") == 1
    log = (two / LOG_FILE).read_text()
    assert "[rank0]: " in log and "[rank1]: " in log
    status = read_json(two / "status.json")
    assert status["world_size"] == 2 and [r["rank"] for r in status["ranks"]] == [0, 1]

    # The baselines (no training) are the one-process run's, to the last digit.
    single = metrics_of(one)
    for arm in ("pretrained", "probe"):
        for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix"):
            assert metrics[arm][key] == single[arm][key], (arm, key)
    assert metrics["eval_rows"] == single["eval_rows"] == 60
    assert metrics["finetuned"]["accuracy"] is not None

    from transformers import pipeline

    clf = pipeline("text-classification", model=str(two / "model"), device="cpu")
    out = clf(["a lovely evening", "a dreadful evening"])
    assert len(out) == 2 and all(o["label"] in ("negative", "positive") for o in out)
    wait_for(lambda: not processes_of(status), 30, "the ranks and the agent to exit")


def test_cancel_stops_every_rank_at_one_step_and_resumes(tiny_model, bertui_home):
    path = start(bertui_home, tiny_model, "--nproc", "2", env={PAUSE_ENV: "3"})
    status = wait_paused(path, 3)
    t0 = time.monotonic()
    proc = run_bertui("cancel", path.name, home=bertui_home, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert wait_done(path, 60) == "cancelled", log_tail(path)
    wait_for(lambda: not processes_of(status), 60, "every rank and the agent to exit")
    assert time.monotonic() - t0 < 60
    # Both ranks stopped at the step they were at, and saved it together.
    checkpoint = last_checkpoint(path / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "checkpoint-3"
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {
        "rng_state_0.pth", "rng_state_1.pth"}
    assert (path / CANCEL_FILE).exists()
    assert read_json(path / "status.json")["error"] is None
    # A cancel is no failure for torchrun either (the ranks exit 0): no "FAILED" report.
    assert "ChildFailedError" not in (path / LOG_FILE).read_text()

    # Resumed on one process: the checkpoint of two goes on, and the log says the world
    # changed (its batches are not the ones an uninterrupted run would have drawn).
    proc = run_bertui("resume", path.name, "--nproc", "1", "--detach", home=bertui_home,
                      timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert wait_done(path) == "finished", log_tail(path)
    assert not (path / CANCEL_FILE).exists()
    events = read_events(path / EVENTS_FILE)
    assert [e["checkpoint"] for e in events if e["type"] == "resume"] == [str(checkpoint)]
    starts = [e for e in events if e["type"] == "run_start"]
    assert [s["world_size"] for s in starts] == [2, 1]
    assert any("world size changed from 2 to 1" in e.get("message", "") for e in events)
    assert metrics_of(path)["train"]["steps"] == 2 * STEPS  # 160 rows at 8 a step
    done = read_json(path / "status.json")
    assert done["world_size"] == 1 and done["ranks"] is None
    wait_for(lambda: not processes_of(done), 30, "the resumed ranks and agent to exit")


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_rank_ends_the_run_in_bounded_time(tiny_model, bertui_home, victim):
    """Rank 1 killed: rank 0 records ``failed``, naming it. Rank 0 killed: nobody writes the
    run any more; clients see it ``lost`` (its lock went with it). Both resumable, and both
    within the bound the README states, with no process left."""
    path = start(bertui_home, tiny_model, "--nproc", "2", env={PAUSE_ENV: "3"})
    status = wait_paused(path, 3)
    rank = next(r for r in status["ranks"] if r["rank"] == victim)
    t0 = time.monotonic()
    os.kill(rank["pid"], signal.SIGKILL)
    state = wait_done(path, FAILURE_BOUND_SECONDS)
    wait_for(lambda: not processes_of(status), FAILURE_BOUND_SECONDS,
             "every rank and the agent to exit")
    took = time.monotonic() - t0
    print(f"rank {victim} killed: the run {state} and its processes gone in {took:.1f} s")
    assert took < FAILURE_BOUND_SECONDS < PROCESS_GROUP_TIMEOUT_SECONDS
    if victim == 0:
        assert state == "lost", log_tail(path)
        return
    assert state == "failed", log_tail(path)
    error = read_json(path / "status.json")["error"]
    assert f"rank {victim} (pid {rank['pid']}) died" in error, error
    events = read_events(path / EVENTS_FILE)
    assert events[-1]["type"] == "run_end" and events[-1]["state"] == "failed"
    assert events[-1]["error"] == error
    # Resumable, on as many processes as before.
    proc = run_bertui("resume", path.name, "--detach", home=bertui_home, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert wait_done(path) == "finished", log_tail(path)
    assert metrics_of(path)["train"]["steps"] == STEPS
    done = read_json(path / "status.json")
    wait_for(lambda: not processes_of(done), 30, "the resumed ranks and agent to exit")


@pytest.mark.parametrize("flags, says", [
    (("--nnodes", "2"), "--rdzv-endpoint must be set for a multi-node run"),
    (("--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "node0:29400"),
     "--node-rank must be below --nnodes 2"),
    (("--nnodes", "2", "--rdzv-endpoint", "node0"), "--rdzv-endpoint must be HOST:PORT"),
    (("--nproc", "0",), "--nproc"),
])
def test_bad_launch_options_get_one_line(tiny_model, bertui_home, flags, says):
    proc = run_bertui("train", "--model", str(tiny_model), "--dataset", "demo", *flags,
                      home=bertui_home, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (bertui_home / "runs").exists() or not list((bertui_home / "runs").iterdir())


def test_the_torchrun_command_of_one_and_of_two_machines(tmp_path):
    from bertui.core.distributed import LOG_PREFIX, torchrun_command, worker_env
    from bertui.core.schema import RunOptions

    one = torchrun_command(tmp_path, RunOptions(nproc=2), resume=True)
    assert one[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in one
    assert one[one.index("--nproc-per-node") + 1] == "2"
    assert one[one.index("--max-restarts") + 1] == "0"
    assert one[-4:] == ["-m", "bertui.worker", str(tmp_path), "--resume"]
    two = torchrun_command(tmp_path, RunOptions(nproc=4, nnodes=2, node_rank=1,
                                                rdzv_endpoint="node0:29400"), resume=False)
    assert "--standalone" not in two
    for flag, value in (("--nnodes", "2"), ("--node-rank", "1"), ("--rdzv-backend", "c10d"),
                        ("--rdzv-endpoint", "node0:29400"), ("--nproc-per-node", "4")):
        assert two[two.index(flag) + 1] == value
    env: dict[str, str] = {"OMP_NUM_THREADS": "3"}
    worker_env(RunOptions(nproc=2), env)
    assert env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] == LOG_PREFIX
    assert env["GLOO_SOCKET_IFNAME"] == "lo" and env["OMP_NUM_THREADS"] == "3"  # set wins
    env = {}
    worker_env(RunOptions(nproc=2, nnodes=2, rdzv_endpoint="node0:1"), env)
    assert "GLOO_SOCKET_IFNAME" not in env and int(env["OMP_NUM_THREADS"]) >= 1


def test_the_gpus_cuda_shows_are_told_by_index_or_uuid():
    from bertui.core.telemetry import choose_visible

    uuids = ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-cccc-3333", "MIG-dddd-4444"]
    assert choose_visible(uuids, None) == uuids
    assert choose_visible(uuids, "2,0") == ["GPU-cccc-3333", "GPU-aaaa-1111"]
    assert choose_visible(uuids, "GPU-bbbb,GPU-aaaa-1111") == ["GPU-bbbb-2222", "GPU-aaaa-1111"]
    assert choose_visible(uuids, "MIG-dddd-4444") == ["MIG-dddd-4444"]
    assert choose_visible(uuids, "1,7,0") == ["GPU-bbbb-2222"]  # CUDA stops at a bad entry
    assert choose_visible(uuids, "GPU-,1") == []  # a prefix of several GPUs names none
    assert choose_visible(uuids, "") == [] and choose_visible(uuids, "-1") == []
    assert choose_visible(uuids, "0,0") == ["GPU-aaaa-1111"]
