"""The event log's contract: what every writer may write (``EVENT_FIELDS``) and the one folding
of it (``RunHistory``) that the CLI's progress line and the TUI's Monitor both read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bertui.cli import event_note, progress_line
from bertui.core.events import (
    BASE_FIELDS,
    EVENT_FIELDS,
    TELEMETRY_HISTORY,
    EventReader,
    RunHistory,
    append_event,
    make_event,
)

BERTUI = Path(__file__).resolve().parent.parent / "bertui"


def written_events() -> list[tuple[str, int, str, list[str | None]]]:
    """Every ``emit("type", ..., field=...)`` and ``make_event(...)`` call in bertui/: where it
    is, its type and the names of its fields (None for ``**fields``)."""
    found = []
    for path in sorted(BERTUI.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if name in ("emit", "make_event") and isinstance(first, ast.Constant):
                fields = [k.arg for k in node.keywords if k.arg != "step"]
                found.append((str(path.relative_to(BERTUI)), node.lineno, first.value, fields))
    return found


def test_every_event_bertui_writes_is_in_the_schema():
    calls = written_events()
    assert {"run_start", "progress", "run_end", "telemetry"} <= {c[2] for c in calls}
    for where, line, type_, fields in calls:
        assert type_ in EVENT_FIELDS, f"{where}:{line} writes an unknown event type {type_!r}"
        unknown = [f for f in fields if f is not None and f not in EVENT_FIELDS[type_]]
        assert not unknown, f"{where}:{line}: {type_} has fields not in EVENT_FIELDS: {unknown}"


def test_an_event_has_the_base_fields_and_survives_a_round_trip(tmp_path):
    path = tmp_path / "events.jsonl"
    event = make_event("train", 7, loss=0.5)
    assert tuple(event)[:4] == BASE_FIELDS
    append_event(path, event)
    assert EventReader(path).read_new() == [event]


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
    assert history.last_eval is not None and history.last_eval["eval_loss"] == 0.4
    assert history.fraction == 11 / 20
    assert [e["message"] for e in history.logs] == ["boom"]
    assert (history.first_time, history.last_time) == (10.0, 15.0)


def test_telemetry_history_is_bounded():
    history = RunHistory()
    for i in range(TELEMETRY_HISTORY + 10):
        history.apply({"type": "telemetry", "time": i, "step": i, "cpu_percent": i})
    assert len(history.telemetry) == TELEMETRY_HISTORY
    assert history.latest_telemetry()["cpu_percent"] == TELEMETRY_HISTORY + 9


def folded(*events: dict) -> RunHistory:
    history = RunHistory()
    history.extend([make_event(e.pop("type"), e.pop("step", 0), **e) for e in events])
    return history


@pytest.mark.parametrize("events, line", [
    ((), "starting…"),
    (({"type": "phase", "name": "loading"},), "loading…"),
    (({"type": "phase", "name": "training"},), "training…"),  # no progress yet
    (({"type": "phase", "name": "training"},
      {"type": "progress", "step": 10, "total_steps": 40, "epoch": 0.25, "samples_per_s": 80.0,
       "eta_s": 65.0}),
     "training  25.0% step 10/40  epoch 0.25  80.0 samples/s  ETA 1:05"),
    (({"type": "phase", "name": "training"},
      {"type": "progress", "step": 20, "total_steps": 40, "epoch": 0.5, "samples_per_s": 79.5},
      {"type": "eval", "step": 20, "accuracy": 0.8125}),
     "training  50.0% step 20/40  epoch 0.50  79.5 samples/s  eval acc 0.8125"),
    (({"type": "phase", "name": "training"},
      {"type": "progress", "step": 40, "total_steps": 40, "epoch": 1.0, "samples_per_s": 80.0},
      {"type": "phase", "name": "saving"}),
     "saving…"),
])
def test_the_cli_progress_line_reads_the_history(events, line):
    assert progress_line(folded(*[dict(e) for e in events])) == line


def test_the_cli_notes_baselines_and_warnings_once():
    assert event_note(make_event("baseline", name="probe", accuracy=0.71234)) == \
        "probe: accuracy 0.7123"
    assert event_note(make_event("log", level="warning", message="few rows")) == \
        "warning: few rows"
    assert event_note(make_event("log", level="info", message="hello")) is None
    assert event_note(make_event("progress", 3)) is None
