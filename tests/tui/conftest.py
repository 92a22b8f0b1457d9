"""Fixtures of the TUI tests: the recorded run directories, a settled app, a fake predictor.

Each test gets its own BERTUI_HOME (tests/conftest.py) and its own config folder (settings.json,
user themes), wall times print in UTC, and the app's clock is frozen: snapshots do not move.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bertui.tui.app import BertuiApp, make_app

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECORDED = FIXTURES / "runs"
FINISHED = "20260101-090000-5eed01"
FINISHED_2 = "20260101-093000-5eed02"
FAILED = "20260102-101500-0ddba1"
CANCELLED = "20260103-120000-c0ffee"
FROZEN_NOW = 1767600000.0  # 2026-01-05 08:00 UTC, after every recorded run
RECORDED_STUDY = FIXTURES / "study"  # a real study (see fixtures/record_study.py)


def recorded_study_id() -> str:
    return next((RECORDED_STUDY / "studies").iterdir()).name


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run ``async def`` tests in a fresh event loop (no pytest-asyncio / anyio needed)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        names = pyfuncitem._fixtureinfo.argnames
        asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
        return True
    return None


@pytest.fixture(autouse=True)
def _utc_and_config(monkeypatch, tmp_path):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def config_path(tmp_path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def recorded_home(bertui_home) -> Path:
    """A bertui home holding the four recorded runs (see fixtures/make_recorded_runs.py)."""
    shutil.copytree(RECORDED, bertui_home / "runs")
    return bertui_home


def copy_study(home: Path) -> Path:
    """The recorded study (its study folder and its runs) into ``home``; its folder."""
    for kind in ("studies", "runs"):
        shutil.copytree(RECORDED_STUDY / kind, home / kind, dirs_exist_ok=True)
    return home / "studies" / recorded_study_id()


@pytest.fixture
def study_home(bertui_home) -> Path:
    """A bertui home holding the recorded study and its ten runs."""
    copy_study(bertui_home)
    return bertui_home


@pytest.fixture
def snapshot_study_home(monkeypatch) -> Path:
    """The recorded runs and the recorded study under a fixed path."""
    import tempfile

    home = Path(tempfile.gettempdir()) / "bertui-snapshot-tests" / "study-home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(RECORDED, home / "runs")
    copy_study(home)
    monkeypatch.setenv("BERTUI_HOME", str(home))
    return home


@pytest.fixture
def snapshot_home(monkeypatch) -> Path:
    """The recorded runs under a fixed path: a failed run prints its log path on screen."""
    import tempfile

    home = Path(tempfile.gettempdir()) / "bertui-snapshot-tests" / "home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(RECORDED, home / "runs")
    monkeypatch.setenv("BERTUI_HOME", str(home))
    return home


@pytest.fixture
def no_cached_models(monkeypatch):
    """The local HF cache differs between machines: the New run form sees none."""
    monkeypatch.setattr("bertui.core.models.list_cached_models", lambda: [])


class FakePredictor:
    """Stands in for bertui.core.predict.RunPredictor: fixed answers, no torch."""

    loads = 0

    def __init__(self, run_path: Path) -> None:
        self.run_path = run_path
        self.model_names: list[str] = []

    def load(self) -> FakePredictor:
        FakePredictor.loads += 1
        self.model_names = ["pretrained", "probe", "finetuned"]
        return self

    def predict(self, texts: list[str]) -> list[dict[str, dict[str, Any]]]:
        out = []
        for text in texts:
            positive = "good" in text or "love" in text.lower()
            p = 0.91 if positive else 0.12
            out.append({
                "pretrained": {"label": "negative", "probs": {"negative": 0.52,
                                                              "positive": 0.48}},
                "probe": {"label": "positive" if p > 0.5 else "negative",
                          "probs": {"negative": 0.35 if positive else 0.7,
                                    "positive": 0.65 if positive else 0.3}},
                "finetuned": {"label": "positive" if p > 0.5 else "negative",
                              "probs": {"negative": round(1 - p, 2), "positive": p}},
            })
        return out


def build_app(home: Path, config_path: Path, **kwargs: Any) -> BertuiApp:
    kwargs.setdefault("clock", lambda: FROZEN_NOW)
    kwargs.setdefault("predictor_factory", FakePredictor)
    return make_app(home=home, config_path=config_path, **kwargs)


async def wait_until(pilot, predicate, timeout: float = 15.0) -> None:
    """Let the app run until ``predicate()`` holds (thread workers post their results as
    messages, which a loaded machine may take a while to deliver)."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        await pilot.pause(0.05)


async def settle(pilot, seconds: float = 0.3) -> None:
    """Wait until the app's workers are done and the screen is drawn; stop cursor blink."""
    app = pilot.app
    await pilot.pause()
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause(seconds / 3)
    from textual.widgets import Input

    for widget in app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()


def plain(widget) -> str:
    """The text a Static (or Label) shows, as plain text."""
    import io

    from rich.console import Console
    from rich.text import Text

    content = widget.content
    if isinstance(content, str):
        return content
    if isinstance(content, Text):
        return content.plain
    console = Console(width=200, file=io.StringIO(), record=True, color_system=None)
    console.print(content)
    return console.export_text()


def screen_text(app) -> str:
    """The text of every displayed Static of the current screen, for assertions."""
    from textual.widgets import Static

    return "\n".join(plain(w) for w in app.screen.query(Static).results() if w.display)


def os_env_offline() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


class Stall:
    """Stands in for a filesystem that hangs: wraps ``function`` so that, once ``arm()`` was
    called, its next call (for which ``when(*args)`` holds) blocks until ``release()``.
    ``released`` records how each stalled call ended: False when nobody released it within
    ``timeout`` seconds, which is what happens when the call blocks the app's own thread (the
    test cannot run meanwhile)."""

    def __init__(self, function, when=lambda *args: True, timeout: float = 10.0) -> None:
        import threading

        self.function, self.when, self.timeout = function, when, timeout
        self._armed, self.stalled, self._release = (threading.Event(), threading.Event(),
                                                    threading.Event())
        self.released: list[bool] = []

    def __call__(self, *args, **kwargs):
        if self._armed.is_set() and self.when(*args):
            self._armed.clear()
            self.stalled.set()
            self.released.append(self._release.wait(timeout=self.timeout))
        return self.function(*args, **kwargs)

    def __get__(self, instance, owner=None):  # set on a class, it stands in for a method
        import functools

        return self if instance is None else functools.partial(self, instance)

    def arm(self) -> None:
        self._armed.set()

    def release(self) -> None:
        self._release.set()
