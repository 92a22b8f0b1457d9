"""Study directories: ``<home>/studies/<study-id>/``, their runs, and what a client does to a
study (create, list, find, resume, cancel, delete).

A study directory (the grid's runs are ordinary run directories under ``runs/``)::

    study.toml     the grid (budgets, seeds, arms), the train pool's size and classes, and
                   ``[run]``: every run's config.toml but its seed, budget and name (written once)
    status.json    state, pid, host, times, heartbeat, error, runs_finished / runs_total, the
                   run going now (atomic replace, runner-owned)
    events.jsonl   the study's events: study_start, study_run_start, study_run_end,
                   study_summary, study_end (``bertui.core.events``)
    summary.json   ``bertui.core.study.summarize`` of the runs so far, rewritten atomically
                   after every run
    runner.log     the study runner's stdout/stderr
    worker.lock    its lock is held by the study's one runner (``bertui.core.process``)
    shared/        work the runs share: the probe's frozen features (``bertui.core.shared``)

A run of a study is a run whose config.toml has a ``[study]`` table (``id``, ``budget``,
``seed``): Runs lists it like any other, and it resumes as usual. Its ``[data] budget`` and
``[train] seed`` choose its rows (``bertui.core.study.budget_subset``), and ``[data] data_seed``
(the same in every run of a study) fixes the eval split. A study directory is read like a run
directory (``Study`` is a ``Run`` whose config is study.toml), so its state (``lost`` when its
runner died) is judged the same way.

Light at import (no numpy, no torch): the TUI lists studies at start-up.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, cast

from bertui.core.errors import BadInput
from bertui.core.runs import (
    RESUMABLE_STATES,
    Run,
    RunError,
    _Entry,
    _hostname,
    _toml_clean,
    atomic_write_json,
    atomic_write_text,
    bertui_home,
    list_runs,
    read_json,
)
from bertui.core.study import Budget, Grid, Outcome, budget_label, budget_value

STUDY_FILE = "study.toml"
SUMMARY_FILE = "summary.json"
RUNNER_LOG = "runner.log"
SHARED_DIR = "shared"  # what the runs share (bertui.core.shared)
RUNNER_MODULE = "bertui.study_runner"  # ``python -m bertui.study_runner STUDY_DIR``
ID_PREFIX = "study-"


def studies_dir(home: Path | None = None) -> Path:
    return (home or bertui_home()) / "studies"


class Study(Run):
    """A study directory and what its files say (``refresh`` re-reads them). Its ``config`` is
    study.toml; its ``state`` is judged from status.json as a run's is."""

    config_path = _Entry(STUDY_FILE)
    summary_path = _Entry(SUMMARY_FILE)
    log_path = _Entry(RUNNER_LOG)

    @classmethod
    def load(cls, path: Path) -> Study:
        return cast(Study, super().load(path))  # Run.load makes a cls

    @property
    def grid(self) -> Grid:
        c = self.config
        return Grid(tuple(budget_value(b) for b in c.get("budgets", [])),
                    tuple(int(s) for s in c.get("seeds", [])),
                    tuple(c.get("run", {}).get("arms", [])))

    @property
    def pool_rows(self) -> int:
        return int(self.config.get("pool_rows", 0))

    def summary_json(self) -> dict[str, Any]:
        return read_json(self.summary_path, {}) or {}

    def runs(self, home: Path | None = None) -> dict[tuple[int, Budget], list[Run]]:
        """The study's run directories by cell (seed, budget), oldest first."""
        cells: dict[tuple[int, Budget], list[Run]] = {}
        for run in sorted(list_runs(home), key=lambda r: r.id):
            tag = run.config.get("study")
            if isinstance(tag, dict) and tag.get("id") == self.id:
                cell = (int(tag.get("seed", 0)), budget_value(tag.get("budget")))
                cells.setdefault(cell, []).append(run)
        return cells

    def summary(self) -> dict[str, Any]:
        """One row for ``bertui studies`` and the Runs screen."""
        c, status, summary = self.config, self.status, self.summary_json()
        cross = summary.get("crossover") or {}
        return {
            "id": self.id,
            "name": self.name,
            "status": self.state,
            "model": c.get("run", {}).get("model", {}).get("spec"),
            "dataset": c.get("run", {}).get("data", {}).get("train"),
            "budgets": c.get("budgets", []),
            "seeds": c.get("seeds", []),
            "arms": c.get("run", {}).get("arms", []),
            "runs_finished": status.get("runs_finished", 0),
            "runs_total": status.get("runs_total", len(self.grid)),
            "crossover": cross.get("text"),
            "verdict": summary.get("verdict"),
            "created": status.get("created"),
            "error": status.get("error"),
            "path": str(self.path),
        }


# --- creating a study -------------------------------------------------------------------------


