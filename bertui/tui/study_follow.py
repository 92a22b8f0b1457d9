"""Follow a study directory for the Study screen: its status, summary, events and runs.

``StudyFollower.read()`` does the file reading (status.json, summary.json when it changed, the
events appended since the last look, the study's run directories) and the process checks, and
changes nothing the screen shows, so the screen runs it in a thread, one read at a time;
``apply()`` folds what it found in, on the UI thread. ``study_eta`` estimates the time left of
the whole study from the runs that ended. No Textual here, so it is tested on its own.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertui.core.events import EventReader
from bertui.core.runs import Run, read_json
from bertui.core.studies import Study
from bertui.core.study import budget_label

RUNS_SECONDS = 5.0  # the run directories are re-read at least this often (and on each event)

Summary = dict[str, Any]


@dataclass
class StudyRun:
    """One run of the study as the runs table shows it."""

    run: Run
    seed: int
    budget: str  # "16", "all"
    summary: Summary  # Run.summary()
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyReading:
    """One look at a study directory. ``summary`` and ``runs`` are None when they were not
    read again (unchanged, or not yet due)."""

    status: dict[str, Any]
    state: str
    events: list[dict[str, Any]]
    summary: dict[str, Any] | None
    runs: list[StudyRun] | None
    current: Summary | None = None  # the status of the run going now


def study_runs(study: Study, home: Path | None) -> list[StudyRun]:
    """Each run of the study (every cell's runs, oldest first), in the grid's order."""
    order = {cell: i for i, cell in enumerate(study.grid.cells())}
    out = []
    for (seed, budget), runs in sorted(study.runs(home).items(),
                                       key=lambda item: order.get(item[0], len(order))):
        for run in runs:
            out.append(StudyRun(run, seed, budget_label(budget), run.summary(), run.metrics()))
    return out


class StudyFollower:
    """Polls one study directory; see the module docstring."""

    def __init__(self, path: Path, home: Path | None = None) -> None:
        self.study = Study.load(Path(path))
        self.home = home
        self.reader = EventReader(self.study.events_path)
        self.summary: dict[str, Any] = {}
        self.runs: list[StudyRun] = []
        self.current: Summary | None = None
        self.events: list[dict[str, Any]] = []  # every study event so far
        self._summary_key: tuple[int, int] | None = None
        self._runs_read = 0.0  # time.monotonic() of the last read of the runs
        self._state: str | None = None

    def _summary_changed(self) -> bool:
        try:
            st = os.stat(self.study.summary_path)
            key = (st.st_mtime_ns, st.st_size)
        except OSError:
            key = (0, 0)
        changed = key != self._summary_key
        self._summary_key = key
        return changed

    def read(self) -> StudyReading:
        """Look at the study directory (blocking I/O and psutil: off the UI thread)."""
        study = self.study
        status = read_json(study.status_path, {}) or {}
        look = Study(study.path, study.config, status)
        events = self.reader.read_new()
        summary = None
        if self._summary_changed():
            summary = read_json(study.summary_path, {}) or {}
        runs = None
        if events or summary is not None or time.monotonic() - self._runs_read > RUNS_SECONDS:
            runs = study_runs(study, self.home)
            self._runs_read = time.monotonic()
        current = None
        if status.get("current"):
            run_dir = (self.home or study.path.parent.parent) / "runs" / str(status["current"])
            current = read_json(run_dir / "status.json", None)
        return StudyReading(status, look.state, events, summary, runs, current)

    def apply(self, reading: StudyReading) -> bool:
        """Fold ``reading`` in; True when anything the screen shows changed."""
        changed = bool(reading.events) or reading.summary is not None or \
            reading.runs is not None or reading.state != self._state or \
            reading.status != self.study.status or reading.current != self.current
        self.study.status = reading.status
        self.events.extend(reading.events)
        if reading.summary is not None:
            self.summary = reading.summary
        if reading.runs is not None:
            self.runs = reading.runs
        self.current = reading.current
        self._state = reading.state
        return changed

    def poll(self) -> bool:
        return self.apply(self.read())

    @property
    def state(self) -> str:
        return self._state or self.study.state

    @property
    def current_run(self) -> StudyRun | None:
        """The run going now, as the runs table knows it."""
        run_id = self.study.status.get("current")
        if not run_id or self.state not in ("queued", "running"):
            return None
        return next((r for r in self.runs if r.run.id == run_id), None)

    def elapsed(self, now: float) -> float | None:
        status = self.study.status
        started = status.get("started") or status.get("created")
        if not started:
            return None
        end = now if self.state in ("queued", "running") else \
            (status.get("ended") or status.get("heartbeat") or started)
        return max(0.0, float(end) - float(started))

    def eta(self, now: float) -> float | None:
        """Seconds left of the whole study (None: not known yet)."""
        if self.state not in ("queued", "running"):
            return 0.0 if self.state == "finished" else None
        grid = self.study.grid
        rows = {budget_label(b): (self.study.pool_rows if b is None else b)
                for b in grid.budgets}
        done: dict[str, list[float]] = {}
        finished = set()
        for r in self.runs:
            if r.summary.get("status") == "finished" and r.summary.get("duration_s"):
                done.setdefault(r.budget, []).append(float(r.summary["duration_s"]))
                finished.add((r.seed, r.budget))
        current = self.current_run
        cells = [(s, budget_label(b)) for s, b in grid.cells()]
        left = [c for c in cells if c not in finished
                and (current is None or c != (current.seed, current.budget))]
        current_left: float | None = 0.0
        if current is not None:
            current_left = _current_left(self.current, now)
            if current_left is None:
                est = _estimate(done, rows, current.budget)
                elapsed = current.summary.get("duration_s") or 0.0
                current_left = None if est is None else max(0.0, est - float(elapsed))
        return study_eta(done, rows, [b for _, b in left], current_left)


def _current_left(status: Summary | None, now: float) -> float | None:
    """The run going now's own ETA (its worker's, counted down since its heartbeat)."""
    if not status or not isinstance(status.get("eta_s"), (int, float)):
        return None
    since = now - float(status.get("heartbeat") or now)
    return max(0.0, float(status["eta_s"]) - max(0.0, since))


def _estimate(done: dict[str, list[float]], rows: dict[str, int], budget: str) -> float | None:
    """A run's expected seconds at ``budget``: the mean of that budget's finished runs, else
    a straight line (fixed cost + cost per row) through the other budgets' means, else the
    mean of the one budget measured."""
    if done.get(budget):
        return sum(done[budget]) / len(done[budget])
    means = [(rows[b], sum(v) / len(v)) for b, v in done.items() if v and b in rows]
    if not means:
        return None
    if len(means) == 1:
        return means[0][1]
    n = len(means)
    mx = sum(x for x, _ in means) / n
    my = sum(y for _, y in means) / n
    sxx = sum((x - mx) ** 2 for x, _ in means)
    slope = 0.0 if sxx == 0 else sum((x - mx) * (y - my) for x, y in means) / sxx
    slope = max(0.0, slope)
    return max(0.0, my + slope * (rows[budget] - mx))


def study_eta(done: dict[str, list[float]], rows: dict[str, int], left: list[str],
              current_left: float | None) -> float | None:
    """The seconds left of a study: the run going now's (``current_left``; None when there
    is one whose time left is not known) plus each cell still to run (``left``, by budget),
    each estimated from the finished runs' seconds by budget (``done``). None when nothing
    has finished yet to estimate from."""
    if current_left is None:
        return None
    total = current_left
    for budget in left:
        est = _estimate(done, rows, budget)
        if est is None:
            return None
        total += est
    return total
