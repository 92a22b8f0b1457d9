"""Runs and studies as Slurm jobs, on a real one-node Slurm cluster started on this host
(``slurm_cluster.py``: munged, slurmctld, slurmd; skipped only where the binaries are absent),
and a study's runs in parallel on this machine.

A worker that must stop at a training step pauses there (``BERTUI_TEST_PAUSE_AT_STEP``: sbatch
passes the submitter's environment on to the job), so where it stops never depends on the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, missing_binaries
from test_faults import pause_at, wait_for, wait_paused
from test_study_runner import SMALL, STUDY_TIMEOUT, study_runs, wait_study

from bertui.core.events import read_events
from bertui.core.runs import EVENTS_FILE, STATUS_FILE, Run, list_runs, read_json
from bertui.core.slurm import JOB_SCRIPT
from bertui.core.studies import Study, list_studies
from conftest import run_bertui

TINY = ("--epochs", "1", "--batch-size", "8", "--max-length", "32")


@pytest.fixture(scope="session")
def slurm():
    """A one-node Slurm cluster for the session; SLURM_CONF points every Slurm command (and
    so bertui) at it. Its daemons are stopped at the end."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed here ({', '.join(missing)} missing; "
                    "apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs its daemons as root (SlurmUser=root)")
    root = Path(tempfile.mkdtemp(prefix="bertui-slurm-"))
    cluster = SlurmCluster(root).start()
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        shutil.rmtree(root, ignore_errors=True)


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --- the job script ---------------------------------------------------------------------------


def test_the_job_script_runs_the_worker_torchrun_or_srun_torchrun(bertui_home):
    import shlex
    import sys

    from bertui.core.runs import create_run
    from bertui.core.slurm import job_script

    def script(**launch):
        run = create_run({"name": "t", "launch": launch}, bertui_home)
        return run, job_script(run, resume=True)

    run, one = script()
    assert f"#SBATCH --output={run.log_path}" in one and f"--chdir={run.path}" in one
    assert f"#SBATCH --job-name=bertui-{run.id}" in one and "--open-mode=append" in one
    assert f"export BERTUI_HOME={shlex.quote(str(bertui_home))}" in one
    assert one.rstrip().endswith(f"exec {sys.executable} -m bertui.worker {run.path} --resume")
    _, two = script(nproc=2)
    assert "torch.distributed.run --standalone --nproc-per-node 2" in two
    assert "--nproc-per-node 3" in job_script(run, resume=True, nproc=3)  # resume --nproc 3
    assert "srun" not in two and "OMP_NUM_THREADS=${OMP_NUM_THREADS:-" in two
    _, nodes = script(nproc=4, nnodes=3, rdzv_endpoint="x:1")
    assert "#SBATCH --nodes=3" in nodes and "#SBATCH --ntasks-per-node=1" in nodes
    last = nodes.rstrip().splitlines()[-1]
    assert last.startswith("exec srun --kill-on-bad-exit=1 ") and "--nnodes 3" in last
    assert "--nproc-per-node 4" in last and '--rdzv-endpoint "$head:29500"' in last


# --- refusals: one line, exit 2, nothing queued, nothing written ---------------------------


def test_sbatch_missing_is_one_line_and_leaves_nothing(tiny_model, bertui_home, tmp_path):
    for command in ("train", "study"):
        proc = run_bertui(command, "--model", str(tiny_model), "--dataset", "demo",
                          "--executor", "slurm", home=bertui_home, timeout=120,
                          env={"PATH": str(tmp_path)})
        assert proc.returncode == 2, proc.stderr
        assert "sbatch not found" in one_line(proc)
    bad = run_bertui("train", "--model", str(tiny_model), "--slurm-args", "--time 1:00",
                     home=bertui_home, timeout=120)
    assert bad.returncode == 2 and "--slurm-args needs --executor slurm" in one_line(bad)
    bad = run_bertui("study", "--model", str(tiny_model), "--parallel", "0",
                     home=bertui_home, timeout=120)
    assert bad.returncode == 2 and "--parallel must be a whole number ≥ 1" in one_line(bad)
    assert not bertui_home.exists() or not (list_runs(bertui_home) or list_studies(bertui_home))