def study_config(options: Any, budgets: list[Budget], seeds: list[int]) -> dict[str, Any]:
    """study.toml's content for these run options (a ``RunOptions``), budgets and seeds: the
    run template checked and its data read once (``build_config``), the budgets checked
    against the train pool. BadInput (one line) for a bad grid or bad options."""
    from bertui.core.engine import prepare_data
    from bertui.core.launch import build_config
    from bertui.core.study import check_budgets

    if not budgets or not seeds:
        raise BadInput("a study needs at least one budget and one seed", field="budgets")
    data_seed = options.seed if options.data_seed is None else options.data_seed
    template = build_config(dataclasses.replace(options, budget=None, data_seed=data_seed))
    prepared = prepare_data(template)
    classes = len(set(prepared.train.labels))
    check_budgets(budgets, len(prepared.train), classes)
    return {
        "name": options.name,
        "budgets": [budget_label(b) for b in budgets],
        "seeds": list(seeds),
        "pool_rows": len(prepared.train),
        "classes": classes,
        "data_seed": data_seed,
        "run": template,
    }


def create_study(config: dict[str, Any], home: Path | None = None) -> Study:
    """Make the study directory (0700) with its study.toml and a queued status.json."""
    import tomli_w

    root = studies_dir(home)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise RunError(f"cannot create the studies folder {root}: {exc.strerror or exc}") from exc
    from bertui.core.runs import new_run_id

    for _ in range(100):
        path = root / f"{ID_PREFIX}{new_run_id()}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 collisions of a 24-bit random suffix in one second
        raise RunError("could not find a free study id")
    config = {**config, "id": path.name, "name": config.get("name") or path.name,
              "created": time.time()}
    grid_size = len(config["budgets"]) * len(config["seeds"])
    try:
        atomic_write_text(path / STUDY_FILE, tomli_w.dumps(_toml_clean(config)))
        atomic_write_json(path / "status.json", {
            "state": "queued", "created": time.time(), "host": _hostname(),
            "runs_finished": 0, "runs_total": grid_size,
        })
    except OSError as exc:
        shutil.rmtree(path, ignore_errors=True)
        raise RunError(f"cannot write the study folder {path}: {exc.strerror or exc}") from exc
    return Study.load(path)


def start_study(config: dict[str, Any], home: Path | None = None) -> Study:
    """Create the study and start its detached runner; when the runner cannot be started, the
    study directory is removed again and a RunError says why."""
    from bertui.core.process import spawn_study

    study = create_study(config, home)
    try:
        spawn_study(study.path)
    except RunError as exc:
        shutil.rmtree(study.path, ignore_errors=True)
        raise RunError(f"{exc}; no study was created") from None
    return Study.load(study.path)


def run_config(study: Study, seed: int, budget: Budget) -> dict[str, Any]:
    """config.toml of the study's run of one cell: the template with its seed, budget, name
    and ``[study]`` table."""
    import copy

    config = copy.deepcopy(study.config.get("run", {}))
    config.setdefault("train", {})["seed"] = seed
    # A study reads each run's end: the evaluations after each epoch are skipped (their random
    # draws replayed, so the model is the one a run that evaluates ends with).
    config["train"]["epoch_eval"] = False
    data = config.setdefault("data", {})
    data["budget"] = budget
    data["data_seed"] = study.config.get("data_seed", 0)
    data["train_pool_rows"] = study.pool_rows
    data["train_rows"] = study.pool_rows if budget is None else budget
    config["name"] = f"{budget_label(budget)}×s{seed} {study.name}"
    config["created"] = time.time()
    config["study"] = {"id": study.id, "budget": budget_label(budget), "seed": seed,
                       "shared": str(study.path / SHARED_DIR)}
    return config


# --- the summary ------------------------------------------------------------------------------


def outcomes(study: Study, home: Path | None = None) -> list[Outcome]:
    """Each cell's run as the summary reads it (its newest run where a cell has several)."""
    from bertui.core.predictions import read_predictions

    out = []
    for (seed, budget), runs in study.runs(home).items():
        run = runs[-1]
        labels, preds = read_predictions(run.predictions_path)
        out.append(Outcome(seed, budget, run.id, run.state, run.metrics(), labels,
                           {name: p.pred for name, p in preds.items()}))
    return out


def write_summary(study: Study, home: Path | None = None) -> dict[str, Any]:
    """summary.json from the study's runs so far (atomically); returns it."""
    from bertui.core.study import summarize

    summary = {"study": study.id, "name": study.name,
               **summarize(study.grid, outcomes(study, home), study.pool_rows),
               "updated": time.time()}
    atomic_write_json(study.summary_path, summary)
    return summary


# --- finding studies --------------------------------------------------------------------------


