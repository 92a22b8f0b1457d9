"""Runs: every run under the bertui home (also those started by ``bertui train``) in a table;
open, resume, delete, and mark two finished runs to overlay their eval curves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static

from bertui.core.runs import ACTIVE_STATES, RESUMABLE_STATES, Run, RunError, delete_run, list_runs
from bertui.tui.format import duration, one_line, percent, rate, short_timestamp
from bertui.tui.screens.base import BertuiScreen
from bertui.tui.screens.confirm import ConfirmModal
from bertui.tui.themes import state_style
from bertui.tui.widgets.chart import Chart

if TYPE_CHECKING:
    from bertui.tui.app import BertuiApp

COLUMNS = (("name", "  name"), ("status", "status"), ("model", "model"),
           ("dataset", "dataset"), ("accuracy", "before → after"), ("duration", "time"),
           ("speed", "samples/s"), ("created", "created"))
REFRESH_SECONDS = 2.0
OVERLAY = 2  # how many runs the curve overlay compares


class RunsTable(DataTable):
    """The runs table; enter opens the highlighted run."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]


class RunsScreen(BertuiScreen):
    """The list of runs."""

    CSS_PATH = "runs.tcss"
    OPENED_BY = "show_runs"  # the app action that opens this screen (hidden here)
    TITLE = "Runs"
    BINDINGS = [
        Binding("space", "mark", "Mark for curves"),
        Binding("x", "cancel_run", "Cancel run"),
        Binding("r", "resume", "Resume"),
        Binding("d", "delete", "Delete"),
        Binding("f5", "reload", "Reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, Run] = {}
        self.marked: list[str] = []
        self._list_error = ""  # the last "cannot read the runs folder" said, said once

    @property
    def bertui(self) -> BertuiApp:
        return self.app  # type: ignore[return-value]

    def compose_body(self) -> ComposeResult:
        with Vertical(id="runs-body"):
            yield Static("", id="runs-empty")
            yield RunsTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="runs-hint")
            with Horizontal(id="overlay"):
                yield Chart(id="overlay-accuracy", classes="chart")
                yield Chart(id="overlay-loss", classes="chart")

    def on_mount(self) -> None:
        table = self.query_one(RunsTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.reload()
        self.set_interval(REFRESH_SECONDS, self.reload)
        self.app.theme_changed_signal.subscribe(self, lambda _t: self.reload(force=True))
        table.focus()

    # --- the table ----------------------------------------------------------------------------

    def reload(self, force: bool = False) -> None:
        """Re-read the runs folder; keep the cursor on the same run."""
        table = self.query_one(RunsTable)
        try:
            runs = list_runs(self.bertui.home)
        except RunError as exc:  # the runs folder went away or lost its permissions
            if str(exc) != self._list_error:
                self.notify(str(exc), title="Runs", severity="error")
            self._list_error = str(exc)
            return
        self._list_error = ""
        self.runs = {run.id: run for run in runs}
        self.marked = [m for m in self.marked if m in self.runs]
        current = self.highlighted
        rows = [(run.id, self._cells(run)) for run in runs]
        existing = [str(key.value) for key in table.rows]
        if existing == [key for key, _ in rows] and not force:
            for key, cells in rows:
                for (column, _), value in zip(COLUMNS, cells, strict=False):
                    if table.get_cell(key, column) != value:
                        table.update_cell(key, column, value)
        else:
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
            if current and current.id in self.runs:
                table.move_cursor(row=table.get_row_index(current.id))
        empty = self.query_one("#runs-empty", Static)
        empty.display = not runs
        empty.update(f"No runs yet under {self.bertui.runs_folder}. "
                     "Press ctrl+n to start one." if not runs else "")
        self._update_overlay()
        self.refresh_bindings()

    def _cells(self, run: Run) -> list[Any]:
        summary = run.summary()
        state = summary["status"]
        before, after = summary["accuracy_before"], summary["accuracy_after"]
        accuracy = "—" if after is None and before is None else \
            f"{percent(before)} → {percent(after)}"
        state_text = Text(state, style=state_style(self.app.theme_variables, state))
        mark = "✓ " if run.id in self.marked else "  "
        return [
            mark + one_line(summary["name"], 24),
            state_text,
            one_line(summary["model"] or "—", 24),
            one_line(summary["dataset"] or "—", 24),
            accuracy,
            duration(summary["duration_s"]),
            rate(summary["samples_per_s"], ""),
            short_timestamp(summary["created"]),
        ]

    @property
    def highlighted(self) -> Run | None:
        table = self.query_one(RunsTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return self.runs.get(str(key.value))

    @on(DataTable.RowHighlighted, "#runs-table")
    def _highlighted(self) -> None:
        self.refresh_bindings()

    @on(DataTable.RowSelected, "#runs-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        run = self.runs.get(str(event.row_key.value))
        if run is not None:
            self.bertui.open_run(run.path)

    # --- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        run = self.highlighted if self.is_mounted else None
        if action == "resume":
            return run is not None and run.state in RESUMABLE_STATES
        if action == "cancel_run":
            return run is not None and run.state in ACTIVE_STATES
        if action == "delete":
            return run is not None and run.state not in ACTIVE_STATES
        if action == "mark":
            return run is not None and run.state == "finished"
        return True

    def action_reload(self) -> None:
        self.reload()

    def action_mark(self) -> None:
        run = self.highlighted
        if run is None or run.state != "finished":
            return
        if run.id in self.marked:
            self.marked.remove(run.id)
        else:
            self.marked.append(run.id)
            self.marked = self.marked[-OVERLAY:]
        self.reload(force=True)

    def action_cancel_run(self) -> None:
        run = self.highlighted
        if run is not None and run.state in ACTIVE_STATES:
            self.bertui.cancel_run(run)

    def action_resume(self) -> None:
        run = self.highlighted
        if run is not None and run.state in RESUMABLE_STATES:
            self._resume(run)

    @work(thread=True, exclusive=True, group="resume", exit_on_error=False)
    def _resume(self, run: Run) -> None:
        try:
            from bertui.core.launch import resume_run

            resumed = resume_run(run)
        except Exception as exc:  # RunError, BadInput, a worker that cannot start
            self.app.call_from_thread(self.notify, str(exc), title="Cannot resume",
                                      severity="error")
            return
        self.app.call_from_thread(self.bertui.open_run, resumed.path)

    def action_delete(self) -> None:
        run = self.highlighted
        if run is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(run)

        self.app.push_screen(
            ConfirmModal(f"Delete run {run.name} ({run.id}) and its model? "
                         "This cannot be undone.", "Delete"), answered)

    @work(thread=True, group="delete", exit_on_error=False)
    def _delete(self, run: Run) -> None:
        """Off the UI thread: removing checkpoints takes a while, and a worker that has just
        recorded its end is given a few seconds to let go of the run."""
        try:
            delete_run(run)
        except (RunError, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Cannot delete",
                                      severity="error")
            return
        self.app.call_from_thread(self._deleted, run)

    def _deleted(self, run: Run) -> None:
        self.notify(f"deleted {run.name}")
        self.reload()

    # --- curve overlay ------------------------------------------------------------------------

    def _update_overlay(self) -> None:
        hint = self.query_one("#runs-hint", Static)
        overlay = self.query_one("#overlay")
        runs = [self.runs[m] for m in self.marked if m in self.runs]
        if len(runs) < OVERLAY:
            hint.update(f"Mark {OVERLAY} finished runs with space to overlay their eval curves "
                        f"({len(runs)} marked).")
            overlay.display = False
            return
        hint.update("Curves of " + " vs ".join(r.name for r in runs) + ".")
        overlay.display = True
        curves = [(run.name, run.events()) for run in runs]
        palette = ("chart-train", "chart-eval")

        def curve(event_type: str, field: str, title: str):
            def draw(plt, colors) -> None:
                for (name, events), color in zip(curves, palette, strict=False):
                    points = [(e.get("epoch"), e.get(field)) for e in events
                              if e.get("type") == event_type and e.get(field) is not None]
                    if points:
                        plt.plot([p[0] for p in points], [p[1] for p in points], label=name,
                                 color=colors(color), marker="braille")
                plt.title(title)

            return draw

        accuracy = curve("eval", "accuracy", "eval accuracy by epoch")
        loss = curve("train", "loss", "train loss by epoch")

        self.query_one("#overlay-accuracy", Chart).plot(accuracy)
        self.query_one("#overlay-loss", Chart).plot(loss)
