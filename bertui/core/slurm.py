"""A run as a Slurm job: the job script, ``sbatch``, ``squeue``/``scontrol`` and ``scancel``.

With ``--executor slurm`` a run's worker is not a detached process of this machine but a
batch job: ``RUN_DIR/slurm_job.sh`` runs ``python -m bertui.worker RUN_DIR`` (the same
interpreter, so the same virtual environment, with ``BERTUI_HOME`` exported), in the run
directory, its output appended to worker.log. The run directory must be on a filesystem the
compute nodes share with this machine (Slurm's usual home or project filesystem).

``submit`` hands the job to ``sbatch --parsable --hold``, records its id in the run's
status.json (``executor = "slurm"``, ``job_id``, ``slurm_args``) and only then releases it, so
the worker always finds its job id in place and no job runs that bertui does not know of. A
refusal (``sbatch`` missing, a bad partition) is one line (``RunError``) and leaves nothing
queued.

The worker writes status.json as usual: it is the truth about the run. Slurm is asked only
what the run cannot say itself: whether its job still waits or runs (``jobs``, one ``squeue``
call for many jobs), and why a job ended when its worker recorded no end (``scontrol show
job``: Slurm's JobState and Reason). Accounting (``sacct``) is not needed. ``reconcile``
turns an active run whose job is gone into ``cancelled`` (the job was cancelled before its
worker could say so: a pending job, ``scancel``) or ``lost`` with Slurm's reason (the job
failed, hit its time limit, lost its node), so it can be resumed; ``bertui resume``
resubmits it.

``cancel_job`` is ``scancel``: Slurm sends SIGTERM to the job's processes (the worker saves a
checkpoint and records ``cancelled``) and SIGKILL after its KillWait.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from bertui.core.errors import BadInput
from bertui.core.runs import ACTIVE_STATES, Run, RunError, atomic_write_json, bertui_home

SBATCH, SQUEUE, SCONTROL, SCANCEL = "sbatch", "squeue", "scontrol", "scancel"
JOB_SCRIPT = "slurm_job.sh"
EXECUTOR = "slurm"  # status.json's ``executor`` of a run that is a Slurm job
COMMAND_TIMEOUT_SECONDS = 60.0  # a Slurm command that has not answered by then has failed
JOB_END_SECONDS = 15.0  # how long a job whose worker died may take to end (COMPLETING)
RDZV_PORT = 29500  # the c10d rendezvous port of a multi-node job, on its first node
# The job states after which nothing of the job runs any more (squeue's %T).
ENDED_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT",
})


@dataclass(frozen=True)
class Job:
    """A Slurm job as squeue (or scontrol) shows it."""

    id: str
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, ...
    reason: str = "None"

    @property
    def alive(self) -> bool:
        return self.state not in ENDED_STATES


def is_slurm(run: Run) -> bool:
    """Whether the run's worker is (or was last) a Slurm job."""
    return run.status.get("executor") == EXECUTOR and bool(run.status.get("job_id"))


def parse_slurm_args(text: str | None) -> list[str]:
    """``--slurm-args "..."`` as sbatch options (shell words); BadInput when it does not
    parse."""
    try:
        return shlex.split(text or "")
    except ValueError as exc:
        raise BadInput(f"--slurm-args: {exc} in {text!r}", field="slurm_args") from None


# --- calling Slurm ----------------------------------------------------------------------------