def list_studies(home: Path | None = None) -> list[Study]:
    """Every study under the home folder, newest first (one that cannot be read, another
    user's, is left out)."""
    studies = []
    for path in sorted(studies_dir(home).glob(f"{ID_PREFIX}*/{STUDY_FILE}"), reverse=True):
        try:
            studies.append(Study.load(path.parent))
        except OSError:
            continue
    return studies


def match_study(ref: str, home: Path | None = None) -> Study | None:
    """The study ``ref`` names (its id, a unique id prefix, its name or its folder), None when
    none does; a RunError when it names several."""
    candidate = Path(ref).expanduser()
    if candidate.is_dir() and (candidate / STUDY_FILE).exists():
        return Study.load(candidate)
    studies = list_studies(home)
    exact = [s for s in studies if ref in (s.id, s.name)]
    matches = exact or [s for s in studies if s.id.startswith(ref)
                        or (len(ref) > 6 and s.id.startswith(ID_PREFIX + ref))]
    if len(matches) > 1:
        ids = ", ".join(s.id for s in matches[:4])
        raise RunError(f"'{ref}' matches {len(matches)} studies ({ids}); give more of the id")
    return matches[0] if matches else None


def find_study(ref: str, home: Path | None = None) -> Study:
    study = match_study(ref, home)
    if study is None:
        raise RunError(f"no study '{ref}' under {studies_dir(home)}")
    return study


# --- what a client does to a study ------------------------------------------------------------


def _check_resumable(study: Study) -> None:
    state = study.refresh().state
    if not study.config:
        raise RunError(f"study {study.id} no longer exists")
    if state == "finished":
        raise RunError(f"study {study.id} already finished; nothing to resume")
    if state not in RESUMABLE_STATES:
        raise RunError(f"study {study.id} is {state}; only cancelled, lost or failed studies "
                       "resume")


def resume_study(study: Study) -> Study:
    """Start a new runner for a cancelled, lost or failed study: its finished runs are kept, a
    run that was going is resumed from its checkpoint, the others are started."""
    from bertui.core.process import claim_run, spawn_study

    _check_resumable(study)
    with claim_run(study, "before resuming"):
        _check_resumable(study)
        before = dict(study.status)
        atomic_write_json(study.status_path, {**before, "state": "queued", "error": None,
                                              "ended": None, "pid": None,
                                              "heartbeat": time.time()})
    try:
        spawn_study(study.path, resume=True)
    except RunError:
        atomic_write_json(study.status_path, before)
        raise
    return Study.load(study.path)


def cancel_study(study: Study, wait: float = 0.0) -> bool:
    """Ask the runner to stop (SIGTERM): it cancels the runs going now (a checkpoint is saved;
    a Slurm job is scancelled) and records ``cancelled``. A study whose runner is gone has its
    live runs cancelled and is marked cancelled. True when nothing of it runs any more."""
    from bertui.core.launch import cancel_run
    from bertui.core.slurm import reconcile_all

    state = study.refresh().state
    runs = [r for cell in study.runs().values() for r in cell]
    reconcile_all(runs)  # a Slurm job that ended unheard of is no live run
    live = [r for r in runs if r.is_active]
    if state not in ("queued", "running") and not live:
        raise RunError(f"study {study.id} is not running (it is {state})")
    if not study.on_this_host:
        raise RunError(f"study {study.id} runs on {study.status.get('host')}; cancel it there")
    pid = study.status.get("pid")
    if state in ("queued", "running") and pid:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    else:
        for run in live:
            cancel_run(run, wait=wait)
        atomic_write_json(study.status_path, {**study.status, "state": "cancelled",
                                              "ended": time.time()})
    deadline = time.time() + wait
    while time.time() < deadline and study.refresh().is_active:
        time.sleep(0.2)
    return not study.refresh().is_active


def delete_study(study: Study) -> int:
    """Remove a study directory and its runs' directories; an active study (or one with an
    active run) must be cancelled first. Returns how many runs were deleted."""
    from bertui.core.launch import delete_run
    from bertui.core.process import WORKER_EXIT_SECONDS, lock_run

    if study.refresh().is_active:
        raise RunError(f"study {study.id} is still {study.state}; cancel it first")
    runs = [r for cell in study.runs().values() for r in cell]
    active = [r for r in runs if r.is_active]
    if active:
        raise RunError(f"run {active[0].id} of study {study.id} is still {active[0].state}; "
                       "cancel the study first")
    # The runner's lock, held until the folder is gone: no runner starts in a half-deleted
    # study (each run is claimed by delete_run itself).
    fd = lock_run(study.path, wait=WORKER_EXIT_SECONDS)
    if fd is None:
        raise RunError(f"study {study.id} still has a live runner; cancel it first")
    try:
        for run in runs:
            delete_run(run)
        shutil.rmtree(study.path)
    finally:
        os.close(fd)
    return len(runs)
