"""Follow a run directory: fold its events into the series and numbers the Monitor shows.

``RunFollower`` owns an :class:`EventReader` and a :class:`RunHistory`. Each ``poll()`` re-reads
``status.json``, applies the events appended since the last poll and says whether anything
changed. No Textual here, so the folding is tested on its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertui.core.runs import EventReader, Run

TELEMETRY_HISTORY = 60  # samples kept for the sparklines
LOG_LINES = 200


@dataclass
class RunHistory:
    """Everything the events of one run said so far."""

    total_steps: int | None = None
    step: int = 0
    epoch: float | None = None
    epochs: float | None = None
    phase: str | None = None
    start: dict[str, Any] = field(default_factory=dict)  # the run_start event
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)  # the newest progress event
    telemetry: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=TELEMETRY_HISTORY)
    )
    logs: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    checkpoints: list[str] = field(default_factory=list)
    end: dict[str, Any] | None = None
    first_time: float | None = None
    last_time: float | None = None

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event in. Unknown types and missing fields are ignored."""
        kind = event.get("type")
        when = event.get("time")
        if isinstance(when, (int, float)):
            self.first_time = when if self.first_time is None else self.first_time
            self.last_time = when
        step = event.get("step")
        if isinstance(step, int) and step > self.step:
            self.step = step
        if kind == "run_start":
            self.start = event
            self.total_steps = event.get("total_steps") or self.total_steps
            self.epochs = event.get("epochs") or self.epochs
        elif kind == "resume":
            self.logs.append({"level": "info", "time": when,
                              "message": f"resumed from {event.get('checkpoint') or 'start'}"})
        elif kind == "phase":
            self.phase = event.get("name")
            if event.get("total_steps"):
                self.total_steps = event["total_steps"]
        elif kind == "baseline":
            self.baselines[str(event.get("name"))] = event
        elif kind == "train":
            loss = event.get("loss")
            if isinstance(loss, (int, float)):
                self.train_loss.append((int(step or 0), float(loss)))
            if event.get("epoch") is not None:
                self.epoch = event["epoch"]
        elif kind == "progress":
            self.progress = event
            self.total_steps = event.get("total_steps") or self.total_steps
            if event.get("epoch") is not None:
                self.epoch = event["epoch"]
        elif kind == "eval":
            self.evals.append(event)
        elif kind == "telemetry":
            self.telemetry.append(event)
        elif kind == "checkpoint":
            self.checkpoints.append(str(event.get("path")))
        elif kind == "log":
            self.logs.append(event)
        elif kind == "run_end":
            self.end = event
            error = event.get("error")
            if error and not any(entry.get("message") == error for entry in self.logs):
                self.logs.append({"level": "error", "time": when, "message": error})

    @property
    def fraction(self) -> float | None:
        """Training progress 0..1, when the total is known."""
        if not self.total_steps:
            return None
        return min(1.0, self.step / self.total_steps)

    def eval_series(self, key: str) -> list[tuple[int, float]]:
        return [(int(e.get("step") or 0), float(e[key])) for e in self.evals
                if isinstance(e.get(key), (int, float))]

    def latest_telemetry(self) -> dict[str, Any] | None:
        return self.telemetry[-1] if self.telemetry else None


class RunFollower:
    """Polls one run directory; ``history`` grows as the worker appends events."""

    def __init__(self, path: Path) -> None:
        self.run = Run.load(Path(path))
        self.reader = EventReader(self.run.events_path)
        self.history = RunHistory()
        self._status_key: tuple[Any, ...] = ()
        self._state: str | None = None

    def poll(self) -> bool:
        """Read what is new; True when the status or the history changed."""
        self.run.refresh()
        events = self.reader.read_new()
        for event in events:
            self.history.apply(event)
        status = self.run.status
        state = self.run.state
        key = (state, status.get("heartbeat"), status.get("step"), status.get("error"))
        changed = bool(events) or key != self._status_key
        self._status_key = key
        self._state = state
        return changed

    @property
    def state(self) -> str:
        return self._state or self.run.state

    def elapsed(self, now: float) -> float | None:
        """Seconds since the run started: to its end when it ended, to ``now`` while active."""
        status = self.run.status
        started = status.get("started") or status.get("created") or self.history.first_time
        if not started:
            return None
        if self.state in ("queued", "running"):
            return max(0.0, now - started)
        ended = status.get("ended") or status.get("heartbeat") or self.history.last_time
        return max(0.0, (ended or started) - started)

    def eta(self, now: float) -> float | None:
        """Seconds left, from the newest progress event, counted down since it was written."""
        if self.state != "running":
            return 0.0 if self.state == "finished" else None
        progress = self.history.progress
        eta = progress.get("eta_s")
        if not isinstance(eta, (int, float)):
            return None
        since = now - float(progress.get("time") or now)
        return max(0.0, eta - max(0.0, since))
