"""Compare renders a recorded run's metrics; the classifier pane answers (a fake predictor
here, the real engine on a real tiny run in test_compare_real_run)."""

from __future__ import annotations

import json

import pytest
from textual.widgets import DataTable, Input

from bertui.tui.screens.compare import CompareScreen
from bertui.tui.widgets.classifier import ClassifierPane, bar, disagreement
from bertui.tui.widgets.confusion import ConfusionMatrix

from .conftest import FINISHED, FINISHED_2, FakePredictor, build_app, plain, settle, wait_until


def recorded_metrics(home):
    return json.loads((home / "runs" / FINISHED / "metrics.json").read_text())


async def test_compare_shows_the_recorded_metrics(recorded_home, config_path):
    metrics = recorded_metrics(recorded_home)
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        scores = screen.query_one("#scores-table", DataTable)
        assert scores.row_count == 5  # four arms with scores, one that failed
        rows = {str(scores.get_row_at(i)[0]): scores.get_row_at(i) for i in range(5)}
        # the pre-trained model with an untrained head is labelled as such
        assert list(rows) == ["untrained head", "linear probe", "fine-tuned", "from scratch",
                              "task-adapted"]
        low, high = metrics["finetuned"]["accuracy_ci"]
        assert rows["fine-tuned"][1:4] == ["93.0%", f"{100 * low:.1f}–{100 * high:.1f}", "0.930"]
        assert rows["untrained head"][7] == "untrained classification head"
        probe = next(c for c in metrics["comparisons"]
                     if (c["a"], c["b"], c["metric"]) == ("finetuned", "probe", "accuracy"))
        assert rows["linear probe"][4] == "−15.0 (−24.0…−6.0) p = 0.0041"
        assert probe["delta"] == pytest.approx(0.15) and probe["ci_low"] == pytest.approx(0.06)
        assert rows["linear probe"][5:7] == ["2.3 s", "0.09 Wh"]
        assert rows["task-adapted"][1] == "failed"
        assert rows["task-adapted"][7].startswith("OutOfMemoryError: CUDA out of memory")
        verdict = plain(screen.query_one("#compare-verdict"))
        assert " ".join(verdict.split()) == metrics["verdict"]
        assert verdict.startswith("Fine-tuning beats the linear probe by 15.0 points")
        per_class = screen.query_one("#per-class-table", DataTable)
        assert per_class.get_row("positive") == [
            "positive", "50", "0.000",
            f"{metrics['probe']['per_class']['positive']['f1']:.3f}",
            f"{metrics['finetuned']['per_class']['positive']['f1']:.3f}",
            f"{metrics['scratch']['per_class']['positive']['f1']:.3f}"]
        assert screen.query_one("#accuracy-bars").draws >= 1
        await pilot.press("2")
        await pilot.pause()
        matrices = list(screen.query(ConfusionMatrix))
        assert [m.title for m in matrices] == ["untrained head", "linear probe", "fine-tuned",
                                               "from scratch"]
        assert matrices[2].matrix == metrics["finetuned"]["confusion_matrix"]
        assert "47" in plain(matrices[2])
        await pilot.press("3")
        await pilot.pause()
        errors = screen.query_one("#errors-table", DataTable)
        assert errors.row_count == len(metrics["errors"]) == 7
        assert "7 of 100" in plain(screen.query_one("#errors-caption"))


async def test_a_run_made_before_the_statistics_still_opens(recorded_home, config_path):
    app = build_app(recorded_home, config_path, show_run=FINISHED_2)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert "made before bertui computed them" in plain(screen.query_one("#compare-verdict"))
        scores = screen.query_one("#scores-table", DataTable)
        assert scores.row_count == 3
        assert [str(scores.get_row_at(i)[2]) for i in range(3)] == ["—"] * 3


