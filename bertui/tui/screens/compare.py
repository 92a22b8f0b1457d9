"""Compare: every arm of a run side by side (the pre-trained model, often an untrained head,
the linear probe, the fine-tune, and those trained from scratch, task-adapted or with SetFit
where the run has them): the verdict as headline, accuracy bars with their 95 % intervals and
macro-F1 bars, a table with the intervals, each arm's difference to the fine-tune, its cost and
the arms that failed, per-class F1, confusion matrices, the eval examples the fine-tuned model
still gets wrong, and the classifier pane. Everything but the pane reads metrics.json; a run
made before intervals existed shows its scores without them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Input, Static, TabbedContent, TabPane, Tabs

from bertui.core.runs import Run
from bertui.core.schema import ARM_NAMES
from bertui.core.stats import Comparison, p_text, points
from bertui.core.verdict import arm_reports, arm_title, comparisons, failed_arms, find
from bertui.tui.format import one_line, percent, rate, score
from bertui.tui.screens.base import BertuiScreen, PaletteCommand
from bertui.tui.themes import theme_color
from bertui.tui.widgets.chart import Chart
from bertui.tui.widgets.classifier import ClassifierPane
from bertui.tui.widgets.confusion import ConfusionMatrix

if TYPE_CHECKING:
    from bertui.tui.app import BertuiApp

TABS = ("scores", "confusion", "errors", "classifier")
NO_STATISTICS = ("No intervals or verdict for this run: it was made before bertui computed "
                 "them, or it has a single model.")


def model_titles(metrics: dict[str, Any]) -> dict[str, str]:
    """What each model is called on screen; an untrained head says so."""
    note = str((metrics.get("pretrained") or {}).get("note") or "")
    titles = {name: arm_title(metrics, name) for name in (*ARM_NAMES, *arm_reports(metrics))}
    if "untrained" in note:
        titles["pretrained"] = "untrained head"
    return titles


def interval(ci: Any) -> str:
    """An accuracy's 95 % interval as a range of percentages: "84.9–96.6"."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return "—"
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"


def against(c: Comparison | None) -> str:
    """An arm's accuracy against the fine-tune's: "−15.0 (−22.0…−8.0) p < 0.001"."""
    if c is None:
        return "—"
    return f"{points(c.delta)} ({points(c.ci_low)}…{points(c.ci_high)}) {p_text(c.p_value)}"


def cost_cells(cost: dict[str, Any]) -> tuple[str, str]:
    """(wall time, energy) of an arm's cost: "18.1 s", "0.21 Wh" (— where not measured)."""
    seconds = cost.get("seconds")
    energy = cost.get("energy_wh")
    return ("—" if seconds is None else f"{seconds:.1f} s",
            "—" if energy is None else f"{energy:.3g} Wh")


def draw_interval(plt: Any, row: int, report: dict[str, Any], color: Any) -> None:
    """An accuracy's 95 % interval over its bar: ├──┼─┤, the cross at the accuracy."""
    ci = report.get("accuracy_ci")
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return
    low, high = float(ci[0]), float(ci[1])
    plt.plot([low, high], [row, row], marker="─", color=color)
    for x, mark in ((low, "├"), (high, "┤"), (float(report.get("accuracy") or 0.0), "┼")):
        plt.scatter([x], [row], marker=mark, color=color)


class ErrorsTable(DataTable):
    """Misclassified eval examples; enter sends the text to the classifier pane."""

    BINDINGS = [Binding("enter", "select_cursor", "Try in classifier")]


