"""Warm starts (bertui.warm): a study runner's workers forked from a process that has imported
torch already. Real processes: the starter, its forked worker, a tiny run to its end."""

from __future__ import annotations

import json
import os

import psutil
from test_faults import wait_done, wait_for

from bertui.core.launch import Executor, build_config, start_run
from bertui.core.runs import Run
from bertui.core.schema import RunOptions
from bertui.warm import WarmStarter
from conftest import train_tiny

TINY = dict(dataset="demo", epochs=1.0, batch_size=8, max_length=32)


def ready(starter: WarmStarter) -> WarmStarter:
    starter.launch()
    wait_for(lambda: starter._ensure() is not None, 300, "the warm starter to import")
    return starter


def test_a_warm_worker_is_an_ordinary_detached_worker(tiny_model, bertui_home):
    starter = WarmStarter()
    assert starter.start(bertui_home) is None  # not ready yet: the caller starts it cold
    ready(starter)
    config = build_config(RunOptions(model=str(tiny_model), arms=["pretrained", "finetuned"],
                                     **TINY))
    run = start_run(config, executor=Executor(warm=starter))
    wait_for(lambda: run.refresh().status.get("pid"), 120, "the worker's pid")
    pid = run.status["pid"]
    worker = psutil.Process(pid)
    assert worker.ppid() == starter.proc.pid  # forked by the starter, not the launcher
    assert os.getsid(pid) == pid  # in a session of its own, like a detached worker
    starter.close()  # the runner goes away: the run goes on
    assert wait_done(run.path) == "finished"
    log = run.log_path.read_text()
    assert f"worker {pid} forked by the warm starter" in log
    # the same numbers as a run started the cold way
    alone, _ = train_tiny(tiny_model, bertui_home, "--arms", "pretrained,finetuned",
                          "--batch-size", "8", "--max-length", "32")
    warm = Run.load(run.path).metrics()
    for arm in ("pretrained", "finetuned"):
        assert warm[arm]["accuracy"] == alone[arm]["accuracy"]
    assert warm["finetuned"]["macro_f1"] == alone["finetuned"]["macro_f1"]


def test_the_starter_reaps_its_children_and_refuses_a_missing_run(tiny_model, bertui_home,
                                                                  tmp_path):
    starter = ready(WarmStarter())
    try:
        assert starter.start(tmp_path / "no-such-run") is None  # cold start says why
        config = build_config(RunOptions(model=str(tiny_model), arms=["finetuned"], **TINY))
        run = start_run(config, executor=Executor(warm=starter))
        assert wait_done(run.path) == "finished"
        pid = json.loads(run.status_path.read_text())["pid"]
        # the ended worker is collected (no zombie left while the starter lives)
        wait_for(lambda: not psutil.pid_exists(pid), 30, "the worker to be reaped")
        assert starter.proc.poll() is None  # and the starter still serves
    finally:
        starter.close()
    assert starter.proc is None
