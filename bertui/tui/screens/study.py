"""Study: the learning curves of one study (accuracy against the number of labelled examples,
a log-scaled axis, one line per arm with its seeds' range as error bars), the crossover budget
marked, the verdict, a table of its runs (enter opens a run's Compare), the cost of each point
and what the next labels would buy (the power-law forecast).

Everything comes from the study directory (summary.json, status.json, events.jsonl) and its
runs' directories. While the study runs, the screen follows it as the Monitor follows a run: a
thread worker reads the files (``StudyFollower``), one read at a time, and each point appears
when the summary is rewritten after its run ended; the progress line gives the runs done, the
run going now and an ETA for the whole study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static, TabbedContent, TabPane
from textual.worker import Worker

from bertui.core.runs import ACTIVE_STATES, RESUMABLE_STATES
from bertui.core.verdict import TITLES
from bertui.tui.format import duration, one_line, percent
from bertui.tui.screens.base import BertuiScreen, PaletteCommand
from bertui.tui.study_follow import StudyFollower, StudyReading
from bertui.tui.themes import state_style
from bertui.tui.widgets.chart import Chart

if TYPE_CHECKING:
    from bertui.tui.app import BertuiApp

POLL_SECONDS = 0.5
TABS = ("runs", "costs", "forecast")
STATE_ICONS = {"queued": "◌", "running": "●", "finished": "✓", "failed": "✗",
               "cancelled": "■", "lost": "?"}
BAR_OFFSET = 0.012  # how far apart (a share of the x range) the arms' error bars stand


def title(arm: str) -> str:
    return TITLES.get(arm, arm)


def points_by(summary: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """summary.json's points by (arm, budget)."""
    return {(p.get("arm"), p.get("budget")): p for p in summary.get("points") or []}


def measured(summary: dict[str, Any], arm: str) -> list[dict[str, Any]]:
    """The arm's points that have a value, smallest budget first."""
    pts = [p for p in summary.get("points") or [] if p.get("arm") == arm and "accuracy" in p]
    return sorted(pts, key=lambda p: p.get("rows") or 0)


def y_range(summary: dict[str, Any]) -> tuple[float, float]:
    """The accuracy axis: the values' range widened to tenths (0..1 when nothing is in)."""
    values = [v for p in summary.get("points") or [] if "accuracy" in p
              for v in (p["accuracy"]["min"], p["accuracy"]["max"])]
    if not values:
        return 0.0, 1.0
    low = max(0.0, math.floor(min(values) * 10 - 0.5) / 10)
    high = min(1.0, math.ceil(max(values) * 10 + 0.5) / 10)
    return low, high


def curve_drawing(summary: dict[str, Any], arms: list[str]) -> Any:
    """The drawing function of the learning curves (see bertui.tui.widgets.chart)."""
    budgets = [str(b) for b in summary.get("budgets") or []]
    rows = [int(r) for r in summary.get("rows") or []]
    ticks = [math.log10(max(1, r)) for r in rows]
    cross = (summary.get("crossover") or {}).get("budget")
    span = (ticks[-1] - ticks[0]) if len(ticks) > 1 else 1.0

    def draw(plt: Any, colors: Any) -> None:
        for i, arm in enumerate(arms):
            color = colors(f"model-{arm}")
            pts = measured(summary, arm)
            if not pts:
                continue
            offset = (i - (len(arms) - 1) / 2) * BAR_OFFSET * span
            xs = [math.log10(max(1, p["rows"])) + offset for p in pts]
            means = [p["accuracy"]["mean"] for p in pts]
            plt.plot(xs, means, label=title(arm), color=color, marker="braille")
            for x, p in zip(xs, pts, strict=True):
                low, high = p["accuracy"]["min"], p["accuracy"]["max"]
                if high > low:
                    plt.plot([x, x], [low, high], color=color, marker="│")
            plt.scatter(xs, means, color=color, marker="●")
        if cross in budgets:
            x = ticks[budgets.index(cross)]
            plt.vertical_line(x, color=colors("warning"))
        if ticks:
            pad = 0.06 * span
            plt.xlim(ticks[0] - pad, ticks[-1] + pad)
            labels = [b if b != "all" else f"all={r}" for b, r in zip(budgets, rows,
                                                                          strict=True)]
            plt.xticks(ticks, labels)
        plt.ylim(*y_range(summary))
        plt.title("eval accuracy by labelled examples (log scale)")

    return draw


