"""One run on several processes: the torchrun command, and what its ranks agree on.

``bertui train --nproc N`` (``[launch] nproc`` in config.toml) starts the worker as
``python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts 0 -m
bertui.worker RUN_DIR`` (multi-node: ``--nnodes M --node-rank R --rdzv-backend c10d
--rdzv-endpoint HOST:PORT``). torchrun is part of torch: no new dependency, and the
transformers ``Trainer`` does the data-parallel training (DDP; gloo on CPU, NCCL on GPU).

The rules of such a run:

- **Rank 0 owns the run directory.** It alone holds the run's lock and writes status.json,
  events.jsonl, metrics.json, predictions.npz, model/ and arms/ (the Trainer itself saves
  checkpoints from the world's process zero). Every rank runs the same phases, so that the
  collectives (training steps, ``Trainer.predict``) meet; the other ranks' results are the
  same numbers and go nowhere. Each rank's output goes to worker.log prefixed ``[rankN]:``
  (torchrun's ``--tee``; its per-rank files are in ``RUN_DIR/logs``).
- **The process group times out in minutes** (``PROCESS_GROUP_TIMEOUT_SECONDS``, not torch's
  30): a rank that hangs in a collective because a peer vanished without torchrun noticing
  (its agent killed too, a remote machine gone) fails the run within that time.
- **Cancel is collective.** ``bertui cancel`` leaves ``CANCEL_FILE`` in the run directory and
  sends SIGTERM to every rank on this host; at every step's end the ranks all-reduce their stop
  flags (``any_rank``), so that all of them stop at the same step, save the checkpoint
  together, and exit; the run is ``cancelled`` and resumable (with any number of processes).
- **A rank that dies** (SIGKILL, out of memory): torchrun's agent sees it within
  ``MONITOR_SECONDS``, sends SIGTERM to the other ranks and SIGKILL after
  ``AGENT_KILL_SECONDS``; rank 0, signalled with no ``CANCEL_FILE``, finds the dead rank among
  the pids the ranks exchanged at the start (``status.json``'s ``ranks``) and records the run
  ``failed`` naming it (``dead_ranks``). Should rank 0 itself die, the lock goes with it and
  clients show the run ``lost``. Either way it resumes from its last checkpoint.

This module imports no torch at import (the launcher and the CLI use its command builder).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bertui.core.schema import RunOptions, from_config

# The process group's timeout (TrainingArguments' ddp_timeout and ours): a collective that
# waits this long for a peer fails (torch's default is 30 minutes).
PROCESS_GROUP_TIMEOUT_SECONDS = 180
# torchrun's agent looks at its workers this often, and kills (SIGKILL) the survivors of a
# failed rank this long after it asked them to stop (SIGTERM): its own constant in torch 2.13.
MONITOR_SECONDS = 0.5
AGENT_KILL_SECONDS = 30
# How long a run with a dead rank takes at most to end failed (or lost): the agent's look, its
# grace, and rank 0's last writes.
FAILURE_BOUND_SECONDS = MONITOR_SECONDS + AGENT_KILL_SECONDS + 10
# Left in the run directory by ``bertui cancel`` before it signals the ranks: a SIGTERM then
# is the user's cancel, not torchrun shutting the survivors of a dead rank down.
CANCEL_FILE = "cancel.request"
TORCHRUN_LOGS = "logs"  # torchrun's per-rank stdout/stderr files, under the run directory
LOG_PREFIX = "[rank${rank}]: "  # torchrun's template: ${rank} is the global rank

_control: Any = None  # the process group the ranks agree in (gloo, CPU tensors)


# --- where this process stands (from torchrun's environment; no torch) ------------------------


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_main() -> bool:
    """Whether this process writes the run directory (rank 0, or a run of one process)."""
    return rank() == 0


def distributed() -> bool:
    return world_size() > 1


# --- the launcher's command -------------------------------------------------------------------


def processes(options: RunOptions) -> int:
    """How many processes the run has on all its machines."""
    return options.nproc * options.nnodes


def torchrun_command(run_dir: Path, options: RunOptions, resume: bool,
                     nproc: int | None = None) -> list[str]:
    """torchrun over ``bertui.worker RUN_DIR`` for a run of several processes (``nproc``
    overrides the config's, for a resume with another number of processes)."""
    per_node = nproc or options.nproc
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if options.nnodes > 1:
        endpoint = options.rdzv_endpoint or ""
        cmd += ["--nnodes", str(options.nnodes), "--node-rank", str(options.node_rank),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                "--rdzv-id", "bertui-" + endpoint.replace(":", "-").replace(".", "-")]
    else:
        cmd += ["--standalone"]
    cmd += ["--nproc-per-node", str(per_node), "--max-restarts", "0",
            "--monitor-interval", str(MONITOR_SECONDS), "--tee", "3",
            "--log-dir", str(Path(run_dir) / TORCHRUN_LOGS),
            "-m", "bertui.worker", str(run_dir), *(["--resume"] if resume else [])]
    return cmd


def worker_env(options: RunOptions, env: dict[str, str], nproc: int | None = None) -> None:
    """torchrun's environment: rank prefixes on every line of worker.log, gloo on the loopback
    of a one-machine run, and the CPU's threads shared out among its processes (torchrun
    would give each one thread); set values win."""
    per_node = nproc or options.nproc
    env.setdefault("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE", LOG_PREFIX)
    if options.nnodes == 1:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env.setdefault("OMP_NUM_THREADS", str(max(1, (cpus or 1) // max(1, per_node))))


def launch_plan(run_dir: Path, resume: bool, nproc: int | None = None
                ) -> tuple[list[str], dict[str, str]] | None:
    """torchrun's command and environment additions for a run of several processes (read
    from its config.toml), or None for a run of one process."""
    from bertui.core.runs import Run

    options = from_config(Run.load(run_dir).config)
    if nproc is None and processes(options) <= 1:
        return None
    if nproc is not None and nproc * options.nnodes <= 1:
        return None
    env: dict[str, str] = {}
    worker_env(options, env, nproc)
    return torchrun_command(run_dir, options, resume, nproc), env


# --- the ranks at run time --------------------------------------------------------------------


def setup() -> list[dict[str, Any]]:
    """Join the process group (gloo on CPU, NCCL on this rank's GPU), with the timeout above,
    and exchange who is who: every rank's rank, local rank, host, pid and pid start time."""
    import socket

    import psutil
    import torch
    import torch.distributed as dist

    global _control
    timeout = timedelta(seconds=PROCESS_GROUP_TIMEOUT_SECONDS)
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
            dist.init_process_group("nccl", timeout=timeout, device_id=torch.device(
                "cuda", local_rank()))
        else:
            dist.init_process_group("gloo", timeout=timeout)
    backend = dist.get_backend()
    _control = dist.group.WORLD if backend == "gloo" else dist.new_group(
        backend="gloo", timeout=timeout)
    me = {"rank": rank(), "local_rank": local_rank(), "host": socket.gethostname(),
          "pid": os.getpid(), "pid_started": psutil.Process().create_time()}
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, me, group=_control)
    return sorted(everyone, key=lambda r: r["rank"])


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Whether each flag is set on any rank (one all-reduce; every rank must call it at the
    same point); the flags themselves in a run of one process."""
    if _control is None:
        return tuple(bool(f) for f in flags)
    import torch
    import torch.distributed as dist

    values = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=_control)
    return tuple(bool(v) for v in values.tolist())


def finish() -> None:
    """Leave the process group (after a run that ended well on every rank)."""
    global _control
    if _control is None:
        return
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - the process exits next anyway
        pass
    _control = None


def cancel_requested(run_dir: Path) -> bool:
    """Whether ``bertui cancel`` asked this run to stop (its ``CANCEL_FILE``)."""
    return (Path(run_dir) / CANCEL_FILE).exists()


def request_cancel(run_dir: Path) -> None:
    """Leave ``CANCEL_FILE`` (the client, before it signals the ranks)."""
    try:
        (Path(run_dir) / CANCEL_FILE).write_text(f"{time.time()}\n")
    except OSError:
        pass  # the signal still stops the run; only the reason's wording may suffer


def clear_cancel(run_dir: Path) -> None:
    """A starting rank 0 forgets an earlier run's cancel request."""
    try:
        (Path(run_dir) / CANCEL_FILE).unlink()
    except OSError:
        pass


def alive(entry: dict[str, Any]) -> bool:
    """Whether the process of a rank entry (``setup``'s) still runs here."""
    import psutil

    try:
        proc = psutil.Process(int(entry["pid"]))
        started = entry.get("pid_started")
        same = started is None or abs(proc.create_time() - float(started)) < 1.0
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def dead_ranks(ranks: list[dict[str, Any]], host: str) -> list[dict[str, Any]]:
    """The ranks on ``host`` (this machine) whose process is gone."""
    return [r for r in ranks if r.get("host") == host and r.get("pid") != os.getpid()
            and not alive(r)]


def describe_dead(dead: list[dict[str, Any]]) -> str:
    """The one line that names the dead ranks ("rank 1 (pid 1234) died")."""
    names = ", ".join(f"rank {r['rank']} (pid {r['pid']})" for r in dead)
    return f"{names} died; the other ranks were stopped (resume goes on from the last checkpoint)"


def local_pids(ranks: list[dict[str, Any]], host: str) -> list[tuple[int, float | None]]:
    """The (pid, start time) of every rank on ``host``: what a cancel signals."""
    return [(int(r["pid"]), r.get("pid_started")) for r in ranks
            if r.get("host") == host and r.get("pid")]


def signal_ranks(pids: list[tuple[int, float | None]], signum: int | None = None) -> int:
    """Send SIGTERM (or ``signum``) to each rank process still the one recorded (same start
    time: no pid reused since); how many were signalled. The process itself, not its group:
    its DataLoader workers must live on until it has saved its checkpoint."""
    import signal

    import psutil

    sent = 0
    for pid, started in pids:
        try:
            proc = psutil.Process(pid)
            if started is not None and abs(proc.create_time() - float(started)) >= 1.0:
                continue
            proc.send_signal(signum or signal.SIGTERM)
            sent += 1
        except psutil.Error:
            pass
    return sent


def check_devices(options: RunOptions) -> None:
    """A BadInput (one line) when a run asks for more processes than this machine has GPUs
    (on a GPU machine each process trains on its own GPU; on a CPU any number may share it)."""
    if options.nproc <= 1:
        return
    import torch

    from bertui.core.errors import BadInput

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and options.nproc > gpus:
        raise BadInput(f"--nproc {options.nproc} is more than the {gpus} GPU"
                       f"{'s' if gpus > 1 else ''} this machine shows (CUDA_VISIBLE_DEVICES); "
                       f"use --nproc {gpus} or fewer", field="nproc")
