"""The study runner: ``python -m bertui.study_runner STUDY_DIR [--resume]``.

It starts a study's runs (each an ordinary run with its own worker), up to ``width`` of them at
once, waits for them, and after each run rewrites the study's summary.json. All that it knows
comes from ``STUDY_DIR/study.toml`` and the run directories; all that it tells goes into
``STUDY_DIR`` (status.json with a heartbeat, events.jsonl, summary.json). It is started detached
(its own session, output to runner.log) by ``bertui.core.process.spawn_study`` and holds the
study's lock while it lives, so a study has one runner.

Where the runs go (study.toml's ``[executor]``: ``kind``, ``slurm_args``, ``parallel``):

- ``local``: detached workers on this machine. On a machine with GPUs, one run a free GPU at
  once (a GPU no process computes on; a run of ``--nproc N`` gets N of them), each worker
  pinned with ``CUDA_VISIBLE_DEVICES``; on a CPU, one run at a time. ``--parallel N`` chooses
  how many at once (on a CPU, each of N runs then gets its share of the cores as
  ``OMP_NUM_THREADS``).
- ``slurm``: each run is a Slurm job (``bertui.core.slurm``), all of them submitted at once
  unless ``--parallel N`` caps how many are queued or running together; Slurm schedules them.
  The runner asks ``squeue`` about its jobs every ``SLURM_POLL_SECONDS``; the run directories
  (on the shared filesystem) say the rest.

Nothing is run twice: a cell (seed, budget) whose run finished is kept; a run that is still
going (its worker, or its Slurm job, outlived a killed runner) is waited for; a run that was
cancelled, lost or failed is resumed from its checkpoint (``bertui.core.launch.resume_run``);
a run that was created but never started is started. A run whose worker dies (or whose job
Slurm ends) while the runner waits is resumed up to ``RETRIES`` times. A run that fails (or
cannot be started) is recorded and the other cells go on (the study ends ``failed``;
``bertui resume STUDY`` tries it again).

Signals: SIGTERM or SIGINT = cancel (every run going now is cancelled, its checkpoint saved; a
Slurm job is scancelled; the study ends ``cancelled``); SIGHUP is ignored. A run cancelled
from outside (``bertui cancel RUN``, ``scancel``) cancels the study the same way.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertui.core.errors import BadInput
from bertui.core.launch import Executor
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
from bertui.warm import WarmStarter
from bertui.worker import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_FINISHED, Recorder

POLL_SECONDS = 0.5  # how often the runner looks at the runs it waits for
SLURM_POLL_SECONDS = 2.0  # how often it asks squeue about its Slurm jobs
RETRIES = 2  # a run whose worker dies while the runner waits is resumed this often
CANCEL_WAIT_SECONDS = 120.0  # how long a cancel waits for the runs going now to stop


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


def free_gpus() -> list[str]:
    """This machine's GPUs that no process computes on, as NVML (PCI bus order) indices;
    within ``CUDA_VISIBLE_DEVICES`` when it is set. Empty without GPUs or without NVML."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return []
    try:
        import pynvml as nv

        nv.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no library: no GPU to use
        return []
    try:
        found = []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = nv.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            if visible is not None and not {str(index), uuid} & {
                    v.strip() for v in visible.split(",")}:
                continue
            if not nv.nvmlDeviceGetComputeRunningProcesses(handle):
                found.append(str(index))
        return found
    except Exception:  # noqa: BLE001 - a GPU that cannot be asked is not used
        return []
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def plan_slots(kind: str, parallel: int | None, cells: int, nproc: int = 1) -> list[str | None]:
    """The places the study's runs go to, one a run going at once: a GPU group's
    ``CUDA_VISIBLE_DEVICES`` (one per free GPU, ``nproc`` GPUs for a run of that many
    processes; with ``parallel`` more than there are, runs share them in turn), or None (a CPU
    run, a Slurm job: no pinning)."""
    if kind == "slurm":
        return [None] * max(1, parallel or cells)
    gpus = free_gpus()
    groups = [",".join(gpus[i:i + nproc]) for i in range(0, len(gpus) - nproc + 1, nproc)]
    if gpus and not groups:
        groups = [",".join(gpus)]  # fewer free GPUs than processes: the run gets them all
    if not groups:
        return [None] * max(1, parallel or 1)
    return [groups[i % len(groups)] for i in range(max(1, parallel or len(groups)))]


@dataclass
class Going:
    """A run the runner has going: its cell and the place (slot) it holds."""

    run: Run
    seed: int
    budget: Budget
    slot: str | None


