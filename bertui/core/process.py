"""The processes of a run: starting a detached worker, its lock, and claiming a run.

``spawn`` starts ``python -m bertui.worker RUN_DIR`` through a short-lived launcher (this
module run as ``python -m bertui.core.process RUN_DIR [--resume]``) in a new session, so the
worker is no child of the client: no zombie when it ends, no SIGHUP when the terminal goes, its
output in worker.log. The core names the worker module; it never imports it.

``lock_run`` is the run's worker lock (one worker a run; a dead worker's lock is gone);
``claim_run`` holds a run against every other claim (resume, delete) for a ``with`` block.

A study's runner (``python -m bertui.study_runner STUDY_DIR``) is started the same way
(``spawn_study``: the launcher with ``--study``), its output in the study's runner.log, and holds
the study directory's lock as a worker holds its run's.
"""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bertui.core.runs import CONFIG_FILE, LOCK_FILE, LOG_FILE, Run, RunError

WORKER_MODULE = "bertui.worker"  # the run process (``python -m bertui.worker RUN_DIR``)
STUDY_RUNNER_MODULE = "bertui.study_runner"  # a study's process (``… STUDY_DIR``)
STUDY_FILE, RUNNER_LOG = "study.toml", "runner.log"  # a study directory's (bertui.core.studies)
LAUNCHER_MODULE = "bertui.core.process"  # this module: the launcher ``spawn`` runs
# How long a launcher may take to start the worker and print its pid.
SPAWN_TIMEOUT_SECONDS = 60.0
# A worker lets go of its lock a moment after it records its end (cancelled, failed): a client
# that read that end waits this long for it before it calls the worker alive.
WORKER_EXIT_SECONDS = 10.0
# lock_run's lock is per process: this one serialises the threads of one client (a double key
# press, a delete in the background) that claim a run (resume_run, delete_run).
CLAIM = threading.Lock()


# --- the worker lock --------------------------------------------------------------------------


def lock_run(path: Path, wait: float = 0.0) -> int | None:
    """Take the run's worker lock, waiting up to ``wait`` seconds; return its descriptor (the
    lock lasts while it is open) or None when another process holds it.

    It is a POSIX record lock (``lockf``) on ``RUN_DIR/worker.lock``: the kernel drops it when
    its process exits, however it exits (SIGKILL included), and the DataLoader processes a
    worker forks do not inherit it. So a client can tell a live worker from a dead one without
    trusting pids or heartbeats, and two workers never write one run. Within one process the
    lock is not exclusive (POSIX locks are per process): callers serialise their threads
    (``CLAIM``). On a filesystem without POSIX locks (some NFS, FUSE, SMB mounts) the
    descriptor comes back unlocked: bertui then goes by pids and heartbeats alone.
    """
    import fcntl

    fd = os.open(Path(path) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: another process has it
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                return fd  # a filesystem without POSIX locks: pids and heartbeats only
            os.close(fd)
            raise
        except BaseException:
            os.close(fd)
            raise
        time.sleep(0.1)


@contextmanager
def claim_run(run: Run, then: str) -> Iterator[None]:
    """Hold ``run`` against every other claim (resume, delete) for the ``with`` block: this
    process's threads by ``CLAIM``, other processes and a live worker by the worker lock
    (waiting up to ``WORKER_EXIT_SECONDS`` for a worker that is ending). A RunError, with
    ``then`` as its advice, when a worker lives on."""
    with CLAIM:
        try:
            fd = lock_run(run.path, wait=WORKER_EXIT_SECONDS)
        except FileNotFoundError:
            raise RunError(f"run {run.id} no longer exists") from None
        except OSError as exc:
            raise RunError(f"cannot lock run {run.id}: {exc.strerror or exc}") from None
        if fd is None:
            pid = run.status.get("pid")
            raise RunError(f"run {run.id} still has a live worker"
                           f"{f' (pid {pid})' if pid else ''}; stop it {then}")
        try:
            yield
        finally:
            os.close(fd)


# --- starting a worker ------------------------------------------------------------------------


def worker_command(run_dir: Path, resume: bool = False, module: str = WORKER_MODULE) -> list[str]:
    """The worker's command line (or, with the study runner's ``module``, a runner's)."""
    return [sys.executable, "-m", module, str(run_dir), *(["--resume"] if resume else [])]


def spawn(run_dir: Path, resume: bool = False, *, study: bool = False,
          env: Mapping[str, str] | None = None, nproc: int | None = None) -> int:
    """Start a detached worker for ``run_dir`` (with ``study``: the runner of the study
    directory ``run_dir``) and return its pid; a RunError (one line) when it cannot be
    started. ``env``: variables set for the worker on top of ours (a study runner pins a run
    to its GPU with ``CUDA_VISIBLE_DEVICES``). A run of several processes is torchrun's (its
    pid is the agent's); ``nproc`` overrides the processes its config names (a resume)."""
    cmd = [sys.executable, "-m", LAUNCHER_MODULE, str(run_dir), *(["--resume"] if resume else []),
           *(["--study"] if study else []), *(["--nproc", str(nproc)] if nproc else [])]
    try:
        out = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            start_new_session=True,
            check=False,
            timeout=SPAWN_TIMEOUT_SECONDS,
            env={**os.environ, **env} if env else None,
        )
    except subprocess.TimeoutExpired:
        reason = f"its launcher did not answer in {SPAWN_TIMEOUT_SECONDS:.0f} s"
    except OSError as exc:  # no such interpreter, not executable, out of processes
        reason = f"{exc.strerror or exc} ({exc.filename or cmd[0]})"
    else:
        pid = out.stdout.strip()
        if out.returncode == 0 and pid.isdigit():
            return int(pid)
        said = (out.stderr.strip() or out.stdout.strip()).splitlines()
        reason = said[-1] if said else f"its launcher exited with status {out.returncode}"
    raise RunError(f"could not start the {'study runner' if study else 'worker'}: {reason}")


def spawn_study(study_dir: Path, resume: bool = False) -> int:
    """Start a detached runner for the study directory ``study_dir``; its pid."""
    return spawn(study_dir, resume, study=True)


def launch(run_dir: Path, resume: bool = False, study: bool = False,
           nproc: int | None = None) -> int:
    """The launcher's work: start the worker (or a study's runner) in a new session with its
    output appended to worker.log (runner.log), print its pid, and return (the process is then
    reparented away from us)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = worker_command(run_dir, resume, STUDY_RUNNER_MODULE if study else WORKER_MODULE)
    if not study:  # a run of several processes: torchrun over the worker (core.distributed)
        from bertui.core.distributed import launch_plan

        plan = launch_plan(run_dir, resume, nproc)
        if plan is not None:
            command, extra = plan
            for key, value in extra.items():
                env.setdefault(key, value)
    with open(run_dir / (RUNNER_LOG if study else LOG_FILE), "ab", buffering=0) as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=run_dir,
        )
    print(proc.pid, flush=True)
    return proc.pid


def main(argv: list[str] | None = None) -> int:
    """``python -m bertui.core.process RUN_DIR [--resume]``: the launcher ``spawn`` runs."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {LAUNCHER_MODULE}", description="Start a run's worker, detached."
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--study", action="store_true", help="RUN_DIR is a study's: its runner")
    parser.add_argument("--nproc", type=int, default=None,
                        help="processes of this start (default: the run's config)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    if not (run_dir / (STUDY_FILE if args.study else CONFIG_FILE)).exists():
        print(f"no {'study' if args.study else 'run'} at {run_dir}", file=sys.stderr)
        return 2
    launch(run_dir, args.resume, args.study, args.nproc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