def cost_cell(cost: dict[str, Any] | None) -> str:
    """A point's mean cost: "12.3 s", with device-seconds where they differ and Wh where
    measured ("12.3 s · 24.6 dev·s · 0.21 Wh")."""
    if not cost or cost.get("seconds") is None:
        return "—"
    parts = [f"{cost['seconds']:.1f} s"]
    device = cost.get("device_seconds")
    if isinstance(device, (int, float)) and abs(device - cost["seconds"]) > 0.05:
        parts.append(f"{device:.1f} dev·s")
    if isinstance(cost.get("energy_wh"), (int, float)):
        parts.append(f"{cost['energy_wh']:.3g} Wh")
    return " · ".join(parts)


def spread_cell(point: dict[str, Any] | None) -> str:
    """A point's accuracy: "71.0% (68.0–74.0)" over seeds, "71.0%" for one seed."""
    if not point or "accuracy" not in point:
        return "—"
    acc = point["accuracy"]
    if len(point.get("seeds") or []) > 1:
        return f"{percent(acc['mean'])} ({100 * acc['min']:.1f}–{100 * acc['max']:.1f})"
    return percent(acc["mean"])


def forecast_cells(forecast: dict[str, Any]) -> list[str]:
    """One arm's forecast as table cells: fit, ceiling, and the accuracy at 2× and 10×."""
    if "at" not in forecast:
        return [one_line(str(forecast.get("note") or "—"), 60), "", "", ""]
    cells = [f"R² {forecast['r2']:.2f} · RMSE {100 * forecast['rmse']:.1f} pts",
             percent(forecast.get("ceiling"))]
    for at in forecast["at"][:2]:
        interval = "" if at.get("low") is None else \
            f" ({100 * at['low']:.1f}–{100 * at['high']:.1f})"
        cells.append(f"{percent(at['accuracy'])}{interval}")
    return cells + [""] * (4 - len(cells))


class StudyRunsTable(DataTable):
    """The study's runs; enter opens the highlighted one (Compare, or Monitor while it runs)."""

    BINDINGS = [Binding("enter", "select_cursor", "Open run")]