def _call(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; a RunError (one line) when it is missing or does not answer."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT_SECONDS)
    except FileNotFoundError:
        raise RunError(f"{argv[0]} not found: --executor slurm needs Slurm's commands (sbatch, "
                       "squeue, scontrol, scancel) on the PATH") from None
    except subprocess.TimeoutExpired:
        raise RunError(f"{argv[0]} did not answer in {COMMAND_TIMEOUT_SECONDS:.0f} s") from None
    except OSError as exc:
        raise RunError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None


def _said(out: subprocess.CompletedProcess[str]) -> str:
    """The line a failed Slurm command's answer comes down to (its first error line)."""
    lines = [line.strip() for line in (out.stderr + "\n" + out.stdout).splitlines()
             if line.strip()]
    errors = [line.split("error:", 1)[1].strip() for line in lines if "error:" in line]
    return (errors or lines or [f"exit status {out.returncode}"])[0]


def check_submission(slurm_args: str | None) -> None:
    """Ask ``sbatch --test-only`` whether Slurm would take a job with these options (nothing
    is queued); a RunError with sbatch's reason when it would not."""
    out = _call([SBATCH, "--test-only", *parse_slurm_args(slurm_args), "--wrap", "true"])
    if out.returncode != 0:
        raise RunError(f"sbatch refused the job: {_said(out)}")


def jobs(ids: list[str]) -> dict[str, Job]:
    """The jobs Slurm still knows (pending, running, or ended a short while ago), by id, in
    one ``squeue`` call; a job missing from it is gone. A RunError when Slurm cannot be
    asked (its controller is down): then nothing is known."""
    if not ids:
        return {}
    out = _call([SQUEUE, "--noheader", "--states=all", "--format=%i|%T|%r",
                 f"--jobs={','.join(ids)}"])
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # none of them is known any more
            return {}
        raise RunError(f"squeue failed: {_said(out)}")
    found: dict[str, Job] = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            found[parts[0]] = Job(parts[0], parts[1].split()[0], parts[2] or "None")
    return found


def jobs_alive(ids: list[str]) -> bool:
    """Whether any of these jobs still waits, runs or completes (False when Slurm cannot be
    asked: nothing more can be done about them)."""
    try:
        return any(job.alive for job in jobs(ids).values())
    except RunError:
        return False


def job_detail(job_id: str) -> dict[str, str]:
    """``scontrol show job``'s fields of a job (JobState, Reason, ExitCode, ...); empty when
    Slurm no longer knows it."""
    try:
        out = _call([SCONTROL, "--oneliner", "show", "job", job_id])
    except RunError:
        return {}
    fields: dict[str, str] = {}
    for word in out.stdout.split() if out.returncode == 0 else []:
        key, _, value = word.partition("=")
        fields.setdefault(key, value)
    return fields


def cancel_job(job_id: str) -> None:
    """``scancel`` the job (pending: it is removed; running: SIGTERM, then SIGKILL after
    Slurm's KillWait); a RunError with scancel's reason when it refuses."""
    out = _call([SCANCEL, job_id])
    if out.returncode != 0 and "already completing or completed" not in out.stderr:
        raise RunError(f"scancel {job_id} failed: {_said(out)}")


# --- submitting a run -------------------------------------------------------------------------


def job_script(run: Run, resume: bool, nproc: int | None = None) -> str:
    """The batch script of a run: its #SBATCH defaults (sbatch's own options override them),
    the environment the worker needs, and the worker's command (torchrun with ``--nproc``;
    ``srun torchrun`` on every node with ``--nnodes``; ``nproc`` overrides the config's)."""
    launch = run.config.get("launch") or {}
    nnodes = int(launch.get("nnodes", 1) or 1)
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name=bertui-{run.id}",
             f"#SBATCH --output={run.log_path}",
             "#SBATCH --open-mode=append",
             f"#SBATCH --chdir={run.path}"]
    if nnodes > 1:
        lines += [f"#SBATCH --nodes={nnodes}", "#SBATCH --ntasks-per-node=1"]
    lines += [f"# bertui run {run.id} as a Slurm job (written by bertui; see its README)",
              f"export BERTUI_HOME={shlex.quote(str(bertui_home()))}",
              "export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false"]
    lines += worker_lines(run, resume, nnodes, nproc)
    return "\n".join(lines) + "\n"


def worker_lines(run: Run, resume: bool, nnodes: int, nproc: int | None = None) -> list[str]:
    """The script's last lines: the worker's command, under torchrun for a run of several
    processes (its environment, with the CPU threads shared out on the node itself)."""
    from bertui.core.distributed import LOG_PREFIX, launch_plan
    from bertui.core.process import worker_command

    if nnodes > 1:
        return [f"export TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE={shlex.quote(LOG_PREFIX)}",
                'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                "exec srun --kill-on-bad-exit=1 " + multinode_command(run, resume, nnodes,
                                                                      nproc)]
    plan = launch_plan(run.path, resume, nproc)
    if plan is None:
        return ["exec " + shlex.join(worker_command(run.path, resume))]
    command, env = plan
    nproc = nproc or int((run.config.get("launch") or {}).get("nproc", 1) or 1)
    lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items() if k != "OMP_NUM_THREADS"]
    lines.append(f"export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-$(( $(nproc) / {nproc} > 0 ? "
                 f"$(nproc) / {nproc} : 1 ))}}")
    return [*lines, "exec " + shlex.join(command)]


def multinode_command(run: Run, resume: bool, nnodes: int, nproc: int | None = None) -> str:
    """torchrun on each node of the job (one srun task a node), meeting at the job's first
    node (c10d rendezvous, the job id as its id)."""
    import sys

    nproc = nproc or int((run.config.get("launch") or {}).get("nproc", 1) or 1)
    return (f"{shlex.quote(sys.executable)} -m torch.distributed.run --nnodes {nnodes} "
            f"--nproc-per-node {nproc} --max-restarts 0 --rdzv-backend c10d "
            f'--rdzv-endpoint "$head:{RDZV_PORT}" --rdzv-id "$SLURM_JOB_ID" '
            f"-m bertui.worker {shlex.quote(str(run.path))}{' --resume' if resume else ''}")


