"""SVG snapshots of every screen at 120×40 (and the small sizes), from the recorded runs in
fixtures/runs. Regenerate with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and
look at the report before committing."""

from __future__ import annotations

from textual.widgets import DataTable, Input

from .conftest import (
    CANCELLED,
    FAILED,
    FINISHED,
    FINISHED_2,
    build_app,
    recorded_study_id,
    settle,
)

SIZE = (120, 40)


def app_for(home, config_path, **kwargs):
    return build_app(home, config_path, **kwargs)


def test_new_run(snap_compare, bertui_home, config_path, no_cached_models):
    assert snap_compare(app_for(bertui_home, config_path), terminal_size=SIZE, run_before=settle)


def test_new_run_with_errors(snap_compare, bertui_home, config_path, no_cached_models):
    async def before(pilot):
        await settle(pilot)
        screen = pilot.app.screen
        screen.query_one("#model", Input).value = "./no-such-model"
        screen.query_one("#epochs", Input).value = "0"
        await settle(pilot, 0.6)

    assert snap_compare(app_for(bertui_home, config_path), terminal_size=SIZE,
                        run_before=before)


def test_new_run_80x24(snap_compare, bertui_home, config_path, no_cached_models):
    assert snap_compare(app_for(bertui_home, config_path), terminal_size=(80, 24),
                        run_before=settle)


def test_monitor_finished(snap_compare, snapshot_home, config_path):
    async def before(pilot):
        await pilot.press("m")
        await settle(pilot)

    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=SIZE, run_before=before)


def test_monitor_failed(snap_compare, snapshot_home, config_path):
    assert snap_compare(app_for(snapshot_home, config_path, show_run=FAILED),
                        terminal_size=SIZE, run_before=settle)


def test_monitor_cancelled(snap_compare, snapshot_home, config_path):
    assert snap_compare(app_for(snapshot_home, config_path, show_run=CANCELLED),
                        terminal_size=SIZE, run_before=settle)


def test_monitor_80x24(snap_compare, snapshot_home, config_path):
    async def before(pilot):
        await pilot.press("m")
        await settle(pilot)

    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=(80, 24), run_before=before)


def test_compare_scores(snap_compare, snapshot_home, config_path):
    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=SIZE, run_before=settle)


def test_compare_confusion(snap_compare, snapshot_home, config_path):
    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=SIZE, press=["2"], run_before=settle)


def test_compare_errors(snap_compare, snapshot_home, config_path):
    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=SIZE, press=["3"], run_before=settle)


def test_compare_classifier(snap_compare, snapshot_home, config_path):
    async def before(pilot):
        await pilot.press("4")
        await settle(pilot)
        await pilot.press(*"I love it, good value", "enter")
        await settle(pilot)

    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=SIZE, run_before=before)


def test_compare_80x24(snap_compare, snapshot_home, config_path):
    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=(80, 24), run_before=settle)


def test_compare_paper_theme(snap_compare, snapshot_home, config_path):
    async def before(pilot):
        pilot.app.theme = "bertui-paper"
        await settle(pilot)

    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=SIZE, run_before=before)


def test_runs(snap_compare, snapshot_home, config_path):
    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=SIZE, press=["ctrl+r"], run_before=settle)


def test_runs_overlay(snap_compare, snapshot_home, config_path):
    async def before(pilot):
        await pilot.press("ctrl+r")
        await settle(pilot)
        table = pilot.app.screen.query_one(DataTable)
        for run_id in (FINISHED, FINISHED_2):
            table.move_cursor(row=table.get_row_index(run_id))
            await pilot.press("space")
        await settle(pilot)

    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=SIZE, run_before=before)


def test_delete_confirmation(snap_compare, snapshot_home, config_path):
    async def before(pilot):
        await pilot.press("ctrl+r")
        await settle(pilot)
        table = pilot.app.screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index(FAILED))
        await pilot.press("d")
        await settle(pilot)

    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=SIZE, run_before=before)


def test_too_small(snap_compare, snapshot_home, config_path):
    assert snap_compare(app_for(snapshot_home, config_path, show_run=FINISHED),
                        terminal_size=(70, 20), run_before=settle)


# --- studies (the recorded study in fixtures/study) --------------------------------------------


def test_study(snap_compare, snapshot_study_home, config_path):
    assert snap_compare(app_for(snapshot_study_home, config_path, show_run=recorded_study_id()),
                        terminal_size=SIZE, run_before=settle)


def test_study_80x24(snap_compare, snapshot_study_home, config_path):
    assert snap_compare(app_for(snapshot_study_home, config_path, show_run=recorded_study_id()),
                        terminal_size=(80, 24), run_before=settle)


def test_study_costs(snap_compare, snapshot_study_home, config_path):
    assert snap_compare(app_for(snapshot_study_home, config_path, show_run=recorded_study_id()),
                        terminal_size=SIZE, press=["2"], run_before=settle)


def test_study_forecast(snap_compare, snapshot_study_home, config_path):
    assert snap_compare(app_for(snapshot_study_home, config_path, show_run=recorded_study_id()),
                        terminal_size=SIZE, press=["3"], run_before=settle)


def test_runs_with_a_study(snap_compare, snapshot_study_home, config_path):
    assert snap_compare(app_for(snapshot_study_home, config_path, show_run=FINISHED),
                        terminal_size=SIZE, press=["ctrl+r"], run_before=settle)


def test_new_study_with_an_error(snap_compare, bertui_home, config_path, no_cached_models):
    async def before(pilot):
        await settle(pilot)
        pilot.app.action_new_study()
        await settle(pilot, 0.6)
        pilot.app.screen.query_one("#budgets", Input).value = "16,16"
        await settle(pilot, 0.6)

    assert snap_compare(app_for(bertui_home, config_path), terminal_size=SIZE,
                        run_before=before)
