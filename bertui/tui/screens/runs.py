"""Runs: every run under the bertui home (also those started by ``bertui train``) in a table;
open, resume, delete, and mark two finished runs to overlay their eval curves. A study is a
row of its own with its runs indented under it; enter on it opens its Study screen, and
cancel, resume and delete act on the whole study.

The table is re-read every few seconds in a thread worker (listing the folder, reading each
run's files, asking psutil whether its worker lives), one read at a time, and the result comes
back as a message: a filesystem that stalls leaves the screen answering its keys. The overlay
keeps an event reader per marked run, so each refresh reads only what its log gained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from bertui.core.events import EventReader
from bertui.core.launch import delete_run
from bertui.core.runs import ACTIVE_STATES, RESUMABLE_STATES, Run, RunError, list_runs
from bertui.core.studies import ID_PREFIX, Study, list_studies
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
CURVES = {("eval", "accuracy"): "eval accuracy by epoch", ("train", "loss"): "train loss by epoch"}

Summary = dict[str, Any]  # Run.summary(): one row of the table


class OverlayCurves:
    """One marked run's curves by epoch, fed with the events its log gains (``reader``, read
    in the thread; ``add``, on the UI thread)."""

    def __init__(self, run: Run) -> None:
        self.name = run.name
        self.reader = EventReader(run.events_path)
        self.points: dict[tuple[str, str], list[tuple[Any, Any]]] = {key: [] for key in CURVES}
        self.loaded = False  # read at least once

    def add(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            for (kind, key), points in self.points.items():
                if event.get("type") == kind and event.get(key) is not None:
                    points.append((event.get("epoch"), event[key]))
        self.loaded = True


@dataclass
class RunsReading:
    """One look at the runs folder: each run with its summary, or why the folder could not be
    listed (``rows`` is None); and the events the overlaid runs' logs gained."""

    rows: list[tuple[Run, Summary]] | None
    error: str = ""
    curves: list[tuple[OverlayCurves, list[dict[str, Any]]]] = field(default_factory=list)
    studies: list[tuple[Study, Summary]] = field(default_factory=list)


def read_runs(home: Path | None, overlay: list[OverlayCurves]) -> RunsReading:
    """The files behind the table (blocking I/O and psutil: run it off the UI thread)."""
    try:
        runs = list_runs(home)
    except RunError as exc:  # the runs folder went away or lost its permissions
        return RunsReading(None, str(exc))
    try:
        studies = [(study, study.summary()) for study in list_studies(home)]
    except OSError:
        studies = []
    return RunsReading([(run, run.summary()) for run in runs], "",
                       [(curves, curves.reader.read_new()) for curves in overlay], studies)


def study_of_run(run: Run) -> str | None:
    tag = run.config.get("study")
    return str(tag.get("id")) if isinstance(tag, dict) and tag.get("id") else None


def table_order(run_ids: list[str], runs: dict[str, Run], study_ids: list[str]) -> list[str]:
    """The table's rows, newest first: each study followed by its runs (in their order),
    the runs of no (listed) study on their own."""
    members: dict[str, list[str]] = {sid: [] for sid in study_ids}
    alone = []
    for run_id in run_ids:
        sid = study_of_run(runs[run_id])
        if sid in members:
            members[sid].append(run_id)
        else:
            alone.append(run_id)
    tops = sorted([*study_ids, *alone], key=lambda key: key.removeprefix(ID_PREFIX),
                  reverse=True)
    out = []
    for key in tops:
        out.append(key)
        out.extend(sorted(members.get(key, [])))
    return out


