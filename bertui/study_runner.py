"""The study runner: ``python -m bertui.study_runner STUDY_DIR [--resume]``.

It starts a study's runs one after another on this machine (each an ordinary run with its own
detached worker), waits for each, and after each rewrites the study's summary.json. All that it
knows comes from ``STUDY_DIR/study.toml`` and the run directories; all that it tells goes into
``STUDY_DIR`` (status.json with a heartbeat, events.jsonl, summary.json). It is started detached
(its own session, output to runner.log) by ``bertui.core.process.spawn_study`` and holds the
study's lock while it lives, so a study has one runner.

Nothing is run twice: a cell (seed, budget) whose run finished is kept; a run that is still
going (its worker outlived a killed runner) is waited for; a run that was cancelled, lost or
failed is resumed from its checkpoint (``bertui.core.launch.resume_run``); a run that was
created but never started is started. A run whose worker dies while the runner waits is resumed
up to ``RETRIES`` times. A run that fails is recorded and the other cells go on (the study ends
``failed``; ``bertui resume STUDY`` tries it again).

Signals: SIGTERM or SIGINT = cancel (the run going now is cancelled, its checkpoint saved; the
study ends ``cancelled``); SIGHUP is ignored.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bertui.core.errors import BadInput
from bertui.core.process import STUDY_RUNNER_MODULE, lock_run
from bertui.core.runs import (
    ACTIVE_STATES,
    HEARTBEAT_SECONDS,
    RESUMABLE_STATES,
    Run,
    RunError,
    pid_alive,
    read_json,
)
from bertui.core.studies import STUDY_FILE, Study, run_config, write_summary
from bertui.core.study import Budget, budget_label
from bertui.core.telemetry import Periodic
from bertui.worker import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_FINISHED, Recorder

POLL_SECONDS = 0.5  # how often the runner looks at the run it waits for
RETRIES = 2  # a run whose worker dies while the runner waits is resumed this often
CANCEL_WAIT_SECONDS = 120.0  # how long a cancel waits for the run going now to stop


def has_worker(run: Run) -> bool:
    """Whether a live worker holds the run (its lock is taken, or, on a filesystem without
    locks, its pid lives and its status says it is active)."""
    fd = lock_run(run.path)
    if fd is None:
        return True
    os.close(fd)
    status = run.refresh().status
    return status.get("state") in ACTIVE_STATES and pid_alive(status.get("pid"),
                                                              status.get("pid_started"))


class StudyRunner:
    """One study's runner process: the signals, the heartbeat, the cells in order."""

    def __init__(self, study_dir: Path, resume: bool = False) -> None:
        self.study = Study.load(study_dir)
        self.rec = Recorder(self.study)
        self.resume = resume
        self.stop_requested = False
        self.retries: dict[str, int] = {}
        self.heartbeat: Periodic | None = None

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        self.stop_requested = True

    def main(self) -> int:
        os.umask(0o077)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        import psutil

        self.rec.set(state="running", pid=os.getpid(), pid_started=psutil.Process().create_time(),
                     host=socket.gethostname(), started=self.rec.status.get("started")
                     or time.time(), ended=None, error=None, current=None)
        self.heartbeat = Periodic(self.rec.beat, HEARTBEAT_SECONDS, "bertui-heartbeat").start()
        try:
            return self.execute()
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a status
            if isinstance(exc, BadInput | RunError):
                return self._end("failed", str(exc), EXIT_FAILED)
            traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return self._end("failed", f"{type(exc).__name__}: {first}".rstrip(": "), EXIT_FAILED)

    def execute(self) -> int:
        grid = self.study.grid
        self.rec.emit("study_start", total=len(grid), resumed=self.resume)
        self.update_summary()
        failed: list[Run] = []
        for seed, budget in grid.cells():
            if self.stop_requested:
                return self._end("cancelled", None, EXIT_CANCELLED)
            run = self.run_cell(seed, budget)
            state = run.state
            self.update_summary()
            if state == "cancelled":
                why = None if self.stop_requested else f"run {run.id} was cancelled"
                return self._end("cancelled", why, EXIT_CANCELLED)
            if state != "finished":
                failed.append(run)
        if failed:
            first = failed[0]
            why = first.status.get("error") or first.state
            return self._end("failed", f"{len(failed)} of {len(grid)} runs did not finish "
                                       f"(run {first.id}: {why})", EXIT_FAILED)
        return self._end("finished", None, EXIT_FINISHED)

    # one cell --------------------------------------------------------------------------------

    def run_cell(self, seed: int, budget: Budget) -> Run:
        """The cell's run, finished or ended: kept, waited for, resumed or started."""
        from bertui.core.launch import start_run

        runs = self.study.runs().get((seed, budget), [])
        run = next((r for r in runs if r.state == "finished"), runs[-1] if runs else None)
        if run is not None and run.state == "finished":
            return run
        if run is None:
            run = start_run(run_config(self.study, seed, budget))
            how = "started"
        else:
            how = self.restart(run)
        self.rec.set(current=run.id)
        self.rec.emit("study_run_start", run=run.id, budget=budget_label(budget), seed=seed,
                      how=how)
        self.rec.log(f"run {run.id} (budget {budget_label(budget)}, seed {seed}): {how}")
        run = self.wait(run)
        self.rec.emit("study_run_end", run=run.id, budget=budget_label(budget), seed=seed,
                      state=run.state, error=run.status.get("error"))
        return run

    def restart(self, run: Run) -> str:
        """Get a run of an earlier runner going again: wait for a live worker, resume a run
        that ended unfinished, start one that never started."""
        from bertui.core.launch import resume_run
        from bertui.core.process import spawn

        if has_worker(run):
            return "still running"
        if run.refresh().state in RESUMABLE_STATES:
            resume_run(run)
            return "resumed"
        # Queued with no worker: a start (or a resume) an earlier runner did not get to.
        resumed = bool(run.status.get("started"))
        spawn(run.path, resume=resumed)
        return "resumed" if resumed else "started"

    def wait(self, run: Run) -> Run:
        """Wait until the run ends (cancelling it when the study is cancelled); a run whose
        worker died is resumed up to ``RETRIES`` times."""
        from bertui.core.launch import cancel_run, resume_run

        while True:
            if self.stop_requested:
                try:
                    cancel_run(run, wait=CANCEL_WAIT_SECONDS)
                except RunError:
                    pass  # it ended meanwhile
                return run.refresh()
            state = run.refresh().state
            if state == "lost" and self.retries.get(run.id, 0) < RETRIES:
                self.retries[run.id] = self.retries.get(run.id, 0) + 1
                self.rec.log(f"run {run.id} lost its worker; resuming it", "warning")
                resume_run(run)
                continue
            if state not in ACTIVE_STATES:
                return run
            time.sleep(POLL_SECONDS)

    # the study's files -----------------------------------------------------------------------

    def update_summary(self) -> None:
        summary = write_summary(self.study)
        runs = summary.get("runs", {})
        cross = (summary.get("crossover") or {}).get("budget")
        self.rec.set(runs_finished=runs.get("finished", 0), runs_total=runs.get("total"))
        self.rec.emit("study_summary", finished=runs.get("finished", 0),
                      total=runs.get("total"), crossover=cross)

    def _end(self, state: str, error: str | None, code: int) -> int:
        """The end state, after the heartbeat has stopped: study_end is the log's last line."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if error:
            print(f"bertui study runner: {state}: {error}", file=sys.stderr, flush=True)
        try:
            self.rec.set(state=state, ended=time.time(), error=error, current=None)
            self.rec.emit("study_end", state=state, error=error)
        except OSError:
            traceback.print_exc()
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {STUDY_RUNNER_MODULE}",
        description="Run one bertui study's runs, one after another (started by bertui study).",
    )
    parser.add_argument("study_dir", type=Path, metavar="STUDY_DIR")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted study")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_BAD_INPUT if exc.code else 0
    study_dir = args.study_dir.resolve()
    if not (study_dir / STUDY_FILE).exists():
        print(f"bertui.study_runner: no study at {study_dir}", file=sys.stderr)
        return EXIT_BAD_INPUT
    state = (read_json(study_dir / "status.json", {}) or {}).get("state")
    if state in ("finished", "cancelled"):  # cancelled: before this runner got going
        print(f"bertui.study_runner: study {study_dir.name} is {state}", file=sys.stderr)
        return EXIT_BAD_INPUT
    lock = lock_run(study_dir, wait=5.0)
    if lock is None:
        print(f"bertui.study_runner: study {study_dir.name} already has a runner; this one "
              "exits", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return StudyRunner(study_dir, resume=args.resume).main()
    finally:
        os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
