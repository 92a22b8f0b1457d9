"""The run process: ``python -m bertui.worker RUN_DIR [--resume]``.

All that it knows comes from ``RUN_DIR/config.toml``; all that it tells goes into ``RUN_DIR``
(status.json, events.jsonl, metrics.json, model/, checkpoints/). It runs in its own session,
with no terminal, so that closing the TUI or losing SSH does not stop it.

``python -m bertui.worker --spawn RUN_DIR [--resume]`` starts such a worker fully detached (a
new session, reparented away from the caller, output to worker.log) and prints its pid.

Signals: SIGTERM or SIGINT = cancel (stop at the next step, save a checkpoint, state
``cancelled``); SIGHUP is ignored. Any exception = state ``failed`` with a one-line reason in
status.json and the traceback in worker.log.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from bertui.core.errors import BadInput
from bertui.core.runs import (
    HEARTBEAT_SECONDS,
    Run,
    append_event,
    atomic_write_json,
    lock_run,
    make_event,
    read_json,
)

EXIT_FINISHED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


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

    # Written even with monitoring events off (they carry the run's outcome, not its pulse).
    ESSENTIAL = frozenset({"run_start", "run_end", "resume", "phase", "baseline", "eval", "log"})

    def emit(self, type_: str, step: int | None = None, **fields: Any) -> None:
        if not self.enabled or (not self.events_on and type_ not in self.ESSENTIAL):
            return
        step = self.live.get("step", 0) if step is None else step
        append_event(self.run.events_path, make_event(type_, step or 0, **fields))

    def log(self, message: str, level: str = "info") -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
        self.emit("log", level=level, message=message)


class Worker:
    def __init__(self, run_dir: Path, resume: bool = False) -> None:
        self.run = Run.load(run_dir)
        if not self.run.config:
            raise SystemExit(f"bertui.worker: {run_dir} has no readable config.toml")
        rank = int(os.environ.get("RANK", "0"))
        monitor = self.run.config.get("monitor", {})
        self.rec = Recorder(self.run, enabled=rank == 0, events=monitor.get("events", True))
        self.telemetry_on = monitor.get("telemetry", True)
        self.resume = resume
        self.stop_requested = False
        self.training = False
        self.heartbeat: Any = None

    # signals ---------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested = True
        if not self.training:
            from bertui.core.training import Cancelled

            raise Cancelled(signal.Signals(signum).name)

    def check_cancel(self) -> None:
        if self.stop_requested:
            from bertui.core.training import Cancelled

            raise Cancelled("SIGTERM")

    # lifecycle -------------------------------------------------------------------------------

    def main(self) -> int:
        os.umask(0o077)  # everything the run writes (checkpoints/, model/) is private too
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        import psutil

        me = psutil.Process()
        first_start = self.rec.status.get("started")
        self.rec.set(
            state="running",
            pid=os.getpid(),
            pid_started=me.create_time(),
            host=socket.gethostname(),
            started=first_start or time.time(),
            ended=None,
            error=None,
            resumed=self.resume or None,
        )
        self.heartbeat = self._start_heartbeat()
        code = EXIT_FAILED
        try:
            code = self.execute()
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a status
            code = self._fail(exc)
        finally:
            self.heartbeat.stop()
        return code

    def _start_heartbeat(self):
        from bertui.core.telemetry import Sampler

        def tick(sample: dict[str, Any]) -> None:
            self.rec.beat()
            if self.telemetry_on:
                self.rec.emit("telemetry", **sample)

        return Sampler(tick, interval=HEARTBEAT_SECONDS).start()

    def _fail(self, exc: BaseException) -> int:
        from bertui.core.training import Cancelled

        if isinstance(exc, (Cancelled, KeyboardInterrupt)):
            return self._end("cancelled", None, EXIT_CANCELLED)
        if isinstance(exc, BadInput):
            return self._end("failed", str(exc), EXIT_BAD_INPUT)
        traceback.print_exc()
        message = describe_failure(exc, self.rec.status.get("batch_size"), self.run.path)
        return self._end("failed", message, EXIT_FAILED)

    def _end(self, state: str, error: str | None, code: int) -> int:
        # The heartbeat thread stops (and is joined) first: run_end is the log's last line and
        # the end state the last status written, never followed by a telemetry tick.
        if self.heartbeat is not None:
            self.heartbeat.stop()
        try:
            self.rec.set(state=state, ended=time.time(), error=error)
            self.rec.emit("run_end", state=state, error=error)
        except OSError:
            traceback.print_exc()
        if error:
            print(f"bertui worker: {state}: {error}", file=sys.stderr, flush=True)
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


def spawn(run_dir: Path, resume: bool = False) -> int:
    """Start a detached worker for ``run_dir`` and return its pid.

    The worker is started through a short-lived launcher in a new session, so it is no child of
    the caller (no zombie when it ends, no SIGHUP when the terminal goes) and its output goes
    to worker.log.
    """
    cmd = [sys.executable, "-m", "bertui.worker", "--spawn", str(run_dir)]
    if resume:
        cmd.append("--resume")
    out = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        start_new_session=True,
        check=False,
        timeout=60,
    )
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise RuntimeError(
            f"could not start the worker: {out.stderr.strip() or out.stdout.strip()}"
        )
    return int(out.stdout.strip())


def _launch(run_dir: Path, resume: bool) -> int:
    log = open(run_dir / "worker.log", "ab", buffering=0)  # noqa: SIM115 - handed to the child
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [sys.executable, "-m", "bertui.worker", str(run_dir)] + (["--resume"] if resume else [])
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
        env=env,
        cwd=run_dir,
    )
    print(proc.pid, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in args
    spawn_mode = "--spawn" in args
    paths = [a for a in args if not a.startswith("--")]
    if len(paths) != 1:
        print("usage: python -m bertui.worker [--spawn] RUN_DIR [--resume]", file=sys.stderr)
        return EXIT_BAD_INPUT
    run_dir = Path(paths[0]).resolve()
    if not (run_dir / "config.toml").exists():
        print(f"bertui.worker: no run at {run_dir}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if spawn_mode:
        return _launch(run_dir, resume)
    if read_json(run_dir / "status.json", {}).get("state") == "finished":
        print(f"bertui.worker: run {run_dir.name} already finished", file=sys.stderr)
        return EXIT_BAD_INPUT
    # One worker a run: rank 0 holds the run's lock until it exits (the kernel drops it then).
    # The wait covers a client that holds it for a moment while it marks the run queued.
    lock = lock_run(run_dir, wait=5.0) if int(os.environ.get("RANK", "0")) == 0 else -1
    if lock is None:
        print(f"bertui.worker: run {run_dir.name} already has a worker; this one exits",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return Worker(run_dir, resume=resume).main()
    finally:
        if lock >= 0:  # every write is done: a resume need not wait for the interpreter's exit
            os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
