"""Follow a run directory for the Monitor: its status and its events, as they come.

``RunFollower`` owns an :class:`EventReader` and a :class:`RunHistory` (both in
``bertui.core.events``, where the folding of events lives). Each ``poll()`` re-reads
``status.json``, applies the events appended since the last poll and says whether anything
changed. No Textual here, so it is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertui.core.events import EventReader, RunHistory
from bertui.core.runs import Run


@dataclass
class Reading:
    """What one look at a run directory found: its files as they are now, the state they make
    (psutil's answer included) and the events appended since the look before."""

    config: dict[str, Any]
    status: dict[str, Any]
    state: str
    events: list[dict[str, Any]]


class RunFollower:
    """Polls one run directory; ``history`` grows as the worker appends events.

    ``read()`` does the file reading and the process check and changes nothing the screen
    shows, so the Monitor runs it in a thread (one at a time: the event offset is the
    follower's); ``apply()`` folds what it found in, on the UI thread. ``poll()`` is both.
    """

    def __init__(self, path: Path) -> None:
        self.run = Run.load(Path(path))
        self.reader = EventReader(self.run.events_path)
        self.history = RunHistory()
        self._status_key: tuple[Any, ...] = ()
        self._state: str | None = None

    def read(self) -> Reading:
        """Look at the run directory: config, status, state and the new events."""
        run = Run.load(self.run.path)
        return Reading(run.config, run.status, run.state, self.reader.read_new())

    def apply(self, reading: Reading) -> bool:
        """Fold ``reading`` in; True when the status or the history changed."""
        self.run.config, self.run.status = reading.config, reading.status
        self.history.extend(reading.events)
        status = reading.status
        key = (reading.state, status.get("heartbeat"), status.get("step"), status.get("error"))
        changed = bool(reading.events) or key != self._status_key
        self._status_key = key
        self._state = reading.state
        return changed

    def poll(self) -> bool:
        """Read what is new and fold it in; True when the status or the history changed."""
        return self.apply(self.read())

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
