"""Client side of a run: check the options, write config.toml, start / resume / cancel workers.

Used by both the CLI and the TUI, so that a run started from either is the same run.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bertui.core.errors import BadInput
from bertui.core.process import claim_run, spawn
from bertui.core.runs import (
    RESUMABLE_STATES,
    Run,
    RunError,
    atomic_write_json,
    create_run,
)
from bertui.core.schema import RunOptions, to_config, validate_options  # also for callers


def build_config(o: RunOptions) -> dict[str, Any]:
    """Check the options, the model and the data (reads them), and return config.toml's
    content. Raises BadInput with a one-line reason."""
    from bertui.core import models
    from bertui.core.engine import prepare_data

    validate_options(o)
    from bertui.core.distributed import check_devices

    check_devices(o)  # --nproc: no more processes than GPUs on a GPU machine
    source = models.resolve_model(
        o.model, allow_pickle=o.allow_pickle, trust_remote_code=o.trust_remote_code, download=False
    )
    max_positions = None
    if source.path is not None:
        max_positions = models.read_config(source.path).get("max_position_embeddings")
    if max_positions and o.max_length > max_positions:
        raise BadInput(
            f"--max-length {o.max_length} is longer than the model allows ({max_positions})",
            field="max_length",
        )
    config = to_config(o)
    config["created"] = time.time()
    config["data"]["train"] = _abs_if_path(o.dataset)
    config["data"]["eval"] = _abs_if_path(o.eval_dataset)
    config["data"]["unlabeled"] = _abs_if_path(o.unlabeled)
    if source.path is not None and o.model != models.DEFAULT_SPEC and source.origin == "local":
        config["model"]["spec"] = str(source.path)
    prepared = prepare_data(config)
    config["data"]["text_column"] = prepared.text_column
    config["data"]["label_column"] = prepared.label_column
    config["labels"] = {"id2label": {str(k): v for k, v in prepared.id2label.items()}}
    config["data"]["train_rows"] = len(prepared.train)
    config["data"]["eval_rows"] = len(prepared.eval)
    config["data"]["eval_source"] = prepared.eval_source
    if not o.eval_dataset and not o.eval_split and prepared.eval_source.startswith("split "):
        # The split found now is the one the worker reads: it does not look again (a hub
        # hiccup then would have it hold out part of train instead).
        config["data"]["eval_split"] = prepared.eval_source.removeprefix("split ")
    return config


def _abs_if_path(spec: str | None) -> str | None:
    """Local files are stored as absolute paths: the worker runs in the run directory."""
    if not spec or spec == "demo" or spec.startswith("@"):
        return spec
    from bertui.core.data import is_local_spec

    if is_local_spec(spec):
        return str(Path(spec).expanduser().resolve())
    return spec


@dataclass(frozen=True)
class Executor:
    """Where a run's worker runs: ``local`` (a detached process here, with ``env`` added to its
    environment) or ``slurm`` (a batch job, ``sbatch`` with ``slurm_args``: bertui.core.slurm)."""

    kind: str = "local"
    slurm_args: str | None = None
    env: Mapping[str, str] | None = None
    nproc: int | None = None  # torchrun's processes for this start, where not the config's
    # A warm starter (``bertui.warm.WarmStarter``: ``start(run_dir, resume, env)`` → pid or
    # None) that forks a one-process run's worker from a process that has imported torch
    # already; the launcher starts it where there is none or it says None.
    warm: Any = field(default=None, compare=False)

    @classmethod
    def of(cls, run: Run) -> Executor:
        """The executor the run last ran on (what a plain ``bertui resume`` uses again)."""
        if run.status.get("executor") == "slurm":
            return cls("slurm", run.status.get("slurm_args"))
        return cls()


def start_worker(run: Run, resume: bool, executor: Executor) -> None:
    """Start the run's worker on ``executor``; a RunError (one line) when it cannot be."""
    if executor.kind == "slurm":
        from bertui.core import slurm

        slurm.submit(run, resume, executor.slurm_args, executor.nproc)
    elif executor.warm is None or not _one_process(run, resume, executor.nproc) or \
            executor.warm.start(run.path, resume, executor.env) is None:
        spawn(run.path, resume=resume, env=executor.env, nproc=executor.nproc)


def _one_process(run: Run, resume: bool, nproc: int | None) -> bool:
    """Whether the run's worker is one process (not torchrun's ranks), with the executor's
    ``nproc`` override as the launcher reads it."""
    from bertui.core.distributed import launch_plan

    return launch_plan(run.path, resume, nproc) is None


