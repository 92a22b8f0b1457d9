"""Runs lists every run, opens, resumes, deletes (after asking) and overlays two runs."""

from __future__ import annotations

from textual.widgets import DataTable

from bertui.tui.screens.compare import CompareScreen
from bertui.tui.screens.confirm import ConfirmModal
from bertui.tui.screens.monitor import MonitorScreen
from bertui.tui.screens.runs import RunsScreen
from bertui.tui.widgets.chart import Chart

from .conftest import CANCELLED, FAILED, FINISHED, FINISHED_2, Stall, build_app, plain, wait_until


async def open_runs(app, pilot):
    await pilot.pause()
    await pilot.press("ctrl+r")
    await pilot.pause()
    assert isinstance(app.screen, RunsScreen)
    return app.screen


async def move_to(pilot, screen, run_id):
    table = screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(run_id))
    await pilot.pause()


async def test_runs_lists_every_run(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(app, pilot)
        table = screen.query_one(DataTable)
        assert [str(k.value) for k in table.rows] == [CANCELLED, FAILED, FINISHED_2, FINISHED]
        row = table.get_row(FINISHED)
        assert row[0].strip() == "demo-minilm"
        assert str(row[1]) == "finished"
        assert row[4] == "50.0% → 93.0%"
        assert row[5] == "25s"
        assert row[7] == "01-01 09:00"
        assert str(table.get_row(FAILED)[1]) == "failed"
        assert str(table.get_row(CANCELLED)[1]) == "cancelled"


async def test_open_goes_to_compare_or_monitor(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(app, pilot)
        await move_to(pilot, screen, FINISHED_2)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        assert app.screen.run.id == FINISHED_2
        screen = await open_runs(app, pilot)
        await move_to(pilot, screen, FAILED)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen)


async def test_delete_asks_first(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(app, pilot)
        await move_to(pilot, screen, FAILED)
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        await pilot.pause()
        assert (recorded_home / "runs" / FAILED).exists()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        table = app.screen.query_one(DataTable)
        await wait_until(pilot, lambda: FAILED not in [str(k.value) for k in table.rows])
        assert not (recorded_home / "runs" / FAILED).exists()
        assert table.row_count == 3


async def test_delete_waits_for_a_live_worker_off_the_ui_thread(recorded_home, config_path,
                                                                monkeypatch):
    """A run whose worker lives on (it holds the run's lock) is not deleted; the wait for it
    happens in a thread, so the table still answers the keys meanwhile."""
    from conftest import hold_lock

    monkeypatch.setattr("bertui.core.process.WORKER_EXIT_SECONDS", 3.0)
    path = recorded_home / "runs" / FAILED
    holder = hold_lock(path)
    try:
        app = build_app(recorded_home, config_path, show_run=FINISHED)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_runs(app, pilot)
            await move_to(pilot, screen, FAILED)
            table = screen.query_one(DataTable)
            row = table.cursor_row
            await pilot.press("d")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            deleting = [w for w in app.workers if w.group == "delete"]
            assert deleting and not deleting[0].is_finished
            await pilot.press("up" if row else "down")
            await pilot.pause()
            assert table.cursor_row != row and not deleting[0].is_finished
            await wait_until(pilot, lambda: any("still has a live worker" in str(n.message)
                                                for n in app._notifications))
            assert path.is_dir() and (path / "config.toml").is_file()
            assert FAILED in [str(k.value) for k in table.rows]
    finally:
        holder.kill()
        holder.wait()


async def test_resume_only_where_it_makes_sense(recorded_home, config_path, monkeypatch):
    resumed = []

    def fake_resume(run):
        resumed.append(run.id)
        return run

    monkeypatch.setattr("bertui.core.launch.resume_run", fake_resume)
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(app, pilot)
        await move_to(pilot, screen, FINISHED)
        assert screen.check_action("resume", ()) is False
        await pilot.press("r")
        await pilot.pause()
        assert resumed == []
        await move_to(pilot, screen, CANCELLED)
        assert screen.check_action("resume", ()) is True
        await pilot.press("r")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert resumed == [CANCELLED]
        assert isinstance(app.screen, MonitorScreen)


async def test_two_marked_runs_overlay_their_curves(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(app, pilot)
        overlay = screen.query_one("#overlay")
        assert not overlay.display
        await move_to(pilot, screen, FAILED)
        await pilot.press("space")  # a failed run has no curves to compare: not marked
        assert screen.marked == []
        await move_to(pilot, screen, FINISHED)
        await pilot.press("space")
        await move_to(pilot, screen, FINISHED_2)
        await pilot.press("space")
        await pilot.pause()
        assert screen.marked == [FINISHED, FINISHED_2]
        await wait_until(pilot, lambda: overlay.display)  # once both logs are read (a thread)
        assert screen.query_one("#overlay-accuracy", Chart).draws >= 1
        assert "demo-minilm vs demo-minilm-lr5e-5" in plain(screen.query_one("#runs-hint"))
        assert screen.query_one(DataTable).get_row(FINISHED)[0].startswith("✓")
        await pilot.press("space")  # unmark
        await pilot.pause()
        assert not overlay.display


async def test_empty_home_says_how_to_start(bertui_home, config_path):
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert "No runs yet" in plain(app.screen.query_one("#runs-empty"))


async def test_cancel_from_runs_asks_first(bertui_home, config_path, monkeypatch):
    from .test_monitor import live_run

    cancelled = []
    monkeypatch.setattr("bertui.core.launch.cancel_run", lambda run, wait=0.0: cancelled.append(
        run.id) or True)
    run = live_run(bertui_home)
    app = build_app(bertui_home, config_path)  # an active run: the app opens on Runs
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await move_to(pilot, screen, run.id)
        assert screen.check_action("cancel_run", ()) is True
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        await pilot.pause()
        assert cancelled == []
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await app.workers.wait_for_complete()
        assert cancelled == [run.id]


async def test_cancel_is_not_offered_for_ended_runs(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(app, pilot)
        for run_id in (FINISHED, FAILED, CANCELLED):
            await move_to(pilot, screen, run_id)
            assert screen.check_action("cancel_run", ()) is False


async def test_the_overlay_reads_only_what_the_logs_gained(recorded_home, config_path,
                                                          monkeypatch):
    """Every refresh re-read both runs' whole event logs; now each is read once, then only
    what was appended to it."""
    import json

    from bertui.core.events import EventReader

    real_read_new = EventReader.read_new
    read: list[int] = []  # events read from the two marked runs' logs, per read

    def read_new(reader):
        events = real_read_new(reader)
        if reader.path.parent.name in (FINISHED, FINISHED_2):
            read.append(len(events))
        return events

    monkeypatch.setattr(EventReader, "read_new", read_new)
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(app, pilot)
        for run_id in (FINISHED, FINISHED_2):
            await move_to(pilot, screen, run_id)
            await pilot.press("space")
        overlay = screen.query_one("#overlay")
        await wait_until(pilot, lambda: overlay.display)
        logs = [recorded_home / "runs" / r / "events.jsonl" for r in (FINISHED, FINISHED_2)]
        assert sum(read) == sum(len(log.read_text().splitlines()) for log in logs)
        curves = screen.curves[FINISHED].points[("eval", "accuracy")]
        assert len(curves) == 3

        async def refresh() -> None:
            reads = screen.reads
            screen.reload()
            await wait_until(pilot, lambda: screen.reads > reads)

        read.clear()
        await refresh()
        await refresh()
        assert read and sum(read) == 0  # looked, found nothing new
        with logs[0].open("a") as fh:
            fh.write(json.dumps({"v": 1, "type": "eval", "time": 1.0, "step": 70, "epoch": 3.5,
                                 "accuracy": 0.95}) + "\n")
        await refresh()
        assert sum(read) == 1
        assert curves[-1] == (3.5, 0.95) and len(curves) == 4


async def test_a_stalled_runs_folder_leaves_the_table_answering(recorded_home, config_path,
                                                                monkeypatch):
    from bertui.tui.screens import runs as runs_screen

    stall = Stall(runs_screen.list_runs)
    monkeypatch.setattr(runs_screen, "list_runs", stall)
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(app, pilot)
        table = screen.query_one(DataTable)
        row = table.cursor_row
        stall.arm()
        await pilot.press("f5")
        await wait_until(pilot, stall.stalled.is_set)
        await pilot.press("down")
        await wait_until(pilot, lambda: table.cursor_row == row + 1)
        stall.release()
        await wait_until(pilot, lambda: stall.released)
        assert stall.released == [True]
        assert [str(k.value) for k in table.rows] == [CANCELLED, FAILED, FINISHED_2, FINISHED]
