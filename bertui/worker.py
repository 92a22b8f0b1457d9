"""The run process: ``python -m bertui.worker RUN_DIR [--resume]``.

All that it knows comes from ``RUN_DIR/config.toml``; all that it tells goes into ``RUN_DIR``
(status.json, events.jsonl, metrics.json, model/, checkpoints/). It is started detached (a new
session, no terminal, output to worker.log) by ``bertui.core.process.spawn``, so that closing
the TUI or losing SSH does not stop it.

Signals: SIGTERM or SIGINT = cancel (stop at the next step, save a checkpoint, state
``cancelled``); SIGHUP is ignored. Any exception = state ``failed`` with a one-line reason in
status.json and the traceback in worker.log. Two daemon threads run beside the work: the
heartbeat (status.json every ``HEARTBEAT_SECONDS``) and, in a loop of its own, the telemetry
sampler, so that a sample that raises or hangs never stops the heartbeat.

Under torchrun (``bertui train --nproc N``, see ``bertui.core.distributed``) every rank runs
this process; rank 0 alone holds the lock and records, and the telemetry covers the run's GPUs.
The ranks join the process group first and exchange their pids (status.json's ``ranks``). The
stop is their common decision at every step's end. A SIGTERM without ``bertui cancel``'s
request file while a rank here is dead is torchrun stopping the survivors: the run ends
``failed``, naming the dead rank. A cancelled rank exits 0 (status.json says cancelled).

Test only: with ``BERTUI_TEST_PAUSE_AT_STEP=N`` in its environment, the worker pauses at the
end of training step N (before anything is saved at that step), writes ``paused_at_step: N``
to status.json, and waits for a signal: SIGTERM then cancels at exactly step N (its checkpoint
saved), SIGKILL kills it there, SIGUSR1 lets it go on. Tests that stop a worker at a step use
it, so that where it stops does not depend on the CPU's speed. After ``PAUSE_LIMIT_SECONDS``
without a signal it goes on by itself (a test that died leaves no worker waiting forever).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from bertui.core import distributed as dist
from bertui.core.errors import BadInput
from bertui.core.events import ESSENTIAL_TYPES, append_event, make_event
from bertui.core.process import WORKER_MODULE, lock_run
from bertui.core.runs import (
    CONFIG_FILE,
    HEARTBEAT_SECONDS,
    STATUS_FILE,
    Run,
    atomic_write_json,
    read_json,
)
from bertui.core.schema import from_config
from bertui.core.telemetry import Periodic, Sampler

EXIT_FINISHED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


class RankLost(Exception):
    """A rank of a torchrun run died: the others stop (``str``: the line naming it)."""


class Recorder:
    """Writes status.json (atomically, under a lock: the heartbeat thread writes too) and
    appends events. Only rank 0 of a distributed run records anything."""

    def __init__(self, run: Run, enabled: bool = True, events: bool = True) -> None:
        self.run = run
        self.enabled = enabled
        self.events_on = events
        self.lock = threading.Lock()
        self.status: dict[str, Any] = dict(run.status)
        self.live: dict[str, Any] = {}  # step, total_steps, samples_per_s, eta_s from training

    def set(self, **fields: Any) -> None:
        with self.lock:
            self.status.update(fields)
            self.status["heartbeat"] = time.time()
            if self.enabled:
                atomic_write_json(self.run.status_path, self.status)

    def beat(self) -> None:
        self.set(**{k: v for k, v in self.live.items() if v is not None})

    def emit(self, type_: str, step: int | None = None, **fields: Any) -> None:
        # With monitoring events off, only the essential ones (the outcome, not the pulse).
        if not self.enabled or (not self.events_on and type_ not in ESSENTIAL_TYPES):
            return
        step = self.live.get("step", 0) if step is None else step
        append_event(self.run.events_path, make_event(type_, step or 0, **fields))

    def log(self, message: str, level: str = "info") -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
        self.emit("log", level=level, message=message)


PAUSE_ENV = "BERTUI_TEST_PAUSE_AT_STEP"  # test only: see the module docstring
PAUSE_LIMIT_SECONDS = 600.0


def pause_step_from_env() -> int | None:
    """The step named by ``BERTUI_TEST_PAUSE_AT_STEP`` (test only), or None."""
    value = os.environ.get(PAUSE_ENV, "").strip()
    return int(value) if value.isdigit() else None


class Worker:
    """One run's process: the signals, the background threads, and the end state it records
    around ``run_experiment``. It is the engine's control (``ctl``)."""

    def __init__(self, run_dir: Path, resume: bool = False) -> None:
        self.run = Run.load(run_dir)
        if not self.run.config:
            raise SystemExit(f"bertui.worker: {run_dir} has no readable config.toml")
        options = from_config(self.run.config)
        self.rec = Recorder(self.run, enabled=dist.is_main(), events=options.monitor_events)
        self.telemetry_on = options.monitor_telemetry and dist.is_main()
        self.resume = resume
        self.stop_requested = False
        self.training = False
        self.ending = False  # the end is being recorded: a late signal changes nothing
        self.ranks: list[dict[str, Any]] = []  # a torchrun run's ranks (dist.setup)
        self.dead: list[dict[str, Any]] = []  # the ranks found dead when a signal came
        self.gpu_uuids: list[str] | None = None  # the run's GPUs (run_gpus), once known
        self.pause_at = pause_step_from_env()
        self.go_on = False  # SIGUSR1 during a test pause
        self.background: list[Periodic] = []

    # signals ---------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested = True
        if self.ending:
            return
        if self.ranks and not dist.cancel_requested(self.run.path):
            # Not bertui's cancel: torchrun stopping the survivors of a rank that died. Stop
            # now (no collective would meet), naming it; else it is a cancel like any other.
            self.dead = dist.dead_ranks(self.ranks, socket.gethostname())
            if self.dead:
                raise RankLost(dist.describe_dead(self.dead))
        if not self.training:
            from bertui.core.training import Cancelled

            raise Cancelled(signal.Signals(signum).name)

    def _on_go_on(self, _signum: int, _frame: Any) -> None:
        self.go_on = True

    def check_cancel(self) -> None:
        if self.stop_requested:
            from bertui.core.training import Cancelled

            raise Cancelled("SIGTERM")

    def at_step(self, step: int, saved: bool) -> None:
        """Called by the engine at every training step's end (``saved=False``, before it looks
        at ``stop_requested``) and after every checkpoint (``saved=True``). Only the test pause
        (``BERTUI_TEST_PAUSE_AT_STEP``) does anything here."""
        if self.pause_at is None or saved or step != self.pause_at:
            return
        self.rec.set(paused_at_step=step)
        print(f"test pause at step {step}: waiting for a signal", flush=True)
        deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
        while not (self.stop_requested or self.go_on) and time.monotonic() < deadline:
            time.sleep(0.05)  # a signal's handler runs in between (this is the main thread)
        self.rec.set(paused_at_step=None)

    # lifecycle -------------------------------------------------------------------------------

    def main(self) -> int:
        os.umask(0o077)  # everything the run writes (checkpoints/, model/) is private too
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if self.pause_at is not None:
            signal.signal(signal.SIGUSR1, self._on_go_on)
        import psutil

        first_start = self.rec.status.get("started")
        self.rec.set(
            state="running",
            pid=os.getpid(),
            pid_started=psutil.Process().create_time(),
            host=socket.gethostname(),
            started=first_start or time.time(),
            ended=None,
            error=None,
            resumed=self.resume or None,
            paused_at_step=None,
            ranks=None,  # an earlier start's (join_ranks records this one's)
        )
        if dist.is_main():
            dist.clear_cancel(self.run.path)
        self.start_background()
        code = EXIT_FAILED
        try:
            self.join_ranks()
            code = self.execute()
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a status
            code = self._fail(exc)
        finally:
            self.stop_background()
        return code

    def join_ranks(self) -> None:
        """Under torchrun: join the process group, learn every rank's pid (status.json's
        ``ranks``, what a cancel signals and what a failure names), and say how the run is
        spread. Either way, say whether its world size changed since its last start (a
        resume with another ``--nproc``: the data order then differs)."""
        before = self.rec.status.get("world_size") or 1
        if not dist.distributed():
            self.rec.set(world_size=1, ranks=None, agent_pid=None)
            size = 1
        else:
            self.ranks = dist.setup()
            size = len(self.ranks)
            hosts = sorted({r["host"] for r in self.ranks})
            self.rec.set(world_size=size, ranks=self.ranks, agent_pid=os.getppid())
            self.rec.log(f"torchrun: {size} processes on {len(hosts)} machine"
                         f"{'s' if len(hosts) > 1 else ''} (this is rank {dist.rank()})")
        if self.resume and before != size:
            self.rec.log(f"the world size changed from {before} to {size} processes since the "
                         "last start: the data order differs from an uninterrupted run",
                         "warning")

    def start_background(self) -> None:
        """The heartbeat (status.json every HEARTBEAT_SECONDS) and the telemetry sampler, each
        in a daemon thread of its own: a sample that raises or hangs cannot delay a beat."""
        self.background = [Periodic(self.rec.beat, HEARTBEAT_SECONDS, "bertui-heartbeat").start()]
        if self.telemetry_on:
            sampler = Sampler(lambda sample: self.rec.emit("telemetry", **sample),
                              interval=HEARTBEAT_SECONDS, gpus=self.run_gpus)
            self.background.append(sampler.start())

    def run_gpus(self) -> tuple[list[str] | None, list[int] | None]:
        """What the telemetry samples (in its own thread): the GPUs this run uses, by NVML
        UUID (CUDA_VISIBLE_DEVICES' by index or UUID; under torchrun the first
        LOCAL_WORLD_SIZE of them, one a rank), and the pids of its ranks here."""
        if self.gpu_uuids is None:
            from bertui.core.telemetry import visible_gpus

            visible = visible_gpus()
            if visible is not None and dist.distributed():
                visible = visible[: int(os.environ.get("LOCAL_WORLD_SIZE", len(visible)))]
            self.gpu_uuids = visible
        host = socket.gethostname()
        pids = [pid for pid, _ in dist.local_pids(self.ranks, host)] if self.ranks else None
        return self.gpu_uuids, pids

    def stop_background(self) -> None:
        for thread in self.background:
            thread.stop()

    def _fail(self, exc: BaseException) -> int:
        from bertui.core.training import Cancelled

        if isinstance(exc, RankLost):
            return self._end("failed", str(exc), EXIT_FAILED)
        if self.ranks and not isinstance(exc, BadInput):
            # A collective that failed (or a signal) because a peer is gone: name it.
            dead = self.dead or dist.dead_ranks(self.ranks, socket.gethostname())
            if dead and not dist.cancel_requested(self.run.path):
                traceback.print_exc()
                return self._end("failed", dist.describe_dead(dead), EXIT_FAILED)
        if isinstance(exc, (Cancelled, KeyboardInterrupt)):
            return self._end("cancelled", None, EXIT_CANCELLED)
        if isinstance(exc, BadInput):
            return self._end("failed", str(exc), EXIT_BAD_INPUT)
        traceback.print_exc()
        message = describe_failure(exc, self.rec.status.get("batch_size"), self.run.path)
        return self._end("failed", message, EXIT_FAILED)

    def _end(self, state: str, error: str | None, code: int) -> int:
        # The background threads stop (and are joined) first: run_end is the log's last line
        # and the end state the last status written, never followed by a beat or a sample.
        self.ending = True
        self.stop_background()
        try:
            self.rec.set(state=state, ended=time.time(), error=error)
            self.rec.emit("run_end", state=state, error=error)
        except OSError:
            traceback.print_exc()
        if error:
            print(f"bertui worker: {state}: {error}", file=sys.stderr, flush=True)
        if state in ("finished", "cancelled"):
            dist.finish()  # every rank got here: leave the process group together
        return code

    # the run ---------------------------------------------------------------------------------

    def execute(self) -> int:
        from bertui.core.engine import run_experiment

        finished = run_experiment(self.run, self.rec, self)
        if not finished:
            return self._end("cancelled", None, EXIT_CANCELLED)
        return self._end("finished", None, EXIT_FINISHED)


