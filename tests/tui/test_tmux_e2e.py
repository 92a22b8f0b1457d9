"""End to end in a real terminal: tmux runs ``bertui`` at 120×40; the test types like a user,
from New run (tiny model, demo data, one epoch, small caps) through a real run on the Monitor
to Compare and the classifier pane, reading the screen with ``capture-pane``.

Needs tmux and the ``tiny_model`` fixture of tests/conftest.py (it trains for real).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.e2e

TMUX = shutil.which("tmux")


class Terminal:
    """A detached tmux session running one command."""

    def __init__(self, command: list[str], env: dict[str, str], size=(120, 40)) -> None:
        self.name = f"bertui-e2e-{uuid.uuid4().hex[:8]}"
        # A server of its own: close() kills it, and a next test's new-session on a shared
        # socket could reach that server as it exits ("server exited unexpectedly").
        self.socket = f"{self.name}-{os.getpid()}"
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items())
        program = " ".join(_quote(c) for c in command)
        # COLUMNS/LINES from the test runner would override the terminal's real size
        shell = f"env -u COLUMNS -u LINES {exports} {program}; sleep 600"
        self.tmux("new-session", "-d", "-s", self.name, "-x", str(size[0]), "-y", str(size[1]),
                  shell)

    def tmux(self, *args: str) -> str:
        out = subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True,
                             timeout=30)
        if out.returncode != 0:
            raise AssertionError(f"tmux {args[0]} failed: {out.stderr}")
        return out.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.name, "-l", text)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        """Poll the screen until ``pattern`` (a regex) shows; fail with the screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} did not appear within {timeout}s; screen:\n{screen}")

    def tab(self, times: int = 1) -> None:
        """Move the focus. Textual runs the focus change as an action after the key, so text
        sent in the same burst can still reach the old field, and a capture of the screen
        does not show where the focus is: this is the one fixed wait of the test."""
        for _ in range(times):
            self.keys("Tab")
        time.sleep(0.6)

    def fill(self, text: str, pattern: str, tries: int = 5, timeout: float = 3.0) -> str:
        """Replace the focused field's text by ``text`` until ``pattern`` shows (clearing
        first makes a retry harmless)."""
        for _ in range(tries):
            self.keys("End", "C-u")
            self.type(text)
            try:
                return self.wait_for(pattern, timeout=timeout)
            except AssertionError:
                continue
        return self.wait_for(pattern, timeout=1)

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def _quote(text: str) -> str:
    return "'" + str(text).replace("'", "'\\''") + "'"


def bertui_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "bertui")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "bertui"]


@pytest.fixture
def terminal(tmp_path, bertui_home):
    if TMUX is None:
        pytest.skip("tmux is not installed")
    env = {"BERTUI_HOME": str(bertui_home), "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color",
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "TOKENIZERS_PARALLELISM": "false",
           "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(tmp_path))}
    term = Terminal(bertui_command(), env)
    yield term
    term.close()


def field_line(screen: str, label: str) -> str:
    return next((line for line in screen.splitlines() if label in line), "")


def test_new_run_to_compare_and_classifier(terminal, tiny_model):
    t = terminal
    t.wait_for(r"New run")
    t.wait_for(r"ready: Start", timeout=120)  # the default model and the demo data checked

    # the model field has the focus: replace "default" by the tiny model's folder
    t.fill(str(tiny_model), r"bert · 2 layers", tries=3, timeout=30)
    t.wait_for(r"model\s+\S*tiny-bert\s")

    # to epochs: dataset, split, eval, holdout, text column, label column, unlabeled, preview,
    # epochs
    t.tab(9)
    t.fill("1", r"epochs\s+1\s")
    # to the train cap: learning rate, batch size, max length, precision, TAPT steps,
    # processes, train cap
    t.tab(7)
    t.fill("64", r"train cap\s+64\s")
    t.tab()
    t.fill("32", r"eval cap\s+32\s")
    screen = t.wait_for(r"ready: Start", timeout=30)
    assert "problem" not in screen

    t.keys("C-s")
    t.wait_for(r"Monitor", timeout=120)
    screen = t.wait_for(r"✓ finished", timeout=600)
    assert "step" in screen and "ETA" in screen
    t.wait_for(r"c Compare", timeout=10)

    t.keys("c")
    screen = t.wait_for(r"Compare", timeout=30)
    screen = t.wait_for(r"fine-tuned", timeout=30)
    assert "accuracy" in screen and "linear probe" in screen

    t.keys("4")
    t.wait_for(r"Ready: .*fine-tuned", timeout=180)  # models loaded in the background
    t.type("What a wonderful, friendly place.")
    t.keys("Enter")
    screen = t.wait_for(r"predicted", timeout=60)
    assert re.search(r"predicted\s+(negative|positive)", screen), screen
    row = field_line(screen, "predicted")
    assert len(re.findall(r"negative|positive", row)) == 3, screen  # three models answered
    assert "linear probe" in screen and "fine-tuned" in screen

    t.keys("C-q")
    t.wait_for(r"^\s*$|\$", timeout=20)


def test_new_study_to_its_curve(terminal, tiny_model):
    """A small study started from the app (the palette's "New study"): the tiny model on the
    demo data, one epoch, budgets 16 and all × 1 seed (the form's arms: pre-trained, probe,
    fine-tuned); the Study screen follows it and draws its curve."""
    t = terminal
    t.wait_for(r"New run")
    # the default model and the demo data checked (the Start row may be below the fold)
    t.wait_for(r"bert · 6 layers", timeout=120)
    t.wait_for(r"360 rows from the bundled demo dataset", timeout=120)
    t.fill(str(tiny_model), r"bert · 2 layers", tries=3, timeout=30)
    t.tab(9)  # to epochs (as in the test above)
    t.fill("1", r"epochs\s+1\s")

    t.keys("C-p")
    t.wait_for(r"Search for commands", timeout=20)
    t.type("New study")
    t.wait_for(r"Learning curves: runs over label budgets", timeout=20)
    t.keys("Enter")
    t.wait_for(r"budgets\s+32,128,all", timeout=20)  # the study's fields, budgets focused
    time.sleep(0.6)  # the focus moves after a refresh (see Terminal.tab)
    t.fill("16,all", r"budgets\s+16,all\s")
    t.tab()
    t.fill("1", r"seeds\s+1\s")
    screen = t.wait_for(r"ready: Start \(ctrl\+s\) begins the study", timeout=60)
    assert "problem" not in screen and "Start study" in screen

    t.keys("C-s")
    t.wait_for(r"Study", timeout=120)
    screen = t.wait_for(r"✓ finished", timeout=600)
    assert "runs done 2/2" in screen, screen
    assert "eval accuracy by labelled examples" in screen
    assert "fine-tuned" in screen and "linear probe" in screen
    assert re.search(r"\b16\b.*all=360", screen), screen  # the budget axis
    assert "Fine-tuning beats the probe:" in screen
    t.keys("C-q")
    t.wait_for(r"^\s*$|\$", timeout=20)
