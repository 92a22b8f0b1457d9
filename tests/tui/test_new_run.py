"""New run: the form checks the model, the data and the numbers, says what is wrong next to
the field, keeps Start disabled until all is valid, and starts a run."""

from __future__ import annotations

import time

from textual.widgets import Button, Checkbox, DataTable, Input, Select

from bertui.core.errors import BadInput
from bertui.core.runs import create_run
from bertui.tui.screens.compare import CompareScreen
from bertui.tui.screens.monitor import MonitorScreen
from bertui.tui.screens.new_run import NewRunScreen

from .conftest import build_app, plain, settle

SPEED_UPS = (
    "group_by_length", "compact_vocab", "fast_dropout", "torch_compile", "auto_batch_size"
)


def error_of(screen, field):
    widget = screen.query_one(f"#{field}-error")
    return plain(widget) if widget.display else ""


async def set_value(pilot, screen, field, value):
    screen.query_one(f"#{field}", Input).value = value
    await settle(pilot, 0.5)


async def test_defaults_are_valid(bertui_home, config_path, no_cached_models):
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, NewRunScreen)
        assert screen.model_ok and screen.dataset_ok and not screen.form_errors
        assert not screen.query_one("#start", Button).disabled
        info = plain(screen.query_one("#model-info"))
        assert "bert · 6 layers · hidden 384 · 22.7M parameters" in info
        assert "embedded default" in info
        data = plain(screen.query_one("#dataset-info"))
        assert "360 rows" in data and "negative 180" in data and "positive 180" in data
        assert "demo's own test set" in data
        assert screen.query_one("#text_column", Select).value == "text"
        assert screen.query_one("#label_column", Select).value == "label"
        assert screen.query_one("#preview", DataTable).row_count == 6
        # every binding is in the footer, but the one for the screen already shown
        keys = {key.action for key in app.screen.query("FooterKey")}
        assert {"start", "show_runs", "change_theme", "quit"} <= keys
        assert "new_run" not in keys


async def test_a_missing_model_folder_is_explained(bertui_home, config_path, no_cached_models):
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        await set_value(pilot, screen, "model", "/no/such/model")
        assert "no model folder at /no/such/model" in error_of(screen, "model")
        assert screen.query_one("#start", Button).disabled
        assert "1 problem" in plain(screen.query_one("#start-status"))
        await set_value(pilot, screen, "model", "default")
        assert error_of(screen, "model") == ""
        assert not screen.query_one("#start", Button).disabled


async def test_typed_numbers_are_checked(bertui_home, config_path, no_cached_models):
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.query_one("#epochs", Input).focus()
        await pilot.press("end", "backspace", "0")
        await settle(pilot)
        assert "epochs must be > 0" in error_of(screen, "epochs")
        assert "--" not in error_of(screen, "epochs")
        assert screen.query_one("#start", Button).disabled
        assert screen.check_action("start", ()) is None  # shown, disabled
        await set_value(pilot, screen, "epochs", "1")
        assert error_of(screen, "epochs") == ""
        await set_value(pilot, screen, "batch_size", "lots")
        assert "'lots' is not a whole number" in error_of(screen, "batch_size")
        await set_value(pilot, screen, "batch_size", "auto")
        await set_value(pilot, screen, "holdout", "150%")
        assert "holdout must be between 0 and 1" in error_of(screen, "holdout")
        await set_value(pilot, screen, "holdout", "20%")
        assert not screen.query_one("#start", Button).disabled


async def test_a_bad_dataset_is_explained(bertui_home, config_path, no_cached_models, tmp_path):
    bad = tmp_path / "one-class.csv"
    bad.write_text("text,label\nfine,a\nalso fine,a\nstill fine,a\n")
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        await set_value(pilot, screen, "dataset", str(tmp_path / "missing.csv"))
        assert "missing.csv" in error_of(screen, "dataset")
        assert screen.query_one("#start", Button).disabled
        await set_value(pilot, screen, "dataset", str(bad))
        assert "one class" in error_of(screen, "label_column")
        assert screen.query_one("#start", Button).disabled