def describe_failure(exc: BaseException, batch_size: int | None, run_dir: Path) -> str:
    """One line for status.json: what went wrong and what to try."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "OutOfMemoryError" in name or "CUDA out of memory" in text:
        b = batch_size or 0
        hint = f"try --batch-size {max(1, b // 2)}" if b > 1 else "try a shorter --max-length"
        return f"out of GPU memory at batch size {b}; {hint} (or --auto-batch-size)"
    if isinstance(exc, MemoryError):
        b = batch_size or 0
        return f"out of memory at batch size {b}; try --batch-size {max(1, b // 2)}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (
            f"disk full while writing in {run_dir}; free some space, then "
            f"'bertui resume {run_dir.name}'"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS):
        return f"cannot write {exc.filename or run_dir}: {exc.strerror}"
    return f"{name}: {text}" if text else name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {WORKER_MODULE}",
        description="Run one bertui run (started detached by bertui train / resume).",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run's directory")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # a usage error: argparse printed it; exit 2 (bad input)
        return EXIT_BAD_INPUT if exc.code else 0
    run_dir = args.run_dir.resolve()
    if not (run_dir / CONFIG_FILE).exists():
        print(f"bertui.worker: no run at {run_dir}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if read_json(run_dir / STATUS_FILE, {}).get("state") == "finished":
        print(f"bertui.worker: run {run_dir.name} already finished", file=sys.stderr)
        return EXIT_BAD_INPUT
    # One worker a run: rank 0 holds the run's lock until it exits (the kernel drops it then).
    # The wait covers a client that holds it for a moment while it marks the run queued.
    lock = lock_run(run_dir, wait=5.0) if dist.is_main() else -1
    if lock is None:
        print(f"bertui.worker: run {run_dir.name} already has a worker; this one exits",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = Worker(run_dir, resume=args.resume).main()
        # Under torchrun a cancel is no failure: a rank's status 130 would have the agent
        # report "bertui.worker FAILED" (with its traceback) in worker.log. status.json says
        # cancelled.
        return 0 if code == EXIT_CANCELLED and dist.distributed() else code
    finally:
        if lock >= 0:  # every write is done: a resume need not wait for the interpreter's exit
            os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
