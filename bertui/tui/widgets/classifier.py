"""The classifier pane of Compare: type a sentence, press Enter, see what every model of the
run predicts, with per-label probability bars side by side and disagreements marked.

The models load lazily, once, in a thread worker (``RunPredictor.load`` imports torch); the pane
shows "loading models…" meanwhile and the UI keeps running. Results come back as messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static
from textual.worker import get_current_worker

from bertui.core.verdict import TITLES
from bertui.tui.format import one_line
from bertui.tui.themes import theme_color

MODEL_TITLES = TITLES  # every arm's short title ("from scratch", "SetFit", …)
BAR_WIDTH = 12  # at most; narrower when many models share the pane's width


def default_predictor(run_path: Path) -> Any:
    """The engine's predictor for a run (imported here: it pulls in torch when loaded)."""
    from bertui.core.predict import RunPredictor

    return RunPredictor(run_path)


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of eighth-blocks, ``width`` cells when ``fraction`` is 1."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest] if rest else ""
    return ("█" * full + partial).ljust(width)


def disagreement(result: dict[str, dict[str, Any]]) -> bool:
    return len({answer.get("label") for answer in result.values()}) > 1


class ClassifierPane(Vertical):
    """Input + status line + result grid. ``titles`` overrides model names on screen."""

    @dataclass
    class Loading(Message):
        pane: ClassifierPane

    @dataclass
    class Answered(Message):
        pane: ClassifierPane
        text: str
        result: dict[str, dict[str, Any]]
        seconds: float

    @dataclass
    class Failed(Message):
        pane: ClassifierPane
        error: str

    def __init__(self, run_path: Path, *,
                 predictor_factory: Callable[[Path], Any] | None = None,
                 titles: dict[str, str] | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run_path = Path(run_path)
        self.predictor_factory = predictor_factory or default_predictor
        self.titles = {**MODEL_TITLES, **(titles or {})}
        self._predictor: Any = None
        self._lock = threading.Lock()
        self._asked = False  # a worker was started and has not answered or failed yet
        self.last: tuple[str, dict[str, dict[str, Any]]] | None = None
        self.state = "idle"  # idle | loading | ready | error

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Type a sentence and press Enter", id="classify-input")
        yield Static("The models load when you press Enter.", id="classify-status")
        yield Static("", id="classify-result")

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._paint())

    # --- the worker ---------------------------------------------------------------------------

    def preload(self) -> None:
        """Load the models now (in the background), before the first sentence. Never replaces
        a worker already started: the classify group is exclusive, and a preload that came in
        after a sentence (the tab's own activation does) would cancel that sentence."""
        if self._predictor is None and not self._asked:
            self._start(None)

    @on(Input.Submitted, "#classify-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.classify(event.value)

    def classify(self, text: str) -> None:
        """Classify ``text`` (shown in the input) with every model of the run."""
        field = self.query_one("#classify-input", Input)
        if field.value != text:
            field.value = text
        text = text.strip()
        if not text:
            self._status("Type a sentence first.")
            return
        self._start(text)

    def _start(self, text: str | None) -> None:
        self._asked = True
        self._classify(text)

    @work(thread=True, exclusive=True, group="classify", exit_on_error=False)
    def _classify(self, text: str | None) -> None:
        worker = get_current_worker()
        try:
            with self._lock:
                if self._predictor is None:
                    self.post_message(self.Loading(self))
                    predictor = self.predictor_factory(self.run_path)
                    predictor.load()
                    self._predictor = predictor
            if text is None or worker.is_cancelled:
                if text is None:
                    self.post_message(self.Answered(self, "", {}, 0.0))
                return
            start = time.perf_counter()
            result = self._predictor.predict([text])[0]
            seconds = time.perf_counter() - start
        except Exception as exc:  # BadInput, a missing model folder, out of memory…
            if not worker.is_cancelled:
                self.post_message(self.Failed(self, one_line(str(exc) or type(exc).__name__)))
            return
        if not worker.is_cancelled:
            self.post_message(self.Answered(self, text, result, seconds))

    # --- showing results -----------------------------------------------------------------------

    def on_classifier_pane_loading(self, message: Loading) -> None:
        self.state = "loading"
        self._status("loading models…")
        self.query_one("#classify-status").add_class("-loading")

    def on_classifier_pane_answered(self, message: Answered) -> None:
        self._asked = False
        self.state = "ready"
        self.query_one("#classify-status").remove_class("-loading")
        if not message.text:
            names = ", ".join(self.titles.get(n, n) for n in self._model_names())
            self._status(f"Ready: {names}. Type a sentence and press Enter.")
            return
        self.last = (message.text, message.result)
        if disagreement(message.result):
            self._status("⚠ the models disagree")
        else:
            self._status("all models agree")
        self._paint()

    def on_classifier_pane_failed(self, message: Failed) -> None:
        self._asked = False
        self.state = "error"
        self.query_one("#classify-status").remove_class("-loading")
        self._status(f"✗ {message.error}")

    def _model_names(self) -> list[str]:
        return list(getattr(self._predictor, "model_names", []) or [])

    def _status(self, text: str) -> None:
        self.query_one("#classify-status", Static).update(text)

    def _paint(self) -> None:
        if self.last is None:
            return
        self.query_one("#classify-result", Static).update(self.result_table(*self.last))

    def result_table(self, text: str, result: dict[str, dict[str, Any]]) -> Table:
        variables = self.app.theme_variables
        muted = theme_color(variables, "foreground-muted")
        warn = theme_color(variables, "warning")
        order = [n for n in ("pretrained", "probe", "finetuned") if n in result]
        order += [n for n in result if n not in order]
        reference = result.get("finetuned", {}).get("label")
        # a label column of 14, then per model a bar, " 0.00" and the padding of 2
        width = max(4, min(BAR_WIDTH, (self.size.width - 16) // max(1, len(order)) - 7))
        labels: list[str] = []
        for name in order:
            for label in result[name].get("probs", {}):
                if label not in labels:
                    labels.append(label)
        table = Table(box=None, padding=(0, 2), show_edge=False, expand=False,
                      title=Text(f"“{one_line(text, 70)}”", style=muted), title_justify="left")
        table.add_column("", style=muted, no_wrap=True)
        for name in order:
            table.add_column(Text(self.titles.get(name, name),
                                  style=f"bold {theme_color(variables, 'model-' + name)}"),
                             no_wrap=True)
        cells = []
        for name in order:
            label = str(result[name].get("label"))
            differs = reference is not None and label != reference
            cells.append(Text(f"{label} ≠" if differs else label,
                              style=f"bold {warn}" if differs else "bold"))
        table.add_row("predicted", *cells)
        for label in labels:
            row = []
            for name in order:
                p = float(result[name].get("probs", {}).get(label, 0.0))
                color = theme_color(variables, "model-" + name)
                row.append(Text.assemble((bar(p, width), color), f" {p:.2f}"))
            table.add_row(one_line(label, 14), *row)
        return table