def start_run(config: dict[str, Any], home: Path | None = None,
              executor: Executor | None = None) -> Run:
    """Create the run directory and start its worker (a detached process, or a Slurm job).
    When the worker cannot be started, the new run directory is removed again and a RunError
    says why."""
    run = create_run(config, home)
    try:
        start_worker(run, False, executor or Executor())
    except RunError as exc:
        _undo_claim(run, None)
        raise RunError(f"{exc}; no run was created") from None
    return run.refresh()


def resume_run(run: Run, executor: Executor | None = None, nproc: int | None = None) -> Run:
    """Continue a cancelled, lost or failed run from its last checkpoint, in the same folder,
    on ``executor`` (by default the one it ran on: a Slurm run is resubmitted). When the
    worker cannot be started, the run's status is put back as it was."""
    _check_resumable(run)
    executor = executor or Executor.of(run)
    if nproc:  # another number of processes than the config's (bertui resume --nproc N)
        executor = replace(executor, nproc=nproc)
    # Claim the run: under its worker lock (no live worker, however stale its heartbeat looks)
    # and this process's own lock (a double key press), check again and mark it queued, so
    # that a second client reads "queued" and is refused. The worker owns status.json from
    # its first heartbeat on.
    with claim_run(run, "before resuming"):
        _check_resumable(run)
        before = dict(run.status)
        status = {
            **before,
            "state": "queued",
            "error": None,
            "ended": None,
            "pid": None,
            "heartbeat": time.time(),
            "job_id": None,  # a Slurm job's id is recorded when it is submitted
            "executor": None,
        }
        atomic_write_json(run.status_path, status)
    try:
        start_worker(run, True, executor)
    except RunError:
        _undo_claim(run, before)
        raise
    return run.refresh()


def _undo_claim(run: Run, status: dict[str, Any] | None) -> None:
    """After a spawn that failed: remove a new run (``status`` None) or put a resumed run's
    status back, unless a worker holds the run after all (a launcher that timed out)."""
    try:
        with claim_run(run, "first"):
            if status is None:
                shutil.rmtree(run.path)
            else:
                atomic_write_json(run.status_path, status)
    except (RunError, OSError):
        pass


def delete_run(run: Run) -> None:
    """Remove a run directory. An active run must be cancelled first."""
    if run.refresh().is_active:
        raise RunError(f"run {run.id} is still {run.state}; cancel it first")
    # Held until the folder is gone: no resume starts a worker in a half-deleted run.
    with claim_run(run, "first"):
        if run.refresh().is_active:  # resumed by another client meanwhile
            raise RunError(f"run {run.id} is {run.state} again; cancel it first")
        shutil.rmtree(run.path)


def _check_resumable(run: Run) -> None:
    if not run.config_path.exists():
        raise RunError(f"run {run.id} no longer exists")
    state = run.refresh().state
    if state == "finished":
        raise RunError(f"run {run.id} already finished; nothing to resume")
    if state not in RESUMABLE_STATES:
        raise RunError(f"run {run.id} is {state}; only cancelled, lost or failed runs resume")


def cancel_run(run: Run, wait: float = 0.0) -> bool:
    """Ask the worker to stop at its next step (SIGTERM; a Slurm job's is ``scancel``). With
    ``wait``, wait that many seconds for it to record the end. Returns True if the run is no
    longer active."""
    from bertui.core import slurm

    if not slurm.reconcile(run).is_active:
        raise RunError(f"run {run.id} is not running (it is {run.state})")
    if slurm.is_slurm(run):  # wherever it runs: scancel reaches it
        return slurm.cancel_run(run, wait)
    if not run.on_this_host:  # a shared runs folder: that pid is some other process here
        raise RunError(f"run {run.id} runs on {run.status.get('host')}; cancel it there")
    pid = run.status.get("pid")
    ranks = run.status.get("ranks") or []
    if ranks:  # torchrun's: the request first, then every rank here (each has its own session)
        from bertui.core.distributed import local_pids, request_cancel, signal_ranks

        request_cancel(run.path)
        pids = local_pids(ranks, str(run.status.get("host")))
        signal_ranks([*pids, *([(int(pid), run.status.get("pid_started"))] if pid and
                               int(pid) not in dict(pids) else [])])
    elif pid:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + wait
    while time.time() < deadline:
        if not run.refresh().is_active:
            return True
        time.sleep(0.2)
    return not run.refresh().is_active
