"""The Study screen, from the recorded study (fixtures/study, a real study of the MiniLM model on
the demo data: budgets 16…all × 2 seeds, three arms): the curves, the crossover, the verdict,
the costs, the forecast, the runs table (enter opens Compare, escape comes back), following a
study that runs, the Runs screen's study rows, ``bertui show STUDY`` and the New study form."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import psutil
import pytest
from textual.widgets import Button, Checkbox, DataTable, Input

from bertui.core.runs import read_json
from bertui.core.studies import Study, list_studies, write_summary
from bertui.tui.screens.compare import CompareScreen
from bertui.tui.screens.new_run import NewRunScreen
from bertui.tui.screens.runs import RunsScreen
from bertui.tui.screens.study import BAR_OFFSET, StudyScreen, cost_cell, curve_drawing
from bertui.tui.study_follow import study_eta
from bertui.tui.widgets.chart import Chart

from .conftest import (
    build_app,
    plain,
    recorded_study_id,
    screen_text,
    settle,
    wait_until,
)

STUDY = recorded_study_id()
ARMS = ("pretrained", "probe", "finetuned")
TITLES = {"pretrained": "pre-trained", "probe": "linear probe", "finetuned": "fine-tuned"}


def summary_of(home: Path) -> dict:
    return json.loads((home / "studies" / STUDY / "summary.json").read_text())


async def open_study(app, pilot) -> StudyScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, StudyScreen))
    screen = app.screen
    await wait_until(pilot, lambda: any(c.draws for c in screen.query("#curves").results(Chart)))
    return screen


# --- the curves, drawn ------------------------------------------------------------------------


class RecordingPlot:
    """Stands in for plotext's ``plt``: records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))

        return record

    def named(self, name):
        return [(args, kwargs) for n, args, kwargs in self.calls if n == name]


def draw(summary: dict) -> RecordingPlot:
    plt = RecordingPlot()
    curve_drawing(summary, list(summary["arms"]))(plt, lambda name: name)
    return plt


def test_one_line_per_arm_on_a_log_axis_with_the_seed_range(study_home):
    summary = summary_of(study_home)
    plt = draw(summary)
    lines = {kw["label"]: (args, kw) for args, kw in plt.named("plot") if kw.get("label")}
    assert set(lines) == {TITLES[a] for a in ARMS}
    span = math.log10(summary["rows"][-1]) - math.log10(summary["rows"][0])
    for i, arm in enumerate(ARMS):
        (xs, ys), kw = lines[TITLES[arm]]
        assert kw["color"] == f"model-{arm}"  # the theme's colour of the arm
        points = [p for p in summary["points"] if p["arm"] == arm]
        offset = (i - 1) * BAR_OFFSET * span
        assert xs == pytest.approx([math.log10(p["rows"]) + offset for p in points])
        assert ys == [p["accuracy"]["mean"] for p in points]
        bars = [args for args, k in plt.named("plot")
                if not k.get("label") and k["color"] == f"model-{arm}"]
        spread = [p for p in points if p["accuracy"]["max"] > p["accuracy"]["min"]]
        assert [b[1] for b in bars] == [[p["accuracy"]["min"], p["accuracy"]["max"]]
                                        for p in spread]
    ((ticks, labels), _), = plt.named("xticks")
    assert ticks == pytest.approx([math.log10(r) for r in summary["rows"]])
    assert labels == ["16", "32", "64", "128", "all=360"]


def test_the_crossover_is_a_vertical_line_at_its_budget(study_home):
    summary = summary_of(study_home)
    summary["crossover"] = {**(summary["crossover"] or {}), "budget": "64",
                            "text": "from 64 labelled examples"}
    ((x,), kw), = draw(summary).named("vertical_line")
    assert x == pytest.approx(math.log10(64)) and kw["color"] == "warning"
    summary["crossover"]["budget"] = None
    assert draw(summary).named("vertical_line") == []


async def test_the_study_screen_shows_curves_verdict_costs_and_forecast(study_home,
                                                                       config_path):
    summary = summary_of(study_home)
    app = build_app(study_home, config_path, show_run=STUDY)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_study(app, pilot)
        await settle(pilot)
        chart = screen.query_one("#curves", Chart).render().plain
        for text in ("pre-trained", "linear probe", "fine-tuned", "16", "128", "all=360",
                     "eval accuracy by labelled examples"):
            assert text in chart, text
        shown = screen_text(app)
        assert summary["verdict"] and summary["verdict"] in shown.replace("\n", " ")
        assert f"Fine-tuning beats the probe: {summary['crossover']['text']}" in shown
        assert "finished" in plain(screen.query_one("#study-headline"))
        assert "runs done 10/10" in plain(screen.query_one("#study-progress"))

        costs = screen.query_one("#study-costs", DataTable)
        assert costs.row_count == 5
        by = {(p["arm"], p["budget"]): p for p in summary["points"]}
        for budget in ("16", "all"):
            assert costs.get_cell(budget, "finetuned") == cost_cell(by["finetuned",
                                                                       budget]["cost"])
        assert costs.get_cell("all", "finetuned").endswith(" s")
        forecast = screen.query_one("#study-forecast", DataTable)
        assert forecast.row_count == 3
        fit = summary["forecast"]["finetuned"]
        assert forecast.get_cell("finetuned", "fit") == \
            f"R² {fit['r2']:.2f} · RMSE {100 * fit['rmse']:.1f} pts"
        assert forecast.get_cell("finetuned", "x2").startswith(
            f"{100 * fit['at'][0]['accuracy']:.1f}%")
        await pilot.press("3")
        assert screen.query_one("#study-tabs").active == "tab-forecast"