def test_sbatch_refusing_the_job_is_one_line_and_queues_nothing(slurm, tiny_model, bertui_home):
    for command in ("train", "study"):
        for args, says in ((f"--partition nope-{command}", "invalid partition specified"),
                           ('--comment "unclosed', "--slurm-args: No closing quotation")):
            proc = run_bertui(command, "--model", str(tiny_model), "--dataset", "demo",
                              "--executor", "slurm", "--slurm-args", args, *TINY,
                              home=bertui_home, timeout=120)
            assert proc.returncode == 2, proc.stderr
            assert says in one_line(proc)
    assert slurm.queue() == {}
    assert not list_runs(bertui_home) and not list_studies(bertui_home)


# --- a study as Slurm jobs ------------------------------------------------------------------


def watch_queue(slurm: SlurmCluster, study: Study, seen: dict[str, str]) -> bool:
    """One look at squeue while the study goes: the jobs seen (id -> state); True when the
    study has ended."""
    for job_id, (name, state) in slurm.queue().items():
        if name.startswith("bertui-"):
            seen[job_id] = state
    return study.refresh().state not in ("queued", "running")


def test_a_slurm_study_runs_as_jobs_cancels_with_scancel_and_resumes_to_the_end(
        slurm, tiny_model, bertui_home):
    # Another job holds all the node's CPUs but one: the study's first job runs (and pauses
    # at step 3) while its second waits in the queue.
    blocker = slurm.hold_cpus((os.cpu_count() or 1) - 1)
    proc = run_bertui("study", "--model", str(tiny_model), "--dataset", "demo",
                      "--budgets", "16,32", "--seeds", "1", "--arms", "probe,finetuned", *SMALL,
                      "--executor", "slurm", "--slurm-args", "--time=30", "--detach",
                      home=bertui_home, timeout=120, env=pause_at(3))
    assert proc.returncode == 0, proc.stderr
    study = Study.load(bertui_home / "studies" / proc.stdout.strip())

    def both_submitted():
        cells = study_runs(bertui_home, study)
        runs = [cells.get((0, b), [None])[0] for b in ("16", "32")]
        if all(r is not None and r.refresh().status.get("job_id") for r in runs):
            return runs
        return None

    first, second = wait_for(both_submitted, 120, "both runs to be submitted")
    wait_paused(first.path, 3, timeout=180)
    jobs = {r.id: str(r.refresh().status["job_id"]) for r in (first, second)}
    queue = slurm.queue()
    assert queue[jobs[first.id]] == (f"bertui-{first.id}", "RUNNING"), queue
    assert queue[jobs[second.id]] == (f"bertui-{second.id}", "PENDING"), queue
    assert (first.path / JOB_SCRIPT).read_text().count("bertui.worker") == 1
    assert first.status["executor"] == "slurm" and second.state == "queued"

    cancel = run_bertui("cancel", study.id, home=bertui_home, timeout=200)
    assert cancel.returncode == 0, cancel.stderr
    assert wait_study(bertui_home, study.id, timeout=120).state == "cancelled"
    assert not set(jobs.values()) & set(slurm.queue())  # scancelled: out of the queue
    assert first.refresh().state == "cancelled" and first.last_checkpoint() is not None
    assert second.refresh().state == "cancelled" and not second.status.get("started")
    slurm.cancel(blocker)

    # resume resubmits both (with the study's --slurm-args); they run to the end as Slurm jobs
    # (seen in squeue meanwhile)
    resumed = run_bertui("resume", study.id, "--detach", home=bertui_home, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    seen: dict[str, str] = {}
    wait_for(lambda: watch_queue(slurm, study, seen), STUDY_TIMEOUT, "the study to end",
             interval=0.3)
    assert study.state == "finished", (study.path / "runner.log").read_text()[-3000:]
    cells = study_runs(bertui_home, study)
    for run in (first, second):
        (again,) = cells[0, "16" if run is first else "32"]
        assert again.path == run.path and again.state == "finished"
        job = str(again.status["job_id"])
        assert job in seen and job != jobs[run.id], (seen, jobs)
        assert again.status["executor"] == "slurm"
        events = read_events(again.path / EVENTS_FILE)
        assert [e["state"] for e in events if e["type"] == "run_end"][-1] == "finished"
    resumes = [e for e in read_events(first.path / EVENTS_FILE) if e["type"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["checkpoint"], resumes
    assert json.loads((study.path / "summary.json").read_text())["runs"] == {
        "finished": 2, "total": 2}
    study_events = read_events(study.path / EVENTS_FILE)
    starts = [e for e in study_events if e["type"] == "study_run_start"]
    assert [e["how"] for e in starts] == ["started", "started", "resumed", "resumed"]
    assert all(e["job"] for e in starts)
    wait_for(lambda: not set(seen) & set(slurm.queue()), 60, "the jobs to leave the queue")


# --- one run as a Slurm job -------------------------------------------------------------------


def test_a_slurm_job_that_dies_is_lost_with_slurms_reason_cancels_and_resumes(
        slurm, tiny_model, bertui_home):
    follow = run_bertui_bg("train", "--model", str(tiny_model), "--dataset", "demo",
                           "--budget", "16", "--arms", "finetuned", *SMALL, "--executor", "slurm",
                           "--quiet",
                           home=bertui_home, env=pause_at(3))
    path = wait_for(lambda: next(iter(list_runs(bertui_home)), None), 120, "the run").path
    pid, _ = wait_paused(path, 3, timeout=180)
    job = str(read_json(path / STATUS_FILE)["job_id"])
    assert job in slurm.queue()
    os.kill(pid, signal.SIGKILL)  # the worker dies under Slurm: the job fails
    out, err = follow.communicate(timeout=120)
    assert follow.returncode == 1, err
    run = Run.load(path)
    assert run.state == "lost" and run.status["slurm_state"] == "FAILED", run.status
    assert f"Slurm job {job} ended FAILED" in run.status["error"]
    assert f"lost (Slurm job {job} ended FAILED" in err

    # resume resubmits it (from its checkpoint at step 2); bertui cancel RUN scancels it
    proc = run_bertui("resume", run.id, "--detach", home=bertui_home, timeout=120,
                      env=pause_at(3))
    assert proc.returncode == 0, proc.stderr
    wait_paused(path, 3, timeout=180)
    second = str(read_json(path / STATUS_FILE)["job_id"])
    assert second != job and second in slurm.queue()
    cancel = run_bertui("cancel", run.id, home=bertui_home, timeout=120)
    assert cancel.returncode == 0 and f"run {run.id}: cancelled" in cancel.stderr, cancel.stderr
    assert run.refresh().state == "cancelled" and second not in slurm.queue()

    proc = run_bertui("resume", run.id, "--json", home=bertui_home, timeout=STUDY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr + run.log_path.read_text()[-3000:]
    assert json.loads(proc.stdout)["finetuned"]["accuracy"] is not None
    run.refresh()
    assert run.state == "finished" and run.status["job_id"] not in (job, second)
    resumes = [e for e in read_events(path / EVENTS_FILE) if e["type"] == "resume"]
    assert len(resumes) == 2 and all(e["checkpoint"] for e in resumes), resumes


def run_bertui_bg(*args: str, home: Path, env: dict | None = None):
    import subprocess

    from conftest import bertui_cmd

    return subprocess.Popen(bertui_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True,
                            env={**os.environ, "BERTUI_HOME": str(home), "HF_HUB_OFFLINE": "1",
                                 **(env or {})})


# --- a study's runs in parallel here ----------------------------------------------------------


def test_a_parallel_study_runs_its_runs_at_once_and_each_once(tiny_model, bertui_home):
    started = time.time()
    proc = run_bertui("study", "--model", str(tiny_model), "--dataset", "demo",
                      "--budgets", "16,32", "--seeds", "1", "--arms", "probe,finetuned", *TINY,
                      "--parallel", "2", "--json", home=bertui_home, timeout=STUDY_TIMEOUT,
                      env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runs"] == {"finished": 2, "total": 2}
    (study,) = list_studies(bertui_home)
    cells = study_runs(bertui_home, study)
    runs = [cells[0, "16"], cells[0, "32"]]
    assert all(len(r) == 1 and r[0].state == "finished" for r in runs)
    a, b = (r[0] for r in runs)
    for run in (a, b):
        types = [e["type"] for e in read_events(run.path / EVENTS_FILE)]
        assert types.count("run_start") == 1 and "resume" not in types
        assert started < run.status["started"] < run.status["ended"]
    # both were going at once: each started before the other ended
    assert a.status["started"] < b.status["ended"] and b.status["started"] < a.status["ended"]
    events = read_events(study.path / EVENTS_FILE)
    (start,) = [e for e in events if e["type"] == "study_start"]
    assert start["parallel"] == 2 and start["executor"] == "local"
    assert [e["how"] for e in events if e["type"] == "study_run_start"] == ["started"] * 2