async def test_classifier_pane_answers_with_a_loading_state(recorded_home, config_path):
    FakePredictor.loads = 0
    seen = []
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40),
                            message_hook=lambda m: seen.append(type(m).__name__)) as pilot:
        await pilot.press("4")
        await settle(pilot)
        pane = app.screen.query_one(ClassifierPane)
        await wait_until(pilot, lambda: pane.state == "ready")
        assert app.screen.focused is app.screen.query_one("#classify-input", Input)
        assert "Loading" in seen  # the "loading models…" state was shown
        assert pane.state == "ready"
        await pilot.press(*"I love this good phone", "enter")
        await settle(pilot)
        await wait_until(pilot, lambda: pane.last is not None)
        text, result = pane.last
        assert text == "I love this good phone"
        assert set(result) == {"pretrained", "probe", "finetuned"}
        shown = plain(pane.query_one("#classify-result"))
        assert "untrained head" in shown and "fine-tuned" in shown
        assert "negative ≠" in shown  # the untrained head disagrees with the fine-tuned model
        assert "0.91" in shown
        assert "disagree" in plain(pane.query_one("#classify-status"))
        assert FakePredictor.loads == 1  # loaded once, reused
        await pilot.press(*" again", "enter")
        await settle(pilot)
        assert FakePredictor.loads == 1


async def test_classifier_pane_reports_a_failure(recorded_home, config_path):
    class Broken(FakePredictor):
        def load(self):
            raise RuntimeError("the model folder is gone")

    app = build_app(recorded_home, config_path, show_run=FINISHED, predictor_factory=Broken)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        await settle(pilot)
        pane = app.screen.query_one(ClassifierPane)
        assert pane.state == "error"
        assert "the model folder is gone" in plain(pane.query_one("#classify-status"))


async def test_an_error_row_goes_to_the_classifier(recorded_home, config_path):
    metrics = recorded_metrics(recorded_home)
    app = build_app(recorded_home, config_path, show_run=FINISHED)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("3")
        table = app.screen.query_one("#errors-table")
        await wait_until(pilot, lambda: table.display and table.row_count > 1)
        table.focus()
        await wait_until(pilot, lambda: table.has_focus)
        await pilot.press("down", "enter")
        await settle(pilot)
        pane = app.screen.query_one(ClassifierPane)
        await wait_until(pilot, lambda: pane.last is not None)
        assert app.screen.query_one("#compare-tabs").active == "tab-classifier"
        assert pane.last is not None and pane.last[0] == metrics["errors"][1]["text"]


async def test_an_error_row_is_answered_while_the_models_load(recorded_home, config_path):
    """Real models take seconds to load: the tab's own preload must not cancel the row's
    sentence (it did, and the pane said "Ready" without an answer)."""
    import time

    class Slow(FakePredictor):
        def load(self):
            time.sleep(1.0)
            return super().load()

    metrics = recorded_metrics(recorded_home)
    FakePredictor.loads = 0
    app = build_app(recorded_home, config_path, show_run=FINISHED, predictor_factory=Slow)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        table = app.screen.query_one("#errors-table")
        await wait_until(pilot, lambda: table.display and table.row_count > 2)
        table.focus()
        await wait_until(pilot, lambda: table.has_focus)
        await pilot.press("down", "down", "enter")
        pane = app.screen.query_one(ClassifierPane)
        await wait_until(pilot, lambda: pane.last is not None)
        assert pane.last[0] == metrics["errors"][2]["text"]
        assert pane.state == "ready"
        assert FakePredictor.loads == 1


def test_bar_and_disagreement():
    assert bar(1.0, 4) == "████"
    assert bar(0.0, 4) == "    "
    assert bar(0.5, 4) == "██  "
    assert disagreement({"a": {"label": "x"}, "b": {"label": "y"}})
    assert not disagreement({"a": {"label": "x"}, "b": {"label": "x"}})


async def test_compare_real_run(finished_run, config_path):
    """The engine's own predictor on a real finished tiny run (needs tests/conftest.py's
    finished_run fixture: trains the tiny random BERT on the demo data)."""
    home = finished_run.parent.parent
    app = build_app(home, config_path, show_run=str(finished_run), predictor_factory=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        await pilot.press("4")
        pane = app.screen.query_one(ClassifierPane)
        for _ in range(600):
            await pilot.pause(0.1)
            if pane.state in ("ready", "error"):
                break
        assert pane.state == "ready", plain(pane.query_one("#classify-status"))
        await pilot.press(*"A wonderful, friendly place.", "enter")
        for _ in range(300):
            await pilot.pause(0.1)
            if pane.last is not None or pane.state == "error":
                break
        assert pane.last is not None, plain(pane.query_one("#classify-status"))
        result = pane.last[1]
        assert set(result) == {"pretrained", "probe", "finetuned"}
        for answer in result.values():
            assert answer["label"] in ("negative", "positive")
            assert sum(answer["probs"].values()) == pytest.approx(1.0, abs=1e-3)