class StudyRunner:
    """One study's runner process: the signals, the heartbeat, the runs going at once."""

    def __init__(self, study_dir: Path, resume: bool = False) -> None:
        self.study = Study.load(study_dir)
        self.rec = Recorder(self.study)
        self.resume = resume
        self.stop_requested = False
        self.retries: dict[str, int] = {}
        self.heartbeat: Periodic | None = None
        launch = self.study.config.get("executor") or {}
        self.kind = str(launch.get("kind") or "local")
        self.slurm_args: str | None = launch.get("slurm_args")
        self.parallel: int | None = launch.get("parallel")
        self.width = 1
        self.going: list[Going] = []
        self.problems: list[str] = []  # "run X: why" of each cell that did not finish
        self.last_asked = 0.0
        # Local runs start warm: forked from a process that has imported torch (bertui.warm)
        self.warm = WarmStarter() if self.kind == "local" else None

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
                     or time.time(), ended=None, error=None, current=None, going=[])
        self.heartbeat = Periodic(self.rec.beat, HEARTBEAT_SECONDS, "bertui-heartbeat").start()
        try:
            return self.execute()
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a status
            self.stop()  # nothing is left running that no runner watches
            if isinstance(exc, BadInput | RunError):
                return self._end("failed", str(exc), EXIT_FAILED)
            traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return self._end("failed", f"{type(exc).__name__}: {first}".rstrip(": "), EXIT_FAILED)

    def execute(self) -> int:
        grid = self.study.grid
        done = {cell for cell, runs in self.study.runs().items()
                if any(r.state == "finished" for r in runs)}
        todo = [cell for cell in grid.cells() if cell not in done]
        nproc = int((self.study.config.get("run", {}).get("launch") or {}).get("nproc", 1) or 1)
        free = plan_slots(self.kind, self.parallel, len(todo), nproc)
        self.width = len(free)
        if self.warm is not None and todo:
            self.warm.launch()  # it imports while the first run starts the cold way
        self.rec.emit("study_start", total=len(grid), resumed=self.resume, executor=self.kind,
                      parallel=self.width, slots=[s for s in free if s is not None] or None)
        self.update_summary()
        while todo or self.going:
            if self.stop_requested:
                self.stop()
                return self._end("cancelled", None, EXIT_CANCELLED)
            while todo and free:
                self.begin(*todo.pop(0), free.pop(0))
            for going in self.ended():
                free.append(going.slot)
                if going.run.state == "cancelled" and not self.stop_requested:
                    self.stop()
                    return self._end("cancelled", f"run {going.run.id} was cancelled",
                                     EXIT_CANCELLED)
            if self.going:
                time.sleep(POLL_SECONDS)
        if self.problems:
            return self._end("failed", f"{len(self.problems)} of {len(grid)} runs did not "
                                       f"finish ({self.problems[0]})", EXIT_FAILED)
        return self._end("finished", None, EXIT_FINISHED)

    # the runs going --------------------------------------------------------------------------

    def executor(self, slot: str | None) -> Executor:
        """Where a run of this slot goes: a Slurm job, or a local worker pinned to its GPUs
        (on a CPU with several runs at once: its share of the cores)."""
        if self.kind == "slurm":
            return Executor("slurm", self.slurm_args)
        if slot is not None:
            return Executor(env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                 "CUDA_VISIBLE_DEVICES": slot}, warm=self.warm)
        if self.width > 1 and "OMP_NUM_THREADS" not in os.environ:
            threads = max(1, (os.cpu_count() or 1) // self.width)
            return Executor(env={"OMP_NUM_THREADS": str(threads)}, warm=self.warm)
        return Executor(warm=self.warm)

    def begin(self, seed: int, budget: Budget, slot: str | None) -> None:
        """Get the cell's run going in ``slot``: started, resumed or waited for. A run that
        cannot be started is recorded as a problem of the cell (the others go on)."""
        from bertui.core.launch import start_run

        cell = f"budget {budget_label(budget)}, seed {seed}"
        runs = self.study.runs().get((seed, budget), [])
        try:
            if runs:
                run = runs[-1]
                how = self.restart(run, self.executor(slot))
            else:
                run = start_run(run_config(self.study, seed, budget),
                                executor=self.executor(slot))
                how = "started"
        except RunError as exc:
            self.rec.log(f"{cell}: {exc}", "warning")
            self.rec.emit("study_run_end", run=runs[-1].id if runs else None,
                          budget=budget_label(budget), seed=seed, state="failed",
                          error=str(exc))
            self.problems.append(f"{cell}: {exc}")
            return
        self.going.append(Going(run, seed, budget, slot))
        self.rec.set(current=run.id, going=[g.run.id for g in self.going])
        job = run.status.get("job_id")
        self.rec.emit("study_run_start", run=run.id, budget=budget_label(budget), seed=seed,
                      how=how, job=job, gpus=slot)
        where = f" as Slurm job {job}" if job else (f" on GPU {slot}" if slot else "")
        self.rec.log(f"run {run.id} ({cell}): {how}{where}")

    def restart(self, run: Run, executor: Executor) -> str:
        """Get a run of an earlier runner going again: wait for a live worker (or Slurm job),
        resume a run that ended unfinished, start one that never started."""
        from bertui.core import slurm
        from bertui.core.launch import resume_run, start_worker

        if slurm.is_slurm(run) and slurm.reconcile(run).status.get("state") in ACTIVE_STATES:
            return "still running"  # its job waits or runs: Slurm has it
        if has_worker(run):
            return "still running"
        if run.refresh().state in RESUMABLE_STATES:
            resume_run(run, executor)
            return "resumed"
        # Queued with no worker: a start (or a resume) an earlier runner did not get to.
        resumed = bool(run.status.get("started"))
        start_worker(run, resumed, executor)
        return "resumed" if resumed else "started"

    def ended(self) -> list[Going]:
        """The runs that ended since the last look (each recorded, its summary written); a
        run whose worker died is resumed instead, up to ``RETRIES`` times."""
        from bertui.core.launch import resume_run
        from bertui.core.slurm import reconcile, reconcile_all

        if self.kind == "slurm" and time.monotonic() - self.last_asked > SLURM_POLL_SECONDS:
            reconcile_all([g.run for g in self.going])
            self.last_asked = time.monotonic()
        ended = []
        for going in list(self.going):
            run = going.run.refresh()
            if run.state == "lost" and self.kind == "slurm":
                reconcile(run)  # why: its job's end, as Slurm says
            if run.state == "lost" and self.retries.get(run.id, 0) < RETRIES:
                self.retries[run.id] = self.retries.get(run.id, 0) + 1
                why = run.status.get("error") or "its worker died"
                self.rec.log(f"run {run.id} was lost ({why}); resuming it", "warning")
                try:
                    resume_run(run, self.executor(going.slot))
                    continue
                except RunError as exc:
                    self.rec.log(f"run {run.id} could not be resumed: {exc}", "warning")
            if run.state in ACTIVE_STATES:
                continue
            self.going.remove(going)
            ended.append(going)
            self.finish(going)
        return ended

    def finish(self, going: Going) -> None:
        """Record a run that ended: its event, the study's summary, a problem if unfinished."""
        run = going.run
        error = run.status.get("error")
        self.rec.set(current=self.going[-1].run.id if self.going else None,
                     going=[g.run.id for g in self.going])
        self.rec.emit("study_run_end", run=run.id, budget=budget_label(going.budget),
                      seed=going.seed, state=run.state, error=error)
        if run.state not in ("finished", "cancelled"):
            self.problems.append(f"run {run.id}: {error or run.state}")
        self.update_summary()

    def stop(self) -> None:
        """Cancel every run going (a checkpoint is saved; a Slurm job is scancelled) and wait
        up to ``CANCEL_WAIT_SECONDS`` for them all to end."""
        from bertui.core.launch import cancel_run
        from bertui.core.slurm import jobs_alive, reconcile_all

        job_ids = [str(g.run.status["job_id"]) for g in self.going if g.run.status.get("job_id")]
        for going in self.going:
            try:
                cancel_run(going.run, wait=0)
            except RunError:
                pass  # it ended meanwhile
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < deadline:
            reconcile_all([g.run for g in self.going])
            for going in [g for g in self.going if not g.run.refresh().is_active]:
                self.going.remove(going)
                self.finish(going)
            if not self.going and not jobs_alive(job_ids):  # nor a job still completing
                break
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
        if self.warm is not None:
            self.warm.close()
        if error:
            print(f"bertui study runner: {state}: {error}", file=sys.stderr, flush=True)
        try:
            self.rec.set(state=state, ended=time.time(), error=error, current=None, going=[])
            self.rec.emit("study_end", state=state, error=error)
        except OSError:
            traceback.print_exc()
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {STUDY_RUNNER_MODULE}",
        description="Run one bertui study's runs (started by bertui study).",
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
