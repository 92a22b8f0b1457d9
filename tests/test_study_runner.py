"""Studies for real: a run's label budget (bertui.core.data), the study directory, the study
runner process and the ``bertui study|studies|resume|cancel|delete`` commands, on the tiny
random BERT and the demo data.

A test that stops a worker at a training step has it pause there (``BERTUI_TEST_PAUSE_AT_STEP``,
see bertui.worker; a study runner passes its environment on to the workers it starts), so where
it stops never depends on the CPU's speed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from test_faults import pause_at, wait_for, wait_paused

from bertui.core import data as data_mod
from bertui.core.errors import BadInput
from bertui.core.events import read_events
from bertui.core.predictions import read_predictions
from bertui.core.runs import (
    EVENTS_FILE,
    PREDICTIONS_FILE,
    STATUS_FILE,
    Run,
    list_runs,
    pid_alive,
    read_json,
)
from bertui.core.studies import RUNNER_LOG, Study, list_studies
from conftest import run_bertui, train_tiny

STUDY_TIMEOUT = 400.0
# Two steps an epoch at budget 16 and batch 8; a checkpoint at each epoch's end.
SMALL = ("--epochs", "2", "--batch-size", "8", "--max-length", "32")


def demo_csv(tmp_path: Path) -> Path:
    """The demo's train rows alone (no eval file: the eval split is held out)."""
    path = tmp_path / "demo.csv"
    path.write_text(data_mod.demo_files()[0].read_text())
    return path


# --- a run's budget ---------------------------------------------------------------------------


def test_a_budget_trains_on_a_nested_stratified_subset_of_the_pool(tmp_path):
    csv = str(demo_csv(tmp_path))
    pool = data_mod.prepare(csv, seed=0)
    subsets = {}
    for budget in (8, 40, 120):
        for seed in (0, 1):
            got = data_mod.prepare(csv, seed=seed, data_seed=0, budget=budget)
            assert got.eval.texts == pool.eval.texts  # one eval split, whatever the seed
            assert len(got.train) == budget == got.report["train_rows"]
            assert got.report["train_pool_rows"] == len(pool.train)
            assert set(got.train.labels) == set(pool.train.labels)
            subsets[budget, seed] = set(zip(got.train.texts, got.train.labels))
    for seed in (0, 1):
        assert subsets[8, seed] <= subsets[40, seed] <= subsets[120, seed]
    assert subsets[40, 0] != subsets[40, 1]
    # without a data seed the held-out split follows the run's seed, as before
    assert data_mod.prepare(csv, seed=1).eval.texts != pool.eval.texts