async def test_the_runs_table_opens_compare_and_escape_comes_back(study_home, config_path):
    app = build_app(study_home, config_path, show_run=STUDY)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_study(app, pilot)
        table = screen.query_one("#study-runs", DataTable)
        cells = [(str(table.get_row_at(i)[0]), table.get_row_at(i)[1]) for i in
                 range(table.row_count)]
        assert cells == [(str(s), b) for s in (0, 1) for b in ("16", "32", "64", "128", "all")]
        study = Study.load(study_home / "studies" / STUDY)
        run = study.runs(study_home)[1, 64][0]
        assert table.get_row(run.id)[2].plain == "finished"
        assert table.get_row(run.id)[5] == f"{100 * run.metrics()['finetuned']['accuracy']:.1f}%"
        table.move_cursor(row=table.get_row_index(run.id))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
        assert app.screen.run.id == run.id
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, StudyScreen))
        assert app.screen.study.id == STUDY


# --- a study that runs ------------------------------------------------------------------------


def as_running(home: Path, keep: int) -> tuple[Study, list]:
    """The recorded study as if its runner were going: the first ``keep`` cells finished, the
    next one running (this process stands in for its runner and its worker), the summary of
    the finished ones. Returns the study and the running run with what it hid."""
    study = Study.load(home / "studies" / STUDY)
    cells = list(study.grid.cells())
    runs = {cell: rs[0] for cell, rs in study.runs(home).items()}
    hidden = home / "hidden"
    hidden.mkdir()
    me = {"pid": os.getpid(), "pid_started": psutil.Process().create_time(),
          "heartbeat": time.time(), "host": study.status.get("host")}
    for cell in cells[keep + 1:]:
        shutil.move(str(runs[cell].path), hidden / runs[cell].id)
    going = runs[cells[keep]]
    saved = {name: (going.path / name).read_bytes()
             for name in ("metrics.json", "predictions.npz", "status.json")}
    for name in ("metrics.json", "predictions.npz"):
        (going.path / name).unlink()
    status = {**json.loads(saved["status.json"]), **me, "state": "running", "ended": None,
              "step": 3, "total_steps": 12, "eta_s": 30.0}
    (going.path / "status.json").write_text(json.dumps(status))
    write_summary(study, home)
    (study.path / "status.json").write_text(json.dumps({
        **study.status, **me, "state": "running", "ended": None, "runs_finished": keep,
        "current": going.id, "started": time.time() - 60}))
    return study.refresh(), [going, saved]


async def test_a_point_appears_when_its_run_ends(study_home, config_path):
    study, (going, saved) = as_running(study_home, keep=3)
    app = build_app(study_home, config_path, show_run=STUDY, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_study(app, pilot)
        assert screen.follower.state == "running"
        progress = plain(screen.query_one("#study-progress"))
        assert "runs done 3/10" in progress
        assert "running: seed 0, budget 128 (step 3/12)" in progress
        assert "ETA" in progress and "ETA —" not in progress
        measured = [p["budget"] for p in screen.follower.summary["points"]
                    if p["arm"] == "finetuned" and "accuracy" in p]
        assert measured == ["16", "32", "64"]
        chart = screen.query_one("#curves", Chart)
        draws, redraws = chart.draws, screen.redraws

        # the run ends; the runner rewrites the summary
        for name, data in saved.items():
            (going.path / name).write_bytes(data)
        write_summary(study, study_home)
        status = read_json(study.status_path)
        (study.path / "status.json").write_text(json.dumps({
            **status, "runs_finished": 4, "heartbeat": time.time()}))
        await wait_until(pilot, lambda: screen.redraws > redraws)
        await wait_until(pilot, lambda: chart.draws > draws)
        measured = [p["budget"] for p in screen.follower.summary["points"]
                    if p["arm"] == "finetuned" and "accuracy" in p]
        assert measured == ["16", "32", "64", "128"]
        await wait_until(pilot, lambda: "runs done 4/10" in
                         plain(screen.query_one("#study-progress")))
        table = screen.query_one("#study-runs", DataTable)
        await wait_until(pilot, lambda: table.get_row(going.id)[2].plain == "finished")


def test_the_eta_of_a_study_comes_from_the_runs_that_ended():
    rows = {"16": 16, "64": 64, "128": 128, "all": 360}
    done = {"16": [10.0, 12.0], "64": [20.0]}
    # 128: a straight line through (16, 11) and (64, 20)
    line = 11.0 + (20.0 - 11.0) / 48 * (128 - 16)
    assert study_eta(done, rows, ["16", "128"], 5.0) == pytest.approx(5.0 + 11.0 + line)
    assert study_eta({"16": [10.0]}, rows, ["all"], 0.0) == 10.0  # one budget: as long
    assert study_eta({}, rows, ["16"], 0.0) is None
    assert study_eta(done, rows, [], None) is None  # the run going now: not known


# --- the Runs screen, bertui show -------------------------------------------------------------


async def test_runs_lists_the_study_with_its_runs_under_it(study_home, config_path):
    app = build_app(study_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen))
        table = app.screen.query_one(DataTable)
        keys = [str(k.value) for k in table.rows]
        study = Study.load(study_home / "studies" / STUDY)
        runs = sorted(r.id for rs in study.runs(study_home).values() for r in rs)
        assert keys == [STUDY, *runs]
        assert table.get_row(STUDY)[0].startswith("▾ study demo-curve")
        assert table.get_row(STUDY)[4] == "10/10 runs"
        assert all("└ " in table.get_row(r)[0] for r in runs)
        table.move_cursor(row=0)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, StudyScreen))


