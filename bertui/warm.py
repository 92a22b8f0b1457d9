"""Warm starts: a study's runs start from a process that has already imported torch.

A worker spends its first seconds importing torch, transformers and scikit-learn (about 6 s of
CPU on this project's 2-core machines), the same seconds for every run. A study runner that
runs its runs on this machine starts one **warm starter** (``python -m bertui.warm``): a small,
single-threaded process that imports what a worker imports and then, for each run the runner
asks for, forks. The child starts a session of its own, puts its output in the run's
worker.log, works in the run's folder and is the run's worker (``bertui.worker.main``), exactly
as the one the detached launcher (``bertui.core.process``) starts: it takes the run's lock,
writes status.json with its own pid, is cancelled with SIGTERM and resumes from its
checkpoint; it outlives the runner and the starter. Only a run of one process starts warm (a
torchrun run goes through the launcher).

The starter reads one JSON object a line on stdin (``{"run_dir", "resume", "env"}``) and answers
each with one line on stdout (``{"pid": N}`` or ``{"error": "…"}``). It reaps the children it
forked and exits when its stdin ends (the runner went away); the runs it started go on.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from bertui.core.runs import LOG_FILE, RunError

WARM_MODULE = "bertui.warm"
READY = "ready"
ANSWER_SECONDS = 60.0  # how long the runner waits for the starter to answer

# What a worker imports on its way to training (its phases import them lazily).
PRELOAD = (
    "bertui.worker",
    "bertui.core.engine",
    "bertui.core.arms",
    "bertui.core.training",
    "bertui.core.trainer_hooks",
    "bertui.core.metrics",
    "bertui.core.stats",
    "transformers",
    "transformers.trainer",
    "transformers.models.bert.modeling_bert",
    "accelerate",
    "safetensors.torch",
    "sklearn.linear_model",
    "sklearn.metrics",
    "scipy.stats",
)


def preload() -> None:
    """Import what a worker would (what is not installed is left to the worker to report)."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the worker will say what is wrong, not the starter
            pass


def become_worker(run_dir: Path, resume: bool, env: Mapping[str, str]) -> int:
    """In the forked child: detach as the launcher does, then run the worker."""
    os.setsid()
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.environ.update(env)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(run_dir / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own fds, for its life
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(run_dir)
    print(f"bertui.warm: worker {os.getpid()} forked by the warm starter {os.getppid()}",
          flush=True)
    threads = env.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        import torch

        torch.set_num_threads(int(threads))
    from bertui.worker import main

    return main([str(run_dir), *(["--resume"] if resume else [])])


def fork_worker(request: dict[str, Any]) -> int:
    """Fork the run's worker; its pid (the parent's side)."""
    run_dir = Path(request["run_dir"])
    if not run_dir.is_dir():
        raise RunError(f"no run folder {run_dir}")
    pid = os.fork()
    if pid == 0:  # the child: never returns to the starter's loop
        code = 1
        try:
            code = become_worker(run_dir, bool(request.get("resume")),
                                 dict(request.get("env") or {}))
        except BaseException:  # noqa: BLE001 - what the child says goes to its worker.log
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    return pid


def reap() -> None:
    """Collect the children that ended (no zombies)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(stdin: IO[str], stdout: IO[str]) -> int:
    """The starter's loop: a request a line, an answer a line, children reaped between."""
    print(json.dumps({READY: True}), file=stdout, flush=True)
    while True:
        readable, _, _ = select.select([stdin], [], [], 1.0)
        reap()
        if not readable:
            continue
        line = stdin.readline()
        if not line:
            return 0
        try:
            answer: dict[str, Any] = {"pid": fork_worker(json.loads(line))}
        except (RunError, OSError, ValueError, KeyError, TypeError) as exc:
            answer = {"error": str(exc) or type(exc).__name__}
        print(json.dumps(answer), file=stdout, flush=True)


class WarmStarter:
    """The runner's side: it starts the starter on first use and asks it for workers. Until
    the starter has imported everything (the first run of a study, which imports alongside
    it), and when it cannot be started or stops answering, ``start`` says None and the caller
    starts the worker the cold way (the launcher)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.ready = False
        self.broken = False
        self.lock = threading.Lock()

    def launch(self) -> None:
        """Start the starter (it imports in the background; nothing waits for it)."""
        if self.proc is not None or self.broken:
            return
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", WARM_MODULE], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                close_fds=True)
        except OSError:
            self.broken = True

    def _ensure(self) -> subprocess.Popen[str] | None:
        """The starter when it is ready to fork, else None (launched now if it was not)."""
        if self.broken:
            return None
        if self.proc is None:
            self.launch()
            return None
        if self.proc.poll() is not None:
            self._give_up()
            return None
        if not self.ready:
            assert self.proc.stdout is not None
            if not select.select([self.proc.stdout], [], [], 0)[0]:
                return None  # still importing
            if self._answer() != {READY: True}:
                self._give_up()
                return None
            self.ready = True
        return self.proc

    def _give_up(self) -> None:
        self.close()
        self.broken = True

    def _answer(self) -> dict[str, Any] | None:
        assert self.proc is not None and self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], ANSWER_SECONDS)
        line = self.proc.stdout.readline() if readable else ""
        try:
            answer = json.loads(line) if line else None
        except ValueError:
            answer = None
        return answer if isinstance(answer, dict) else None

    def start(self, run_dir: Path, resume: bool = False,
              env: Mapping[str, str] | None = None) -> int | None:
        """The pid of the run's forked worker; None when no starter is ready or it could not
        fork (start it the cold way)."""
        with self.lock:
            proc = self._ensure()
            if proc is None:
                return None
            assert proc.stdin is not None
            request = {"run_dir": str(run_dir), "resume": resume, "env": dict(env or {})}
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
            except OSError:
                self._give_up()
                return None
            answer = self._answer()
            if answer is None:
                self._give_up()
                return None
            if "error" in answer:  # the launcher tries it, and says why it cannot be
                return None
            return int(answer["pid"])

    def close(self) -> None:
        """Let the starter go (end of its stdin); the workers it started go on."""
        proc, self.proc, self.ready = self.proc, None, False
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner's Ctrl-C is the runner's
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    preload()
    return serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
