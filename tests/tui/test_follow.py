"""Following a run for the Monitor (no terminal needed); the folding itself is tested in
tests/test_events.py."""

from __future__ import annotations

import json

from bertui.core.events import append_event, make_event
from bertui.core.runs import create_run
from bertui.tui.follow import RunFollower

from .conftest import FINISHED, RECORDED


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