def test_a_budget_larger_than_the_train_set_is_one_line(tmp_path):
    csv = str(demo_csv(tmp_path))
    with pytest.raises(BadInput, match=r"--budget: 5000 is larger than the training set \(288 "
                                       r"rows\)"):
        data_mod.prepare(csv, budget=5000)
    with pytest.raises(BadInput, match=r"--budget: 1 is smaller than the number of classes"):
        data_mod.prepare(csv, budget=1)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--budgets", "0,32"), "'0' is not a positive whole number or 'all'"),
        (("--budgets", "32,32"), "32 is given twice"),
        (("--budgets", "16,5000"), "5000 is larger than the training set (360 rows)"),
        (("--budgets", "1,all"), "1 is smaller than the number of classes (2)"),
        (("--budgets", "16", "--seeds", "0"), "--seeds must be a whole number ≥ 1"),
        (("--budgets", "16", "--epochs", "-1"), "--epochs"),
    ],
)
def test_a_bad_study_is_one_line_and_leaves_nothing(tiny_model, bertui_home, args, says):
    proc = run_bertui("study", "--model", str(tiny_model), "--dataset", "demo", *args,
                      home=bertui_home, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert not list_studies(bertui_home) and not list_runs(bertui_home)


def test_a_study_that_does_not_exist_is_one_line(bertui_home):
    for command in ("resume", "cancel", "delete"):
        proc = run_bertui(command, "study-nope", home=bertui_home, timeout=60)
        assert proc.returncode == 2 and "study-nope" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


# --- a whole study ----------------------------------------------------------------------------


def study_runs(home: Path, study: Study) -> dict[tuple[int, str], list[Run]]:
    return {(seed, str(budget or "all")): runs for (seed, budget), runs in study.runs(home).items()}


def test_a_study_runs_its_grid_and_summarises_it(tiny_model, bertui_home):
    proc = run_bertui("study", "--model", str(tiny_model), "--dataset", "demo",
                      "--budgets", "16,all", "--seeds", "2", "--arms", "probe,finetuned",
                      "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--json",
                      home=bertui_home, timeout=STUDY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["budgets"] == ["16", "all"] and summary["rows"] == [16, 360]
    assert summary["runs"] == {"finished": 4, "total": 4}
    points = {(p["arm"], p["budget"]): p for p in summary["points"]}
    assert set(points) == {(a, b) for a in ("probe", "finetuned") for b in ("16", "all")}
    for p in points.values():
        assert [s["seed"] for s in p["seeds"]] == [0, 1]
        assert p["accuracy"]["min"] <= p["accuracy"]["mean"] <= p["accuracy"]["max"]
        assert p["cost"]["seconds"] > 0
    assert summary["crossover"]["text"] in ("from 16 labelled examples", "from all labelled "
                                            "examples", "not within these budgets")
    assert summary["forecast"]["finetuned"]["note"].startswith("not enough points")
    assert summary["verdict"]

    (study,) = list_studies(bertui_home)
    assert study.state == "finished" and study.status["runs_finished"] == 4
    cells = study_runs(bertui_home, study)
    assert sorted(cells) == [(0, "16"), (0, "all"), (1, "16"), (1, "all")]
    for (seed, budget), runs in cells.items():
        (run,) = runs
        assert run.state == "finished"
        assert run.config["study"] == {"id": study.id, "budget": budget, "seed": seed,
                                       "shared": str(study.path / "shared")}
        assert run.config["train"]["seed"] == seed and run.config["arms"] == ["probe",
                                                                              "finetuned"]
        seeds = [s for p in summary["points"] for s in p["seeds"] if s["run"] == run.id]
        assert len(seeds) == 2  # the probe's and the fine-tune's point of this run
    # the probe's features were computed once for the study: the second seed's runs looked
    # every row up; a standalone run with the same seed and rows gives the same numbers
    with np.load(study.path / "shared" / "probe_features.npz") as z:
        assert z["pool_index"].tolist() == list(range(360)) and len(z["eval"]) == 100
    assert "computed 0 of 16 train rows" in (cells[1, "16"][0].log_path).read_text()
    alone, alone_dir = train_tiny(tiny_model, bertui_home, "--budget", "16", "--seed", "1",
                                  "--data-seed", "0", "--arms", "probe,finetuned",
                                  "--batch-size", "8", "--max-length", "32")
    in_study = cells[1, "16"][0]
    for arm in ("probe", "finetuned"):
        assert alone[arm]["accuracy"] == in_study.metrics()[arm]["accuracy"]
    _, mine = read_predictions(in_study.predictions_path)
    _, theirs = read_predictions(alone_dir / PREDICTIONS_FILE)
    assert np.array_equal(mine["probe"].pred, theirs["probe"].pred)
    assert np.allclose(mine["probe"].probs, theirs["probe"].probs, atol=1e-5)
    assert np.array_equal(mine["finetuned"].probs, theirs["finetuned"].probs)
    shutil.rmtree(alone_dir)  # (delete below checks that the study leaves no run behind)

    # the runs are ordinary runs: bertui runs lists them
    listed = json.loads(run_bertui("runs", "--json", home=bertui_home).stdout)
    assert {r["id"] for r in listed} == {r.id for runs in cells.values() for r in runs}
    studies = json.loads(run_bertui("studies", "--json", home=bertui_home).stdout)
    assert [(s["id"], s["status"], s["runs_finished"]) for s in studies] == [
        (study.id, "finished", 4)]

    # resuming a finished study: one line, exit 2, nothing changed
    before = (study.path / "status.json").read_bytes()
    again = run_bertui("resume", study.id, home=bertui_home)
    assert again.returncode == 2 and "already finished" in again.stderr
    assert (study.path / "status.json").read_bytes() == before

    deleted = run_bertui("delete", study.id, home=bertui_home)
    assert deleted.returncode == 0, deleted.stderr
    assert not list_studies(bertui_home) and not list_runs(bertui_home)


def test_a_run_without_epoch_evaluations_ends_with_the_same_model(tiny_model, bertui_home):
    """--no-epoch-eval (what a study's runs do) skips the evaluations between epochs but
    replays their random draws: three epochs end with the same model, to the last bit."""
    flags = ("--epochs", "3", "--arms", "probe,finetuned", "--batch-size", "8",
             "--max-length", "32")
    with_evals, evaluated = train_tiny(tiny_model, bertui_home, *flags)
    without, skipped = train_tiny(tiny_model, bertui_home, *flags, "--no-epoch-eval")
    _, mine = read_predictions(skipped / PREDICTIONS_FILE)
    _, theirs = read_predictions(evaluated / PREDICTIONS_FILE)
    assert np.array_equal(mine["finetuned"].probs, theirs["finetuned"].probs)
    assert without["finetuned"]["accuracy"] == with_evals["finetuned"]["accuracy"]
    evals = [e for e in read_events(evaluated / EVENTS_FILE) if e["type"] == "eval"]
    assert len(evals) == 3 and not [e for e in read_events(skipped / EVENTS_FILE)
                                    if e["type"] == "eval"]


def test_the_pretrained_arm_is_measured_once_per_seed(tiny_model, bertui_home):
    """The seed's second run reads the pre-trained arm back (and the random state it left):
    its pre-trained and fine-tuned numbers are those of a standalone run with the same seed
    and rows, to the last bit."""
    proc = run_bertui("study", "--model", str(tiny_model), "--dataset", "demo",
                      "--budgets", "16,32", "--seeds", "1", "--arms", "pretrained,finetuned",
                      "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--quiet",
                      home=bertui_home, timeout=STUDY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    (study,) = list_studies(bertui_home)
    cells = study_runs(bertui_home, study)
    first, second = cells[0, "16"][0], cells[0, "32"][0]
    assert "pre-trained arm shared by the study" not in first.log_path.read_text()
    assert "pre-trained arm shared by the study" in second.log_path.read_text()
    assert (study.path / "shared" / "pretrained_seed0.npz").is_file()
    alone, alone_dir = train_tiny(tiny_model, bertui_home, "--budget", "32", "--seed", "0",
                                  "--data-seed", "0", "--arms", "pretrained,finetuned",
                                  "--batch-size", "8", "--max-length", "32")
    _, mine = read_predictions(second.predictions_path)
    _, theirs = read_predictions(alone_dir / PREDICTIONS_FILE)
    for arm in ("pretrained", "finetuned"):
        assert alone[arm]["accuracy"] == second.metrics()[arm]["accuracy"]
        assert np.array_equal(mine[arm].probs, theirs[arm].probs), arm
    # and a run whose random state before the arm is another one measures it itself
    from bertui.core.shared import load_pretrained

    kept = study.path / "shared" / "pretrained_seed0.npz"
    with np.load(kept) as z:
        labels, before, precision = z["eval_labels"], z["rng_before"], str(z["precision"])
    assert load_pretrained(kept, labels, before, precision)
    assert load_pretrained(kept, labels, before[::-1].copy(), precision) is None
    other = "fp32" if precision != "fp32" else "bf16"
    assert load_pretrained(kept, labels, before, other) is None  # resumed on another machine


def wait_study(home: Path, study_id: str, timeout: float = STUDY_TIMEOUT) -> Study:
    study = Study.load(home / "studies" / study_id)

    def ended():
        return study.refresh().state not in ("queued", "running")

    try:
        wait_for(ended, timeout, f"study {study_id} to end")
    except AssertionError:
        raise AssertionError((study.path / "runner.log").read_text()[-3000:]) from None
    return study


def kill(pid: int, started: float) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid, started), 30, f"process {pid} to be gone")


def test_a_killed_study_resumes_and_runs_every_run_exactly_once(tiny_model, bertui_home):
    # Every worker of the first runner pauses at step 3 (the second epoch; epoch 1's end is
    # checkpointed at step 2).
    proc = run_bertui("study", "--model", str(tiny_model), "--dataset", "demo",
                      "--budgets", "16,32", "--seeds", "1", *SMALL, "--detach",
                      home=bertui_home, timeout=120, env=pause_at(3))
    assert proc.returncode == 0, proc.stderr
    study = Study.load(bertui_home / "studies" / proc.stdout.strip())

    def first_run():
        runs = study_runs(bertui_home, study).get((0, "16"))
        return runs[0].path if runs else None

    path = wait_for(first_run, 120, "the study's first run")
    # 1. its worker is SIGKILLed: the runner resumes the run (from its checkpoint)
    first_pid, first_started = wait_paused(path, 3)
    kill(first_pid, first_started)

    def paused_again():  # the resumed worker pauses at step 3 again (a new pid)
        status = read_json(path / STATUS_FILE, {}) or {}
        if status.get("paused_at_step") == 3 and status.get("pid") not in (None, first_pid):
            return int(status["pid"]), float(status["pid_started"])
        return None

    pid, started = wait_for(paused_again, 180, "the resumed worker to pause at step 3")
    # 2. the runner is SIGKILLed, then the run's worker
    runner = study.refresh().status
    kill(int(runner["pid"]), float(runner["pid_started"]))
    assert study.refresh().state == "lost"
    kill(pid, started)

    proc = run_bertui("resume", study.id, "--json", home=bertui_home, timeout=STUDY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr + (study.path / "runner.log").read_text()[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["runs"] == {"finished": 2, "total": 2}

    cells = study_runs(bertui_home, study)
    assert sorted(cells) == [(0, "16"), (0, "32")]
    assert all(len(runs) == 1 and runs[0].state == "finished" for runs in cells.values())
    first, second = cells[0, "16"][0], cells[0, "32"][0]
    events = read_events(first.path / EVENTS_FILE)
    resumes = [e for e in events if e["type"] == "resume"]
    assert len(resumes) == 2 and all(e["checkpoint"] for e in resumes), resumes
    assert [e["state"] for e in events if e["type"] == "run_end"] == ["finished"]
    second_events = read_events(second.path / EVENTS_FILE)
    assert not [e for e in second_events if e["type"] == "resume"]
    assert [e["type"] for e in second_events].count("run_start") == 1
    study_events = read_events(study.path / EVENTS_FILE)
    hows = [(e["run"], e["how"]) for e in study_events if e["type"] == "study_run_start"]
    assert hows == [(first.id, "started"), (first.id, "resumed"), (second.id, "started")]
    assert [e["type"] for e in study_events].count("study_end") == 1
    assert "resuming it" in (study.path / RUNNER_LOG).read_text()


def test_cancel_a_study_cancels_its_run_and_resume_finishes_it(tiny_model, bertui_home):
    proc = run_bertui("study", "--model", str(tiny_model), "--dataset", "demo",
                      "--budgets", "16", "--seeds", "1", *SMALL, "--detach",
                      home=bertui_home, timeout=120, env=pause_at(3))
    study = Study.load(bertui_home / "studies" / proc.stdout.strip())
    path = wait_for(lambda: (r := study_runs(bertui_home, study).get((0, "16"))) and r[0].path,
                    120, "the study's run")
    wait_paused(path, 3)
    cancel = run_bertui("cancel", study.id, home=bertui_home, timeout=200)
    assert cancel.returncode == 0, cancel.stderr
    assert wait_study(bertui_home, study.id).state == "cancelled"
    assert Run.load(path).state == "cancelled"

    proc = run_bertui("resume", study.id, "--json", home=bertui_home, timeout=STUDY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runs"] == {"finished": 1, "total": 1}
    (run,) = study_runs(bertui_home, study)[0, "16"]
    assert run.path == path and run.state == "finished"
    resumes = [e for e in read_events(path / EVENTS_FILE) if e["type"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["checkpoint"], resumes
    deleted = run_bertui("delete", study.id, home=bertui_home)
    assert deleted.returncode == 0 and not study.path.exists() and not path.exists()