class RunsTable(DataTable):
    """The runs table; enter opens the highlighted run."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]


class RunsScreen(BertuiScreen):
    """The list of runs."""

    CSS_PATH = "runs.tcss"
    OPENED_BY = "show_runs"  # the app action that opens this screen (hidden here)
    TITLE = "Runs"

    @dataclass
    class Read(Message):
        """A look at the runs folder, from the reading thread."""

        reading: RunsReading

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
        self.summaries: dict[str, Summary] = {}
        self.studies: dict[str, Study] = {}
        self.study_summaries: dict[str, Summary] = {}
        self.marked: list[str] = []
        self.curves: dict[str, OverlayCurves] = {}  # the marked runs'
        self.reads = 0  # looks at the runs folder shown so far (tests read it)
        self._reading = False  # a read is in flight
        self._read_again = False  # and another was asked for meanwhile
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
        self._apply(read_runs(self.bertui.home, []))  # the first look, before the first frame
        self.set_interval(REFRESH_SECONDS, self.reload)
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._show(force=True))
        table.focus()

    # --- the table ----------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the runs folder (in a thread; after the read in flight, if there is one)."""
        if self._reading:
            self._read_again = True
            return
        self._reading = True
        self._read(self.bertui.home, list(self.curves.values()))

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs-read")
    def _read(self, home: Path | None, overlay: list[OverlayCurves]) -> None:
        try:
            reading = read_runs(home, overlay)
        except Exception as exc:  # anything else unreadable: said like a folder that is
            reading = RunsReading(None, f"cannot read the runs: {exc}")
        self.post_message(self.Read(reading))

    def on_runs_screen_read(self, message: Read) -> None:
        self._reading = False
        self._apply(message.reading)
        if self._read_again:
            self._read_again = False
            self.reload()

    def _apply(self, reading: RunsReading) -> None:
        self.reads += 1
        if reading.rows is None:
            if reading.error != self._list_error:
                self.notify(reading.error, title="Runs", severity="error")
            self._list_error = reading.error
            return
        self._list_error = ""
        for curves, events in reading.curves:
            curves.add(events)
        self.runs = {run.id: run for run, _ in reading.rows}
        self.summaries = {run.id: summary for run, summary in reading.rows}
        self.studies = {study.id: study for study, _ in reading.studies}
        self.study_summaries = {study.id: summary for study, summary in reading.studies}
        self.marked = [m for m in self.marked if m in self.runs]
        self._show()

    def _show(self, force: bool = False) -> None:
        """Show the runs last read; keep the cursor on the same run."""
        table = self.query_one(RunsTable)
        current = self._highlighted_key()
        order = table_order(list(self.runs), self.runs, list(self.studies))
        rows = [(key, self._study_cells(key) if key in self.studies else self._cells(key))
                for key in order]
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
            if current and current in order:
                table.move_cursor(row=table.get_row_index(current))
        empty = self.query_one("#runs-empty", Static)
        empty.display = not rows
        empty.update(f"No runs yet under {self.bertui.runs_folder}. "
                     "Press ctrl+n to start one." if not rows else "")
        self._update_overlay()
        self.refresh_bindings()

    def _cells(self, run_id: str) -> list[Any]:
        summary = self.summaries[run_id]
        state = summary["status"]
        before, after = summary["accuracy_before"], summary["accuracy_after"]
        accuracy = "—" if after is None and before is None else \
            f"{percent(before)} → {percent(after)}"
        state_text = Text(state, style=state_style(self.app.theme_variables, state))
        mark = "✓ " if run_id in self.marked else "  "
        if study_of_run(self.runs[run_id]) in self.studies:
            mark += "└ "
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

    def _study_cells(self, study_id: str) -> list[Any]:
        summary = self.study_summaries[study_id]
        state = summary["status"]
        state_text = Text(state, style=state_style(self.app.theme_variables, state))
        status = self.studies[study_id].status
        started = status.get("started") or status.get("created")
        took = None
        if started:
            end = status.get("ended") or status.get("heartbeat") or started
            took = float(end) - float(started)
        return [
            "▾ " + one_line(f"study {summary['name']}", 24),
            state_text,
            one_line(summary["model"] or "—", 24),
            one_line(summary["dataset"] or "—", 24),
            f"{summary['runs_finished']}/{summary['runs_total']} runs",
            duration(took),
            "",
            short_timestamp(summary["created"]),
        ]

    def _highlighted_key(self) -> str | None:
        table = self.query_one(RunsTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return str(key.value)

    @property
    def highlighted(self) -> Run | None:
        key = self._highlighted_key()
        return None if key is None else self.runs.get(key)

    @property
    def highlighted_study(self) -> Study | None:
        key = self._highlighted_key()
        return None if key is None else self.studies.get(key)

    @on(DataTable.RowHighlighted, "#runs-table")
    def _highlighted(self) -> None:
        self.refresh_bindings()

    @on(DataTable.RowSelected, "#runs-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        key = str(event.row_key.value)
        if key in self.studies:
            self.bertui.open_study(self.studies[key].path)
            return
        run = self.runs.get(key)
        if run is not None:
            self.bertui.open_run(run.path)

    # --- actions ------------------------------------------------------------------------------

    def state_of(self, run: Run | None) -> str | None:
        """The state the table shows for ``run`` (as of the last read)."""
        return None if run is None else self.summaries.get(run.id, {}).get("status")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        run = self.highlighted if self.is_mounted else None
        state = self.state_of(run)
        study = self.highlighted_study if self.is_mounted else None
        if study is not None:
            state = self.study_summaries.get(study.id, {}).get("status")
            if action == "mark":
                return False
        if action == "resume":
            return state in RESUMABLE_STATES
        if action == "cancel_run":
            return state in ACTIVE_STATES
        if action == "delete":
            return state is not None and state not in ACTIVE_STATES
        if action == "mark":
            return state == "finished"
        return True

    def action_reload(self) -> None:
        self.reload()

    def action_mark(self) -> None:
        run = self.highlighted
        if run is None or self.state_of(run) != "finished":
            return
        if run.id in self.marked:
            self.marked.remove(run.id)
        else:
            self.marked.append(run.id)
            self.marked = self.marked[-OVERLAY:]
        self._show(force=True)
        if any(not curves.loaded for curves in self.curves.values()):
            self.reload()

    def action_cancel_run(self) -> None:
        study = self.highlighted_study
        if study is not None:
            self._ask_study(study, "cancel")
            return
        run = self.highlighted
        if run is not None and self.state_of(run) in ACTIVE_STATES:
            self.bertui.cancel_run(run)

    def action_resume(self) -> None:
        study = self.highlighted_study
        if study is not None:
            self._study_action(study, "resume")
            return
        run = self.highlighted
        if run is not None and self.state_of(run) in RESUMABLE_STATES:
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
        study = self.highlighted_study
        if study is not None:
            self._ask_study(study, "delete")
            return
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

    # --- studies ------------------------------------------------------------------------------

    def _ask_study(self, study: Study, what: str) -> None:
        question = {
            "cancel": f"Cancel study {study.name}? The run going now keeps its checkpoint, so "
                      "the study can be resumed.",
            "delete": f"Delete study {study.name} ({study.id}) and all its runs? This cannot "
                      "be undone.",
        }[what]

        def answered(yes: bool | None) -> None:
            if yes:
                self._study_action(study, what)

        self.app.push_screen(ConfirmModal(question, f"{what.capitalize()} study"), answered)

    @work(thread=True, group="study-action", exit_on_error=False)
    def _study_action(self, study: Study, what: str) -> None:
        from bertui.core.studies import cancel_study, delete_study, resume_study

        try:
            if what == "cancel":
                cancel_study(study)
            elif what == "resume":
                resume_study(study)
            else:
                delete_study(study)
        except (RunError, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), title=f"Cannot {what} the study",
                                      severity="error")
            return
        done = {"cancel": "cancelling", "resume": "resumed", "delete": "deleted"}[what]
        self.app.call_from_thread(self.notify, f"{done} study {study.name}")
        self.app.call_from_thread(self.reload)

    # --- curve overlay ------------------------------------------------------------------------

    def _update_overlay(self) -> None:
        hint = self.query_one("#runs-hint", Static)
        overlay = self.query_one("#overlay")
        self.curves = {m: self.curves.get(m) or OverlayCurves(self.runs[m]) for m in self.marked}
        marked = list(self.curves.values())
        if len(marked) < OVERLAY:
            hint.update(f"Mark {OVERLAY} finished runs with space to overlay their eval curves "
                        f"({len(marked)} marked).")
            overlay.display = False
            return
        hint.update("Curves of " + " vs ".join(c.name for c in marked) + ".")
        overlay.display = all(c.loaded for c in marked)  # else once their logs are read
        palette = ("chart-train", "chart-eval")

        def curve(series: tuple[str, str]):
            lines = [(c.name, list(c.points[series])) for c in marked]

            def draw(plt, colors) -> None:
                for (name, points), color in zip(lines, palette, strict=False):
                    if points:
                        plt.plot([p[0] for p in points], [p[1] for p in points], label=name,
                                 color=colors(color), marker="braille")
                plt.title(CURVES[series])

            return draw

        self.query_one("#overlay-accuracy", Chart).plot(curve(("eval", "accuracy")))
        self.query_one("#overlay-loss", Chart).plot(curve(("train", "loss")))
