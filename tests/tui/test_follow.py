"""Folding events into what the Monitor shows (no terminal needed)."""

from __future__ import annotations

import json

from bertui.core.runs import append_event, create_run, make_event
from bertui.tui.follow import TELEMETRY_HISTORY, RunFollower, RunHistory

from .conftest import FINISHED, RECORDED


def test_history_folds_each_event_type():
    history = RunHistory()
    history.apply({"type": "run_start", "time": 10.0, "step": 0, "total_steps": 20,
                   "epochs": 2.0})
    history.apply({"type": "phase", "time": 11.0, "step": 0, "name": "training"})
    history.apply({"type": "baseline", "time": 11.0, "step": 0, "name": "probe",
                   "accuracy": 0.7})
    history.apply({"type": "train", "time": 12.0, "step": 5, "loss": 0.6, "epoch": 0.5})
    history.apply({"type": "eval", "time": 13.0, "step": 10, "accuracy": 0.8,
                   "eval_loss": 0.4})
    history.apply({"type": "mystery", "time": 14.0, "step": 11})
    history.apply({"type": "run_end", "time": 15.0, "step": 11, "state": "failed",
                   "error": "boom"})
    assert history.total_steps == 20 and history.step == 11
    assert history.phase == "training"
    assert history.baselines["probe"]["accuracy"] == 0.7
    assert history.train_loss == [(5, 0.6)]
    assert history.eval_series("accuracy") == [(10, 0.8)]
    assert history.fraction == 11 / 20
    assert [e["message"] for e in history.logs] == ["boom"]
    assert (history.first_time, history.last_time) == (10.0, 15.0)


def test_telemetry_history_is_bounded():
    history = RunHistory()
    for i in range(TELEMETRY_HISTORY + 10):
        history.apply({"type": "telemetry", "time": i, "step": i, "cpu_percent": i})
    assert len(history.telemetry) == TELEMETRY_HISTORY
    assert history.latest_telemetry()["cpu_percent"] == TELEMETRY_HISTORY + 9


def test_follower_reads_only_what_is_new(bertui_home):
    run = create_run({"name": "x", "model": {"spec": "default"}}, bertui_home)
    follower = RunFollower(run.path)
    assert follower.poll() is True  # the first look
    assert follower.poll() is False  # nothing new
    append_event(run.events_path, make_event("train", 3, loss=0.5))
    assert follower.poll() is True
    assert follower.history.train_loss == [(3, 0.5)]


def test_elapsed_and_eta_of_a_finished_run():
    follower = RunFollower(RECORDED / FINISHED)
    follower.poll()
    status = json.loads((RECORDED / FINISHED / "status.json").read_text())
    assert follower.state == "finished"
    assert follower.elapsed(now=9e9) == status["ended"] - status["started"]
    assert follower.eta(now=9e9) == 0.0