class StudyScreen(BertuiScreen):
    """Follows the study at ``study_path``."""

    CSS_PATH = "study.tcss"
    TITLE = "Study"
    BINDINGS = [
        Binding("1", "tab('runs')", "Runs"),
        Binding("2", "tab('costs')", "Costs"),
        Binding("3", "tab('forecast')", "Forecast"),
        Binding("x", "cancel_study", "Cancel study"),
        Binding("r", "resume_study", "Resume study"),
        Binding("escape", "app.show_runs", "All runs"),
    ]

    @dataclass
    class Read(Message):
        """A look at the study directory, from the reading thread (None: it failed)."""

        reading: StudyReading | None

    def __init__(self, study_path: Path, home: Path | None = None) -> None:
        super().__init__()
        self.follower = StudyFollower(Path(study_path), home)
        self.sub_title = self.follower.study.name
        self._reading: Worker[None] | None = None
        self._last_state: str | None = None
        self._drawn_summary: dict[str, Any] | None = None
        self.redraws = 0  # how often the curves were handed a new summary (tests read it)

    @property
    def bertui(self) -> BertuiApp:
        return self.app  # type: ignore[return-value]

    @property
    def study(self):
        return self.follower.study

    @property
    def arms(self) -> list[str]:
        return list(self.follower.summary.get("arms") or self.study.grid.arms)

    def compose_body(self) -> ComposeResult:
        with Vertical(id="study-body"):
            yield Static("", id="study-headline")
            yield Static("", id="study-progress")
            with Horizontal(id="study-top"):
                yield Chart(id="curves", classes="chart")
                with VerticalScroll(id="study-side", can_focus=False):
                    yield Static("", id="study-crossover")
                    yield Static("", id="study-verdict")
            with TabbedContent(initial="tab-runs", id="study-tabs"):
                with TabPane("Runs", id="tab-runs"):
                    yield StudyRunsTable(id="study-runs", cursor_type="row", zebra_stripes=True)
                with TabPane("Costs", id="tab-costs"):
                    yield Static("mean over seeds: wall seconds · device-seconds (where they "
                                 "differ) · energy (where measured)", classes="hint")
                    yield DataTable(id="study-costs", cursor_type="none")
                with TabPane("Forecast", id="tab-forecast"):
                    yield Static("what the next labels would buy: error ≈ a·n^−b + c fitted "
                                 "to each arm's mean error; 95 % intervals", classes="hint")
                    yield DataTable(id="study-forecast", cursor_type="none")

    def on_mount(self) -> None:
        self.follower.poll()  # the first look, before the first frame
        self._show(force=True)
        self.query_one(StudyRunsTable).focus()
        self.set_interval(POLL_SECONDS, self._tick)
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._show(force=True))

    def on_resize(self, event: Any) -> None:
        # (BertuiScreen's handler runs too: Textual calls each class's.) A short terminal
        # gives the tables less room and the curves more.
        short = event.size.height < 32
        if short != self.has_class("-short"):
            self.set_class(short, "-short")

    # --- polling ------------------------------------------------------------------------------

    def _tick(self) -> None:
        self._show_progress()
        if self._reading is None or self._reading.is_finished:
            self._reading = self._read()

    @work(thread=True, exclusive=True, exit_on_error=False, group="study-follow")
    def _read(self) -> None:
        try:
            reading: StudyReading | None = self.follower.read()
        except OSError:  # the folder went away, lost its permissions…: look again later
            reading = None
        self.post_message(self.Read(reading))

    def on_study_screen_read(self, message: Read) -> None:
        if message.reading is not None and self.follower.apply(message.reading):
            self._show()

    def _show(self, force: bool = False) -> None:
        summary = self.follower.summary
        if force or summary is not self._drawn_summary:
            self._drawn_summary = summary
            self._show_summary(summary)
        self._show_runs()
        self._show_progress()
        state = self.follower.state
        if state != self._last_state:
            if self._last_state in ACTIVE_STATES and state == "finished":
                self.notify("The study finished.", title=self.study.name)
            elif self._last_state in ACTIVE_STATES and state in ("failed", "lost"):
                self.notify(f"The study {state}.", title=self.study.name, severity="error")
            self._last_state = state
            self.refresh_bindings()

    # --- what the screen shows ----------------------------------------------------------------

    def _show_summary(self, summary: dict[str, Any]) -> None:
        arms = self.arms
        self.redraws += 1
        self.query_one("#curves", Chart).plot(curve_drawing(summary, arms))
        cross = summary.get("crossover")
        lines = []
        if cross:
            lines.append(Text.assemble(("Fine-tuning beats the probe: ", "bold"),
                                       str(cross.get("text") or "—")))
        pre = summary.get("pretraining")
        if pre:
            lines.append(Text.assemble(("Pre-training beats scratch: ", "bold"),
                                       str(pre.get("text") or "—")))
        self.query_one("#study-crossover", Static).update(Text("\n").join(lines))
        self.query_one("#study-verdict", Static).update(
            summary.get("verdict") or "No verdict yet: it comes with the first finished run.")
        self._show_costs(summary, arms)
        self._show_forecast(summary, arms)

    def _show_costs(self, summary: dict[str, Any], arms: list[str]) -> None:
        table = self.query_one("#study-costs", DataTable)
        table.clear(columns=True)
        table.add_column("budget", key="budget")
        for arm in arms:
            table.add_column(title(arm), key=arm)
        by = points_by(summary)
        for budget, rows in zip(summary.get("budgets") or [], summary.get("rows") or [],
                                strict=False):
            label = f"{budget} ({rows})" if budget == "all" else str(budget)
            table.add_row(label, *(cost_cell((by.get((arm, budget)) or {}).get("cost"))
                                   for arm in arms), key=str(budget))

    def _show_forecast(self, summary: dict[str, Any], arms: list[str]) -> None:
        table = self.query_one("#study-forecast", DataTable)
        table.clear(columns=True)
        forecasts = summary.get("forecast") or {}
        largest = max([int(r) for r in summary.get("rows") or [0]] or [0])
        table.add_column("arm", key="arm")
        table.add_column("fit", key="fit")
        table.add_column("ceiling", key="ceiling")
        table.add_column(f"2× ({2 * largest})", key="x2")
        table.add_column(f"10× ({10 * largest})", key="x10")
        for arm in arms:
            table.add_row(title(arm), *forecast_cells(forecasts.get(arm) or {}), key=arm)

    def _show_runs(self) -> None:
        table = self.query_one(StudyRunsTable)
        arms = self.arms
        columns = [("seed", "seed"), ("budget", "budget"), ("state", "state"),
                   *((arm, title(arm)) for arm in arms), ("time", "time")]
        if [str(c.key.value) for c in table.columns.values()] != [k for k, _ in columns]:
            table.clear(columns=True)
            for key, label in columns:
                table.add_column(label, key=key)
        variables = self.app.theme_variables
        rows = []
        for r in self.follower.runs:
            state = r.summary.get("status") or "?"
            cells = [str(r.seed), r.budget, Text(state, style=state_style(variables, state))]
            for arm in arms:
                value = (r.metrics.get(arm) or {}).get("accuracy")
                cells.append(percent(value) if isinstance(value, (int, float)) else "—")
            cells.append(duration(r.summary.get("duration_s")))
            rows.append((r.run.id, cells))
        existing = [str(k.value) for k in table.rows]
        if existing == [key for key, _ in rows]:
            for key, cells in rows:
                for (column, _), value in zip(columns, cells, strict=True):
                    if table.get_cell(key, column) != value:
                        table.update_cell(key, column, value)
            return
        current = self._highlighted_id()
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if current in [key for key, _ in rows]:
            table.move_cursor(row=table.get_row_index(current))

    def _highlighted_id(self) -> str | None:
        table = self.query_one(StudyRunsTable)
        if not table.row_count:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:
            return None

    def _show_progress(self) -> None:
        f = self.follower
        study, state = f.study, f.state
        variables = self.app.theme_variables
        grid = study.grid
        model = (study.config.get("run", {}).get("model") or {}).get("spec") or "?"
        data = (study.config.get("run", {}).get("data") or {}).get("train") or "?"
        budgets = ",".join(study.config.get("budgets") or [])
        self.query_one("#study-headline", Static).update(Text.assemble(
            (f"{STATE_ICONS.get(state, '')} {state}", state_style(variables, state)), "  ",
            (study.name, "bold"), "  ",
            f"{one_line(Path(str(model)).name or str(model), 28)} on {one_line(str(data), 28)}"
            f" · budgets {budgets} × {len(grid.seeds)} seed(s) · {', '.join(grid.arms)}"))
        self.query_one("#study-progress", Static).update(self._progress_text())

    def _progress_text(self) -> str:
        f = self.follower
        status, state = f.study.status, f.state
        now = self.bertui.clock()
        done = f"{status.get('runs_finished', 0)}/{status.get('runs_total', len(f.study.grid))}"
        parts = [f"runs done {done}"]
        if state in ACTIVE_STATES:  # (the ETA first: a narrow terminal cuts the line's end)
            parts += [f"ETA {duration(f.eta(now))}", f"elapsed {duration(f.elapsed(now))}"]
        else:
            parts.append(f"took {duration(f.elapsed(now))}")
        current = f.current_run
        if current is not None:
            step = ""
            if f.current and f.current.get("total_steps"):
                step = f" (step {f.current.get('step', 0)}/{f.current['total_steps']})"
            parts.append(f"running: seed {current.seed}, budget {current.budget}{step}")
        if state in ("failed", "lost", "cancelled"):
            error = status.get("error")
            why = f": {one_line(str(error), 80)}" if error else ""
            parts.append(f"{state}{why} · r resumes it")
        return " · ".join(parts)

    # --- actions ------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#study-runs")
    def _selected(self, event: DataTable.RowSelected) -> None:
        run_id = str(event.row_key.value)
        run = next((r.run for r in self.follower.runs if r.run.id == run_id), None)
        if run is not None:
            self.bertui.open_run(run.path, back_to=self.study.path)

    def action_tab(self, tab: str) -> None:
        if tab in TABS:
            self.query_one("#study-tabs", TabbedContent).active = f"tab-{tab}"
            if tab == "runs":
                self.query_one(StudyRunsTable).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.follower.state
        if action == "cancel_study":
            return state in ACTIVE_STATES
        if action == "resume_study":
            return state in RESUMABLE_STATES
        return True

    def action_cancel_study(self) -> None:
        if self.follower.state not in ACTIVE_STATES:
            return
        from bertui.tui.screens.confirm import ConfirmModal

        def answered(yes: bool | None) -> None:
            if yes:
                self._study_action("cancel")

        self.app.push_screen(ConfirmModal(
            f"Cancel study {self.study.name}? The run going now keeps its checkpoint, so the "
            "study can be resumed.", "Cancel study"), answered)

    def action_resume_study(self) -> None:
        if self.follower.state in RESUMABLE_STATES:
            self._study_action("resume")

    @work(thread=True, exclusive=True, group="study-action", exit_on_error=False)
    def _study_action(self, what: str) -> None:
        from bertui.core.studies import cancel_study, resume_study

        try:
            if what == "cancel":
                cancel_study(self.study)
            else:
                resume_study(self.study)
        except Exception as exc:  # RunError: it ended meanwhile, a runner that cannot start
            self.app.call_from_thread(self.notify, str(exc), title=f"Cannot {what}",
                                      severity="error")
            return
        self.app.call_from_thread(self.notify, "Cancelling…" if what == "cancel" else
                                  "Resumed.", title=self.study.name)

    def palette_commands(self) -> list[PaletteCommand]:
        commands: list[PaletteCommand] = [
            ("Study costs", "Seconds and energy per budget and arm",
             lambda: self.action_tab("costs")),
            ("Study forecast", "What the next labels would buy",
             lambda: self.action_tab("forecast")),
        ]
        state = self.follower.state
        if state in ACTIVE_STATES:
            commands.append(("Cancel this study", "Stop its runner (asks first)",
                             self.action_cancel_study))
        if state in RESUMABLE_STATES:
            commands.append(("Resume this study", "Finished runs are kept",
                             self.action_resume_study))
        return commands