async def test_show_opens_a_study_by_its_folder(study_home, config_path):
    app = build_app(study_home, config_path, show_run=str(study_home / "studies" / STUDY))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_study(app, pilot)
        assert screen.study.id == STUDY


async def test_show_of_an_unknown_study_says_so(study_home, config_path):
    app = build_app(study_home, config_path, show_run="study-nope")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen))
        assert any("no study 'study-nope'" in str(n.message) for n in app._notifications)


def test_bertui_show_of_an_unknown_study_is_one_line(bertui_home):
    from conftest import run_bertui

    proc = run_bertui("show", "study-nope", home=bertui_home, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no study 'study-nope'" in lines[0], proc.stderr


# --- New study --------------------------------------------------------------------------------


async def study_form(pilot):
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, NewRunScreen)
    screen.query_one("#study", Checkbox).value = True
    await settle(pilot, 0.5)
    return screen


def error_of(screen, field):
    widget = screen.query_one(f"#{field}-error")
    return plain(widget) if widget.display else ""


@pytest.mark.parametrize(("field", "value", "says"), [
    ("budgets", "0,32", "✗ budgets: '0' is not a positive whole number or 'all'"),
    ("budgets", "32,32", "✗ budgets: 32 is given twice"),
    ("budgets", "1,all", "✗ budgets: 1 is smaller than the number of classes (2): every "
                         "class needs a row in every budget"),
    ("seeds", "0", "✗ seeds must be a whole number ≥ 1 (got 0)"),
    ("seeds", "two", "✗ seeds must be a whole number ≥ 1 (got 'two')"),
])
async def test_a_bad_grid_is_one_line_under_its_field(bertui_home, config_path,
                                                      no_cached_models, field, value, says):
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await study_form(pilot)
        assert screen.valid and str(screen.query_one("#start", Button).label) == "Start study"
        screen.query_one(f"#{field}", Input).value = value
        await settle(pilot, 0.5)
        assert error_of(screen, field) == says
        assert screen.query_one("#start", Button).disabled
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not list_studies(bertui_home)
        # the switch off: a run again, the grid's error gone
        screen.query_one("#study", Checkbox).value = False
        await settle(pilot, 0.5)
        assert screen.valid and error_of(screen, field) == ""


async def test_a_budget_larger_than_the_data_is_refused_at_start(bertui_home, config_path,
                                                                 no_cached_models):
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await study_form(pilot)
        screen.query_one("#budgets", Input).value = "16,5000"
        await settle(pilot, 0.5)
        assert screen.valid  # known only once the data is read, at Start
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not screen.starting, timeout=120)
        assert error_of(screen, "budgets") == \
            "✗ budgets: 5000 is larger than the training set (360 rows)"
        assert isinstance(app.screen, NewRunScreen)
        assert not (bertui_home / "studies").exists() or not list_studies(bertui_home)


async def test_start_makes_a_study_and_opens_its_screen(tiny_model, bertui_home, config_path,
                                                       no_cached_models):
    from bertui.core.studies import cancel_study

    app = build_app(bertui_home, config_path, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await study_form(pilot)
        for field, value in (("model", str(tiny_model)), ("epochs", "1"),
                             ("budgets", "16,all"), ("seeds", "1"), ("batch_size", "16")):
            screen.query_one(f"#{field}", Input).value = value
            await settle(pilot, 0.5)
        assert screen.valid, screen.form_errors
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, StudyScreen), timeout=120)
        shown = await open_study(app, pilot)
        (study,) = list_studies(bertui_home)
        assert shown.study.id == study.id
        assert study.config["budgets"] == ["16", "all"] and study.config["seeds"] == [0]
        assert study.config["run"]["train"]["epochs"] == 1
        assert study.config["run"]["model"]["spec"] == str(tiny_model)
        await wait_until(pilot, lambda: "runs done 0/2" in
                         plain(shown.query_one("#study-progress")))
    try:  # (the end to end test in test_tmux_e2e.py follows a study to its curve)
        cancel_study(study, wait=120)
    except Exception:
        pass  # it may have ended meanwhile
    assert not study.refresh().is_active