class CompareScreen(BertuiScreen):
    """The comparison of one finished run (``run_path``)."""

    CSS_PATH = "compare.tcss"
    TITLE = "Compare"
    BINDINGS = [
        Binding("1", "tab('scores')", "Scores"),
        Binding("2", "tab('confusion')", "Confusion"),
        Binding("3", "tab('errors')", "Errors"),
        Binding("4", "tab('classifier')", "Classifier"),
        Binding("m", "monitor", "Monitor"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, run_path: Path, tab: str = "scores") -> None:
        super().__init__()
        self.run = Run.load(Path(run_path))
        self.metrics = self.run.metrics()
        self.titles = model_titles(self.metrics)
        self.models = list(arm_reports(self.metrics))  # the arms with scores, as they ran
        self.failed = failed_arms(self.metrics)
        self.sub_title = self.run.name
        self.initial_tab = tab if tab in TABS else "scores"
        self.back_to: Path | None = None  # the study this run was opened from, if any

    @property
    def bertui(self) -> BertuiApp:
        return self.app  # type: ignore[return-value]

    def compose_body(self) -> ComposeResult:
        with Vertical(id="compare-body"):
            yield Static(self._headline(), id="compare-headline")
            yield Static(self._verdict(), id="compare-verdict")
            with TabbedContent(initial=f"tab-{self.initial_tab}", id="compare-tabs"):
                with TabPane("Scores", id="tab-scores"):
                    with VerticalScroll():
                        with Horizontal(id="score-charts"):
                            yield Chart(id="accuracy-bars", classes="chart")
                            yield Chart(id="f1-bars", classes="chart")
                        yield DataTable(id="scores-table", cursor_type="none")
                        yield Static("per-class F1", classes="section-title", id="per-class-title")
                        yield DataTable(id="per-class-table", cursor_type="none")
                with TabPane("Confusion", id="tab-confusion"):
                    yield Static("rows: the true label · columns: the predicted label",
                                 classes="hint", id="matrices-caption")
                    labels = self.metrics.get("labels") or []
                    with VerticalScroll(id="matrices",
                                        classes="-stacked" if len(labels) > 3 else ""):
                        for name in self.models:
                            yield ConfusionMatrix(
                                self.titles[name], list(self.metrics.get("labels") or []),
                                (self.metrics.get(name) or {}).get("confusion_matrix"),
                                id=f"matrix-{name}")
                with TabPane("Errors", id="tab-errors"):
                    yield Static("", id="errors-caption")
                    yield ErrorsTable(id="errors-table", cursor_type="row", zebra_stripes=True)
                with TabPane("Classifier", id="tab-classifier"):
                    yield ClassifierPane(self.run.path, id="classifier",
                                         predictor_factory=self.bertui.predictor_factory,
                                         titles=self.titles)

    def _headline(self) -> str:
        if not self.metrics:
            return (f"No metrics for {self.run.name}: the run is {self.run.state}. "
                    "Compare needs a finished run.")
        config = self.run.config
        train = self.metrics.get("train") or {}
        model = (config.get("model") or {}).get("spec") or "?"
        data = (config.get("data") or {}).get("train") or "?"
        parts = [f"{model} on {data}",
                 f"eval {self.metrics.get('eval_source') or '?'} "
                 f"({self.metrics.get('eval_rows', '?')} rows)"]
        if train:
            precision = train.get("precision_reason") or train.get("precision", "")
            parts.append(f"{train.get('device', '?')} {precision}".strip())
            parts.append(f"{rate(train.get('train_samples_per_s'), ' samples/s')}")
        return " · ".join(parts)

    def _verdict(self) -> str:
        if not self.metrics:
            return ""
        return str(self.metrics.get("verdict") or NO_STATISTICS)

    def on_mount(self) -> None:
        # a row a bar, and room for the title and the axis
        self.query_one("#score-charts").styles.height = max(12, len(self.models) + 7)
        self._fill_scores()
        self._fill_errors()
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._fill_scores())
        if self.initial_tab == "classifier":
            self.call_after_refresh(self._enter_classifier)

    # --- scores -------------------------------------------------------------------------------

    def _fill_scores(self) -> None:
        metrics = self.metrics
        variables = self.app.theme_variables
        table = self.query_one("#scores-table", DataTable)
        table.clear(columns=True)
        table.add_columns("model", "accuracy", "95 % CI", "macro-F1", "vs fine-tuned", "time",
                          "energy", "note")
        found = comparisons(metrics)
        for name in self.models:
            m = metrics[name]
            vs = "—" if name == "finetuned" else against(find(found, name, "finetuned"))
            table.add_row(Text(self.titles[name],
                               style=f"bold {theme_color(variables, 'model-' + name)}"),
                          percent(m.get("accuracy")), interval(m.get("accuracy_ci")),
                          score(m.get("macro_f1")), vs, *cost_cells(m.get("cost") or {}),
                          m.get("note") or "", key=name)
        for name, error in self.failed.items():
            cost = (metrics.get(name) or {}).get("cost") or {}
            table.add_row(Text(self.titles.get(name, name),
                               style=f"bold {theme_color(variables, 'error')}"),
                          "failed", "—", "—", "—", *cost_cells(cost), one_line(error, 70),
                          key=name)
        per_class = self.query_one("#per-class-table", DataTable)
        per_class.clear(columns=True)
        per_class.add_column("label", key="label")
        per_class.add_column("support", key="support")
        for name in self.models:
            per_class.add_column(f"{self.titles[name]} F1", key=name)
        for label in metrics.get("labels") or []:
            support = next((m["per_class"][label].get("support") for n in self.models
                            if label in ((m := metrics[n]).get("per_class") or {})), None)
            cells = [label, str(support) if support is not None else "—"]
            for name in self.models:
                f1 = ((metrics[name].get("per_class") or {}).get(label) or {}).get("f1")
                cells.append(score(f1))
            per_class.add_row(*cells, key=label)
        bars = [(self.titles[n], n, metrics[n]) for n in self.models]

        def draw(key: str, title: str):
            def drawing(plt, colors) -> None:
                if not bars:
                    return
                # each bar a line of full blocks: one row whatever the chart's height (a
                # plotext bar spans one row or two), so an interval drawn over it stays on it
                for i, (_, name, m) in enumerate(bars, start=1):
                    plt.plot([0.0, float(m.get(key) or 0.0)], [i, i], marker="█",
                             color=colors(f"model-{name}"))
                    if key == "accuracy":
                        draw_interval(plt, i, m, colors("foreground"))
                plt.yticks(list(range(1, len(bars) + 1)), [t for t, _, _ in bars])
                plt.ylim(0.4, len(bars) + 0.6)
                plt.xlim(0, 1)
                plt.title(title)
            return drawing

        self.query_one("#accuracy-bars", Chart).plot(draw("accuracy", "accuracy"))
        self.query_one("#f1-bars", Chart).plot(draw("macro_f1", "macro-F1"))

    def _fill_errors(self) -> None:
        errors = self.metrics.get("errors") or []
        rows = self.metrics.get("eval_rows")
        caption = self.query_one("#errors-caption", Static)
        if not self.metrics.get("finetuned"):
            caption.update("No fine-tuned model in this run.")
        elif not errors:
            caption.update("The fine-tuned model gets every eval example right.")
        else:
            shown = f"{len(errors)} of {rows}" if rows else str(len(errors))
            caption.update(f"{shown} eval examples the fine-tuned model gets wrong "
                           "(enter: try one in the classifier).")
        table = self.query_one("#errors-table", ErrorsTable)
        table.add_column("text", key="text")
        table.add_column("true", key="true")
        table.add_column("predicted", key="predicted")
        table.add_column("confidence", key="confidence")
        for i, error in enumerate(errors):
            confidence = error.get("confidence")
            table.add_row(one_line(error.get("text", ""), 80), str(error.get("label")),
                          str(error.get("predicted")),
                          f"{confidence:.2f}" if isinstance(confidence, (int, float)) else "—",
                          key=str(i))

    @on(DataTable.RowSelected, "#errors-table")
    def _try_error(self, event: DataTable.RowSelected) -> None:
        errors = self.metrics.get("errors") or []
        index = int(str(event.row_key.value))
        if 0 <= index < len(errors):
            self.action_tab("classifier")
            self.query_one(ClassifierPane).classify(errors[index].get("text", ""))

    # --- tabs and navigation ------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self.query_one("#compare-tabs", TabbedContent).active = f"tab-{tab}"
        if tab == "classifier":
            self._enter_classifier()
        else:
            self.query_one("#compare-tabs Tabs", Tabs).focus()

    @on(TabbedContent.TabActivated, "#compare-tabs")
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-classifier":
            self.query_one(ClassifierPane).preload()

    def _enter_classifier(self) -> None:
        pane = self.query_one(ClassifierPane)
        pane.preload()
        self.query_one("#classify-input", Input).focus()

    def action_back(self) -> None:
        if isinstance(self.focused, Input):
            self.query_one("#compare-tabs Tabs", Tabs).focus()
        elif self.back_to is not None:  # opened from a Study screen: back to it
            self.bertui.open_study(self.back_to)
        else:
            self.bertui.action_show_runs()

    def action_monitor(self) -> None:
        self.bertui.open_run(self.run.path, view="monitor")

    def palette_commands(self) -> list[PaletteCommand]:
        return [
            ("Classify a sentence", "Open the classifier pane",
             lambda: self.action_tab("classifier")),
            ("Show confusion matrices", "Compare tab", lambda: self.action_tab("confusion")),
            ("Show misclassified examples", "Compare tab", lambda: self.action_tab("errors")),
            ("Show this run's training curves", "Monitor", self.action_monitor),
        ]