def submit(run: Run, resume: bool, slurm_args: str | None, nproc: int | None = None) -> str:
    """Submit the run's worker as a Slurm job and return its id, recorded in status.json
    before the job may start. A RunError (one line) when Slurm refuses it; then nothing is
    left queued and status.json is as it was."""
    args = parse_slurm_args(slurm_args)
    script = run.path / JOB_SCRIPT
    try:
        script.write_text(job_script(run, resume, nproc), encoding="utf-8")
    except OSError as exc:
        raise RunError(f"cannot write the job script {script}: {exc.strerror or exc}") from None
    out = _call([SBATCH, "--parsable", "--hold", *args, str(script)])
    job_id = out.stdout.strip().split(";")[0]
    if out.returncode != 0 or not job_id.isdigit():
        raise RunError(f"sbatch refused the job: {_said(out)}")
    before = dict(run.refresh().status)
    try:
        atomic_write_json(run.status_path, {**before, "executor": EXECUTOR, "job_id": job_id,
                                             "slurm_args": slurm_args, "submitted": time.time()})
        released = _call([SCONTROL, "release", job_id])
        if released.returncode != 0:
            raise RunError(f"scontrol release {job_id} failed: {_said(released)}")
    except (OSError, RunError) as exc:
        _call([SCANCEL, job_id])
        atomic_write_json(run.status_path, before)
        raise RunError(f"{exc}; job {job_id} was cancelled again") from None
    run.refresh()
    return job_id


# --- what the job says about the run -------------------------------------------------------


def wait_job_end(job_id: str, timeout: float = JOB_END_SECONDS) -> Job | None:
    """The job once it has ended (None: gone), or as it is after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = jobs([job_id]).get(job_id)
        except RunError:
            return Job(job_id, "UNKNOWN")  # Slurm cannot be asked: alive, for all we know
        if job is None or not job.alive or time.monotonic() >= deadline:
            return job
        time.sleep(0.5)


def ended_why(job_id: str, job: Job | None) -> tuple[str, str | None]:
    """The state and error of a run whose job ended before its worker recorded an end."""
    detail = job_detail(job_id)
    state = detail.get("JobState") or (job.state if job else None)
    if state is None:
        return "lost", f"Slurm job {job_id} is gone (Slurm no longer knows it)"
    if state == "CANCELLED":
        return "cancelled", None
    reason = detail.get("Reason") or (job.reason if job else "None")
    extra = [r for r in (reason if reason != "None" else "",
                         f"exit code {detail['ExitCode']}" if detail.get("ExitCode") else "")
             if r]
    return "lost", f"Slurm job {job_id} ended {state}" + (f" ({', '.join(extra)})"
                                                          if extra else "")


def reconcile(run: Run, known: dict[str, Job] | None = None) -> Run:
    """A Slurm run whose status.json says queued or running while its job has ended (or is
    gone) gets the end its worker could not record: ``cancelled`` or ``lost`` with Slurm's
    reason. ``known``: ``jobs()`` of this and other runs, asked once for all; without it,
    Slurm is asked here. A run that is no Slurm job, or whose job lives, is left alone."""
    from bertui.core.process import claim_run

    if not is_slurm(run.refresh()) or run.status.get("state") not in ACTIVE_STATES:
        return run
    job_id = str(run.status["job_id"])
    try:
        job = (known if known is not None else jobs([job_id])).get(job_id)
    except RunError:
        return run  # Slurm cannot be asked now: nothing is known, nothing changes
    if job is not None and job.alive:
        if run.state != "lost":
            return run
        job = wait_job_end(job_id)  # its worker is gone: the job ends in a moment
        if job is not None and job.alive:
            return run
    state, error = ended_why(job_id, job)
    try:
        with claim_run(run, "first"):
            current = run.refresh().status
            if current.get("state") in ACTIVE_STATES and str(current.get("job_id")) == job_id:
                atomic_write_json(run.status_path, {**current, "state": state, "error": error,
                                                    "ended": time.time(), "slurm_state":
                                                    job.state if job else None})
    except RunError:
        pass  # a worker holds it after all (the job's end was not its worker's end)
    return run.refresh()


def reconcile_all(runs: list[Any]) -> None:
    """``reconcile`` every active Slurm run of ``runs`` with one squeue call."""
    active = [r for r in runs if is_slurm(r) and r.status.get("state") in ACTIVE_STATES]
    if not active:
        return
    try:
        known = jobs([str(r.status["job_id"]) for r in active])
    except RunError:
        return
    for run in active:
        reconcile(run, known)


def cancel_run(run: Run, wait: float) -> bool:
    """Cancel a Slurm run: scancel its job, then wait up to ``wait`` seconds for the run to
    record its end (a job cancelled before it started is marked ``cancelled`` here) and for
    the job to leave the queue. True when the run is no longer active."""
    job_id = str(run.status["job_id"])
    cancel_job(job_id)
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        ended = reconcile(run).status.get("state") not in ACTIVE_STATES
        if time.monotonic() >= deadline or (ended and not jobs_alive([job_id])):
            return ended
        time.sleep(0.5)