async def test_start_opens_the_monitor(bertui_home, config_path, no_cached_models,
                                       monkeypatch):
    seen = {}

    def fake_build(options):
        seen["options"] = options
        return {"name": options.name, "model": {"spec": options.model},
                "data": {"train": options.dataset}}

    def fake_start(config, home=None):
        seen["home"] = home
        return create_run(config, home)

    monkeypatch.setattr("bertui.core.launch.build_config", fake_build)
    monkeypatch.setattr("bertui.core.launch.start_run", fake_start)
    app = build_app(bertui_home, config_path, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        await set_value(pilot, screen, "epochs", "1")
        await set_value(pilot, screen, "max_train_samples", "64")
        await set_value(pilot, screen, "learning_rate", "5e-5")
        await set_value(pilot, screen, "name", "from-the-form")
        # the exact speed-ups are on by default (fast dropout, torch.compile and auto batch size
        # off); flip them
        defaults = {name: screen.query_one(f"#{name}", Checkbox).value for name in SPEED_UPS}
        assert defaults == {"group_by_length": True, "compact_vocab": True, "fast_dropout": False,
                            "torch_compile": False, "auto_batch_size": False}
        for name in SPEED_UPS:
            screen.query_one(f"#{name}", Checkbox).toggle()
        await pilot.press("ctrl+s")
        await settle(pilot)
        options = seen["options"]
        assert (options.model, options.dataset, options.epochs) == ("default", "demo", 1.0)
        assert options.max_train_samples == 64 and options.learning_rate == 5e-5
        assert options.batch_size is None and options.probe is True
        assert {name: getattr(options, name) for name in SPEED_UPS} == {
            name: not value for name, value in defaults.items()}
        assert isinstance(app.screen, MonitorScreen)
        assert app.screen.run.name == "from-the-form"


async def test_an_engine_refusal_lands_next_to_its_field(bertui_home, config_path,
                                                         no_cached_models, monkeypatch):
    def refuse(options):
        raise BadInput("--max-length 9999 is longer than the model allows (512)",
                       field="max_length")

    monkeypatch.setattr("bertui.core.launch.build_config", refuse)
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.click("#start")
        await settle(pilot)
        assert isinstance(app.screen, NewRunScreen)
        assert "max length 9999 is longer than the model allows" in error_of(screen,
                                                                             "max_length")
        assert not screen.starting
        await set_value(pilot, screen, "max_length", "256")  # fixed: the refusal goes
        assert error_of(screen, "max_length") == ""
        assert not screen.query_one("#max_length-field").has_class("-invalid")
        assert not screen.query_one("#start", Button).disabled


async def test_a_refused_column_stays_refused_when_another_field_changes(
        bertui_home, config_path, no_cached_models, tmp_path):
    data = tmp_path / "scored.csv"
    rows = [f"sentence {i},{'pos' if i % 2 else 'neg'},{i / 7:.3f}" for i in range(40)]
    data.write_text("text,label,score\n" + "\n".join(rows) + "\n")
    app = build_app(bertui_home, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        await set_value(pilot, screen, "dataset", str(data))
        assert screen.dataset_ok and screen.query_one("#label_column", Select).value == "label"
        screen.query_one("#label_column", Select).value = "score"
        await settle(pilot, 0.8)
        refusal = error_of(screen, "label_column")
        assert "score" in refusal and screen.query_one("#start", Button).disabled
        await set_value(pilot, screen, "holdout", "0.25")  # an unrelated field
        await set_value(pilot, screen, "eval", "")
        assert screen.query_one("#label_column", Select).value == "score"  # not swapped back
        assert error_of(screen, "label_column") == refusal
        assert not screen.dataset_ok and screen.query_one("#start", Button).disabled
        assert plain(screen.query_one("#dataset-info")) == ""  # no stale "N rows from …"


async def test_form_starts_a_real_run(tiny_model, bertui_home, config_path, no_cached_models):
    """The whole path with the engine: the tiny random BERT (tests/conftest.py) on the demo
    data, one epoch, small caps; the Monitor follows it to the end, then Compare opens."""
    app = build_app(bertui_home, config_path, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        for field, value in (("model", str(tiny_model)), ("epochs", "1"),
                             ("max_train_samples", "64"), ("max_eval_samples", "32"),
                             ("batch_size", "16")):
            await set_value(pilot, screen, field, value)
        assert screen.valid, [error_of(screen, f) for f in ("model", "dataset")]
        await pilot.press("ctrl+s")
        for _ in range(600):
            await pilot.pause(0.1)
            if isinstance(app.screen, MonitorScreen):
                break
        assert isinstance(app.screen, MonitorScreen), plain(screen.query_one("#start-error"))
        monitor = app.screen
        for _ in range(3000):
            await pilot.pause(0.1)
            if monitor.follower.state not in ("queued", "running"):
                break
        assert monitor.follower.state == "finished", plain(monitor.query_one("#run-problem"))
        assert monitor.follower.history.total_steps
        assert monitor.follower.history.evals
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        assert app.screen.query_one("#scores-table", DataTable).row_count == 3
