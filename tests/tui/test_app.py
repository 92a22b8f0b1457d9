"""The app as a whole: which screen opens first, show RUN, the too-small line, themes, the
palette, bindings, and no heavy import at start-up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from textual.widgets import Header

from bertui.core.runs import atomic_write_json, create_run
from bertui.tui.app import BertuiApp
from bertui.tui.screens.compare import CompareScreen
from bertui.tui.screens.monitor import MonitorScreen
from bertui.tui.screens.new_run import NewRunScreen
from bertui.tui.screens.runs import RunsScreen

from .conftest import CANCELLED, FAILED, FINISHED, build_app, plain, screen_text, wait_until


def make_active_run(home):
    run = create_run({"name": "live", "model": {"spec": "default"}, "data": {"train": "demo"}},
                     home)
    atomic_write_json(run.status_path, {"state": "running", "pid": os.getpid(),
                                        "host": socket.gethostname(), "created": time.time(),
                                        "started": time.time(), "heartbeat": time.time()})
    return run.refresh()


async def test_opens_on_new_run_without_active_runs(bertui_home, config_path, no_cached_models):
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, NewRunScreen)
        assert app.screen.title == "New run"
        assert app.screen.query_one(Header)


async def test_opens_on_runs_when_a_run_is_active(bertui_home, config_path):
    make_active_run(bertui_home)
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        assert app.screen.title == "Runs"


async def test_show_run_opens_compare_for_a_finished_run(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        assert app.screen.title == "Compare"
        assert app.screen.sub_title == "demo-minilm"


async def test_show_run_opens_monitor_for_a_failed_run(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run="sst2-bert-base")  # by name
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen)
        assert app.screen.title == "Monitor"
        problem = plain(app.screen.query_one("#run-problem"))
        assert "not enough memory for batch size 256" in problem
        assert str(recorded_home / "runs" / FAILED / "worker.log") in problem


async def test_show_unknown_run_says_so_and_opens_runs(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run="no-such-run")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        assert any("no run 'no-such-run'" in str(n.message) for n in app._notifications)


async def test_a_run_outside_the_home_opens_by_its_path(recorded_home, config_path, tmp_path,
                                                        monkeypatch):
    """`bertui show PATH` hands the app the run's path, not its id (which the app would look
    up under its own home)."""
    import shutil

    from bertui import cli

    elsewhere = tmp_path / "elsewhere" / FAILED
    shutil.copytree(recorded_home / "runs" / FAILED, elsewhere)
    opened = []
    monkeypatch.setattr(cli, "open_app", lambda ref: opened.append(ref) or 0)
    monkeypatch.setenv("BERTUI_HOME", str(tmp_path / "home"))
    assert cli.main(["show", str(elsewhere)]) == 0
    app = build_app(tmp_path / "home", config_path, show_run=opened[0])
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen)
        assert app.screen.run.path == elsewhere


async def test_a_runs_folder_that_cannot_be_read_is_one_notification(tmp_path, config_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    app = build_app(blocker / "bertui", config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert any("cannot read the runs folder" in str(n.message) for n in app._notifications)
        await pilot.press("ctrl+r")  # the Runs screen says it too, and stays up
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)


async def test_too_small_terminal_shows_one_line(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=CANCELLED)
    async with app.run_test(size=(70, 20)) as pilot:
        await pilot.pause()
        line = app.screen.query_one("#too-small")
        assert line.display and line.region.area > 0
        assert "at least 80×24" in plain(line)
        assert app.screen.query_one("#monitor-body").region.area == 0
        await pilot.resize_terminal(120, 40)
        await pilot.pause(0.2)
        assert app.screen.query_one("#too-small").region.area == 0
        assert app.screen.query_one("#monitor-body").region.area > 0


async def test_the_focus_comes_back_after_the_terminal_was_too_small(recorded_home,
                                                                      config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+r")
        await pilot.pause()
        table = app.screen.query_one("RunsTable")
        assert app.focused is table
        await pilot.resize_terminal(60, 20)
        await pilot.pause(0.2)
        assert app.screen.too_small
        await pilot.resize_terminal(120, 40)
        await pilot.pause(0.2)
        assert app.focused is table
        row = table.cursor_row
        await pilot.press("down")  # the keys reach it again
        await pilot.pause()
        assert table.cursor_row == row + 1


async def test_80x24_is_enough(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen.query_one("#too-small").region.area == 0
        assert "Scores" in screen_text(app) or app.screen.query_one("#compare-tabs")


async def test_navigation_keys(recorded_home, config_path, no_cached_models):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert isinstance(app.screen, NewRunScreen)
        # ctrl+r works from inside a text field too
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        assert len(app.screen_stack) == 2  # the default screen + one main screen


async def test_theme_switch_is_remembered(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.theme == "bertui-night"
        app.theme = "bertui-paper"
        await pilot.pause()
    settings = json.loads((config_path / "settings.json").read_text())
    assert settings["theme"] == "bertui-paper"
    again = build_app(recorded_home, config_path, show_run=FINISHED)
    async with again.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert again.theme == "bertui-paper"


async def palette_offers(pilot, text: str) -> None:
    """Wait until the command palette's highlighted hit is ``text`` (its search is async)."""
    def hit() -> bool:
        lists = pilot.app.screen.query("CommandList")
        if not lists or lists.first().highlighted is None:
            return False
        found = lists.first()
        return text in str(found.get_option_at_index(found.highlighted).prompt).lower()

    await wait_until(pilot, hit)


async def test_theme_from_the_command_palette(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"theme: bertui-forest")
        await palette_offers(pilot, "bertui-forest")
        await pilot.press("enter")
        await pilot.pause()
        assert app.theme == "bertui-forest"
    assert json.loads((config_path / "settings.json").read_text())["theme"] == "bertui-forest"


async def test_palette_offers_screen_actions(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"confusion matrices")
        await palette_offers(pilot, "confusion")
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.query_one("#compare-tabs").active == "tab-confusion"


async def test_invalid_user_theme_falls_back_with_a_notification(recorded_home, config_path):
    (config_path / "themes").mkdir(parents=True)
    (config_path / "themes" / "broken.yaml").write_text("name: broken\nprimary: not-a-colour\n")
    (config_path / "themes" / "mine.yaml").write_text("name: mine\nprimary: '#ff0000'\n")
    (config_path / "settings.json").write_text(json.dumps({"theme": "broken"}))
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.theme == "bertui-night"
        messages = " ".join(str(n.message) for n in app._notifications)
        assert "broken.yaml" in messages and "not a colour" in messages
        assert "mine" in app.available_themes


def test_every_binding_has_a_description():
    from bertui.tui.screens.confirm import ConfirmModal
    from bertui.tui.screens.runs import RunsTable

    for owner in (BertuiApp, NewRunScreen, MonitorScreen, CompareScreen, RunsScreen,
                  ConfirmModal, RunsTable):
        for binding in owner.BINDINGS:
            assert binding.description, f"{owner.__name__}: {binding.key} has no description"


def test_start_up_imports_no_torch(recorded_home, config_path):
    """The first screen comes without torch, transformers or datasets in the process."""
    code = f"""
import asyncio, sys
from pathlib import Path
from bertui.tui.app import make_app
async def main():
    app = make_app(home=Path({str(recorded_home)!r}), config_path=Path({str(config_path)!r}))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        print(type(app.screen).__name__)
    heavy = [m for m in ("torch", "transformers", "datasets") if m in sys.modules]
    print("heavy:", heavy)
asyncio.run(main())
"""
    make_active_run(recorded_home)  # so that it opens on Runs (New run checks the model)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "BERTUI_HOME": str(recorded_home)})
    assert out.returncode == 0, out.stderr
    assert "RunsScreen" in out.stdout
    assert "heavy: []" in out.stdout


async def test_the_new_run_form_keeps_what_was_typed(bertui_home, config_path, no_cached_models,
                                                     monkeypatch):
    """A look at Runs does not lose a half-filled form; once a run starts from it, ctrl+n
    opens a fresh one."""
    from textual.widgets import Input

    from .conftest import settle

    monkeypatch.setattr("bertui.core.launch.build_config", lambda options: {
        "name": options.name, "model": {"spec": options.model},
        "data": {"train": options.dataset}})
    monkeypatch.setattr("bertui.core.launch.start_run",
                        lambda config, home=None: create_run(config, home))
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        form = app.screen
        assert isinstance(form, NewRunScreen)
        form.query_one("#name", Input).value = "half-filled"
        form.query_one("#epochs", Input).value = "1"
        await settle(pilot)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert app.screen is form
        assert form.query_one("#name", Input).value == "half-filled"
        assert form.query_one("#epochs", Input).value == "1"
        assert len(app.screen_stack) == 2

        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen))
        assert app.screen.run.name == "half-filled"
        await settle(pilot)
        assert not form.is_attached  # let go of, not kept behind the Monitor
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, NewRunScreen) and app.screen is not form
        assert app.screen.query_one("#name", Input).value == ""
        assert app.screen.query_one("#epochs", Input).value == "3"
