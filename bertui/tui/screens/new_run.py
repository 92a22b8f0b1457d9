"""New run: pick a model and a dataset, set the hyper-parameters, start a run.

The model and the dataset are checked in thread workers as they are typed (a short pause
first, so that typing does not start a check per key); each check ends in a message. Problems
show as one line under the field they are about, and Start stays disabled until all is valid.
Start builds the run's config (reads the data) in a worker, starts the detached worker process
and opens the Monitor.

**New study**: the "study" switch above Start turns the form into a study's (the same options
for every run, plus label budgets and a number of seeds, checked as they are typed with the
core's ``parse_budgets`` and ``seeds_of``); Start then makes the study (``study_config``, which
reads the data and checks the budgets against it, and ``start_study``) and opens its Study
screen.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message

# Select, Checkbox, Button and DataTable are imported where the deferred parts of the form are
# built: importing them costs start-up time before the first frame.
from textual.widgets import Input, Label, Static
from textual.worker import get_current_worker

from bertui.core.errors import BadInput
from bertui.core.schema import FIELD, FIELDS, Field, RunOptions, validate_options
from bertui.tui.format import count, one_line, size
from bertui.tui.screens.base import BertuiScreen, PaletteCommand
from bertui.tui.widgets.suggest import SpecSuggester, looks_like_path

if TYPE_CHECKING:
    from bertui.tui.app import BertuiApp

DEBOUNCE_SECONDS = 0.35
# The study fields' defaults: budgets that fit the demo dataset (360 train rows), so that a
# study of the defaults starts offline; the seeds are counted from the form's seed.
STUDY_BUDGETS = "32,128,all"
STUDY_SEEDS = "2"
STUDY_INPUTS = ("budgets", "seeds")
# Option fields whose errors show under another widget (those that share one, and the engine's
# names for parts of the data).
FIELD_ALIASES = {
    **{f.name: f.widget_id for f in FIELDS if f.widget and f.widget_id != f.name},
    "train": "dataset",
    "data": "dataset",
    "columns": "text_column",
}
# The inputs the model and the dataset checks read; the schema's checks read every other one.
OWN_CHECKS = ("model", "dataset", "split")
SCHEMA_INPUTS = {
    f.widget_id for f in FIELDS if f.widget and f.widget.kind == "input"
} - set(OWN_CHECKS)


def user_message(text: str) -> str:
    """An engine message as the form shows it: ``--batch-size`` reads "batch size"."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", " "), str(text))


def in_group(group: str) -> list[Field]:
    """The schema's fields that the form shows in one group, one per widget (the eval input
    stands for two fields)."""
    seen: set[str] = set()
    out = []
    for field in FIELDS:
        if field.widget and field.widget.group == group and field.widget_id not in seen:
            seen.add(field.widget_id)
            out.append(field)
    return out


def make_widget(field: Field, **extra: Any) -> Any:
    """A field's widget as its schema hint says, holding the field's default."""
    hint, widget_id = field.widget, field.widget_id
    assert hint is not None
    if hint.kind == "input":
        value = field.to_widget(field.default)
        return Input(value, id=widget_id, compact=True, placeholder=hint.placeholder, **extra)
    from textual.widgets import Checkbox, Select  # not before the first frame (start-up time)

    if hint.kind == "select":
        choices = [(c, c) for c in field.spec.choices]
        if field.optional:
            return Select(choices, id=widget_id, compact=True, prompt=hint.placeholder)
        return Select(choices, value=field.default, id=widget_id, compact=True,
                      allow_blank=False)
    if hint.kind == "checkboxes":
        from bertui.tui.widgets.name_choices import NameChoices

        return NameChoices(hint.boxes, field.to_widget(field.default), hint.tooltip,
                           id=widget_id)
    return Checkbox(hint.text, field.to_widget(field.default), id=widget_id, classes="toggle",
                    tooltip=hint.tooltip)


class Deferred(Vertical):
    """A part of the form built and mounted once the first frame is on the terminal (so the
    screen appears sooner); it tells the screen when its fields exist."""

    DEFAULT_CSS = "Deferred { height: auto; }"

    class Ready(Message):
        pass

    def __init__(self, build: Callable[[], ComposeResult], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._build = build

    def compose(self) -> ComposeResult:
        yield from self._build()

    def on_mount(self) -> None:
        self.post_message(self.Ready())


class NewRunScreen(BertuiScreen):
    """The form."""

    OPENED_BY = "new_run"  # the app action that opens this screen (hidden here)
    TITLE = "New run"
    # No focus in the first frame: the model field takes it on the refresh after (focusing it
    # before the first frame cost ~6 % of the start-up's CPU); from then on, "#model".
    AUTO_FOCUS = ""
    BINDINGS = [
        Binding("ctrl+s", "start", "Start run"),
    ]

    @dataclass
    class ModelChecked(Message):
        spec: str
        info: dict[str, Any] | None
        error: str | None

    @dataclass
    class DatasetChecked(Message):
        key: tuple[str, str, str, str]
        info: dict[str, Any] | None
        error: str | None
        field: str

    @dataclass
    class KnownModels(Message):
        models: list[dict[str, Any]]

    @dataclass
    class Started(Message):
        path: Any
        study: bool = False  # the path is a study's

    @dataclass
    class StartFailed(Message):
        error: str
        field: str | None

    def __init__(self) -> None:
        super().__init__()
        self.model_ok: bool | None = None  # None: being checked
        self.dataset_ok: bool | None = None
        self.form_errors: dict[str, str] = {}
        self._shown_errors: dict[str, str | None] = {}  # what each field's error line says
        self._start_error: tuple[str, str] | None = None  # (field, error) of a refused Start
        self.dataset_info: dict[str, Any] | None = None
        self._columns: dict[str, list[str]] = {}
        self.starting = False
        self.parts_pending: int | None = None  # Deferred parts still to mount (None: not asked)
        self._study_wanted = False  # switch the study on once the form exists
        self.model_suggester = SpecSuggester(["default"])
        self.dataset_suggester = SpecSuggester(["demo"], files=True)

    @property
    def bertui(self) -> BertuiApp:
        return self.app  # type: ignore[return-value]

    # --- layout -------------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        # Not focusable itself: focus goes straight to the model field (a focus change on the
        # scroll container restyles the whole form).
        with VerticalScroll(id="form", can_focus=False):
            with Horizontal(id="form-top"):
                with Vertical(id="model-section", classes="section"):
                    yield Static("Model", classes="section-title")
                    yield from self._schema_field(FIELD["model"],
                                                  suggester=self.model_suggester)
                    yield Static("", id="model-info", classes="info")
                    yield Static("known: default", id="model-known", classes="hint")
                with Vertical(id="data-section", classes="section"):
                    yield Static("Dataset", classes="section-title")
                    yield from self._schema_field(FIELD["dataset"],
                                                  suggester=self.dataset_suggester)

    def _start_area(self) -> ComposeResult:
        from textual.widgets import Button, Checkbox

        with Horizontal(id="start-row"):
            yield Button("Start run", id="start", variant="primary", disabled=True)
            yield Checkbox("a study (budgets × seeds)", False, id="study", classes="toggle",
                           tooltip="a study: one run per label budget and seed, the same "
                                   "options for each; the Study screen draws accuracy "
                                   "against labelled examples")
            yield Static("checking…", id="start-status")
        with Vertical(id="study-options"):
            yield from self._field("budgets", "budgets", Input(
                STUDY_BUDGETS, id="budgets", compact=True, placeholder="e.g. 32,128,512,all"),
                hint="labelled examples per run, or all")
            yield from self._field("seeds", "seeds", Input(STUDY_SEEDS, id="seeds",
                                                            compact=True),
                                   hint="runs per budget, seeds from the seed above on")
        yield Static("", id="start-error", classes="field-error")

    def _dataset_details(self) -> ComposeResult:
        for field in in_group("details"):
            yield from self._schema_field(field)
        yield Static("", id="dataset-info", classes="info")

    def _training(self) -> ComposeResult:
        yield Static("Training", classes="section-title")
        with Horizontal(id="train-columns"):
            for group in ("training", "training-2"):
                with Vertical(classes="train-column"):
                    for field in in_group(group):
                        yield from self._schema_field(field)
        # The speed-ups, each overridable (as the CLI's flags are), in two columns.
        speed_ups = in_group("speed-ups")
        half = (len(speed_ups) + 1) // 2
        with Horizontal(id="speed-columns"):
            for column in (speed_ups[:half], speed_ups[half:]):
                with Vertical(classes="train-column"):
                    for field in column:
                        yield from self._schema_field(field)

    def _schema_field(self, field: Field, **extra: Any) -> ComposeResult:
        assert field.widget is not None
        yield from self._field(field.widget_id, field.widget.label, make_widget(field, **extra),
                               hint=field.widget.hint)

    def _field(self, name: str, label: str, widget: Any, hint: str = "") -> ComposeResult:
        with Horizontal(classes="field", id=f"{name}-field"):
            yield Label(label, classes="field-label")
            yield widget
            if hint:
                yield Static(hint, classes="field-hint")
        yield Static("", id=f"{name}-error", classes="field-error")

    def on_mount(self) -> None:
        self.query_one("#model", Input).cursor_position = len("default")
        self.bertui.after_first_frame(self._mount_deferred)

    def _mount_deferred(self) -> None:
        if not self.is_attached:  # the user left before the first frame was shown
            return
        self.AUTO_FOCUS = "#model"  # what a resumed screen focuses when nothing has the focus
        if self.focused is None:
            self.query_one("#model", Input).focus(scroll_visible=False)
        # The form's parts after the first frame: the dataset's details, training, Start.
        details = Deferred(self._dataset_details, id="data-details")
        rest = (Deferred(self._training, id="train-section", classes="section"),
                Deferred(self._start_area, id="start-area"))
        self.parts_pending = 1 + len(rest)
        self.query_one("#data-section").mount(details)
        self.query_one("#form").mount(*rest)

    @on(Deferred.Ready)
    def _part_ready(self) -> None:
        if self.parts_pending:
            self.parts_pending -= 1
        if self.ready:
            # The whole form exists: the checks start (after the first frame; they import
            # heavy libraries in their threads).
            from textual.widgets import DataTable

            preview = DataTable(id="preview", cursor_type="none", show_cursor=False)
            self.query_one("#data-details").mount(preview, after="#dataset-info")
            self._check_model(self.query_one("#model", Input).value, debounce=False)
            self._check_dataset(debounce=False)
            self._list_models()
            self._check_form()
            if self._study_wanted:
                self.want_study()

    @property
    def ready(self) -> bool:
        """The whole form exists."""
        return self.parts_pending == 0

    # --- model --------------------------------------------------------------------------------

    @on(Input.Changed, "#model")
    def _model_changed(self, event: Input.Changed) -> None:
        if self.ready:  # else the first check, once the form exists, reads the value
            self._check_model(event.value)

    def _check_model(self, spec: str, debounce: bool = True) -> None:
        self.model_ok = None
        self._set_error("model", None)
        self.query_one("#model-info", Static).update("checking the model…")
        self._update_start()
        self._model_worker(spec.strip(), debounce)

    @work(thread=True, exclusive=True, group="model", exit_on_error=False)
    def _model_worker(self, spec: str, debounce: bool) -> None:
        worker = get_current_worker()
        if debounce:
            time.sleep(DEBOUNCE_SECONDS)
        if worker.is_cancelled:
            return
        try:
            from bertui.core.models import model_info, resolve_model

            info = model_info(resolve_model(spec, download=False))
            error = None
        except Exception as exc:  # BadInput; anything else is reported the same way
            info, error = None, one_line(str(exc) or type(exc).__name__)
        if not worker.is_cancelled:
            self.post_message(self.ModelChecked(spec, info, error))

    def on_new_run_screen_model_checked(self, message: ModelChecked) -> None:
        if message.spec != self.query_one("#model", Input).value.strip():
            return  # an answer about what was typed before
        self.model_ok = message.error is None
        self._set_error("model", message.error)
        panel = self.query_one("#model-info", Static)
        if message.info is None:
            panel.update("")
        else:
            info = message.info
            details = [str(info.get("model_type") or "?")]
            if info.get("layers"):
                details.append(f"{info['layers']} layers")
            if info.get("hidden_size"):
                details.append(f"hidden {info['hidden_size']}")
            if info.get("parameters"):
                details.append(f"{count(info['parameters'])} parameters")
            if info.get("size_bytes"):
                details.append(size(info["size_bytes"]))
            panel.update(" · ".join(details) + f"\nfrom: {info.get('origin', '?')}")
        self._update_start()

    @work(thread=True, exclusive=True, group="known-models", exit_on_error=False)
    def _list_models(self) -> None:
        try:
            from bertui.core.models import list_cached_models

            models = list_cached_models()
        except Exception:
            models = []
        self.post_message(self.KnownModels(models))

    def on_new_run_screen_known_models(self, message: KnownModels) -> None:
        names = ["default"] + [m["spec"] for m in message.models if m.get("spec")]
        self.model_suggester.names = names
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        self.query_one("#model-known", Static).update(
            f"known: {shown} (→ accepts a suggestion)")

    # --- dataset ------------------------------------------------------------------------------

    def _select(self, name: str) -> str | None:
        """A Select's value, None when nothing is chosen."""
        from textual.widgets import Select

        value = self.query_one(f"#{name}", Select).value
        return None if value is Select.NULL else str(value)

    def _dataset_key(self) -> tuple[str, str, str, str]:
        return (self.query_one("#dataset", Input).value.strip(),
                self.query_one("#split", Input).value.strip(),
                self._select("text_column") or "", self._select("label_column") or "")

    @on(Input.Changed, "#dataset")
    @on(Input.Changed, "#split")
    def _dataset_changed(self, event: Input.Changed) -> None:
        if not self.ready:
            return
        # a new source: forget the chosen columns, infer them again
        self.dataset_info = None
        self._check_dataset(columns=False)

    def on_checkbox_changed(self, event: Any) -> None:  # Checkbox.Changed
        self._clear_start_error()
        if event.checkbox.id == "study":
            options = self.query_one("#study-options")
            options.display = bool(event.value)
            self.query_one("#start").label = "Start study" if event.value else "Start run"
            self._check_form()
            if event.value:  # the study's fields into view (once laid out)
                self.set_timer(0.05, lambda: options.scroll_visible(animate=False))

    def want_study(self) -> None:
        """Switch the study on and go to its budgets (once the form exists)."""
        self._study_wanted = not self.ready
        if self.ready:
            self.query_one("#study").value = True
            self.call_after_refresh(self.query_one("#budgets", Input).focus, scroll_visible=False)

    @property
    def study_mode(self) -> bool:
        """The study switch is on (and the form has it)."""
        found = self.query("#study")
        return bool(found and found.first().value)

    def study_grid(self) -> tuple[list[Any], list[int]]:
        """The budgets and seeds the study fields say; BadInput (one line, with ``.field``)
        for a bad one. The seeds count from the form's seed."""
        from bertui.core.study import check_budgets, parse_budgets, seeds_of

        budgets = parse_budgets(self.query_one("#budgets", Input).value)
        counts = (self.dataset_info or {}).get("label_counts") or {}
        if counts:  # the number of classes is known: a budget too small for it is said now
            check_budgets(budgets, 10**12, len(counts))
        text = self.query_one("#seeds", Input).value.strip()
        try:
            count = int(text.replace("_", ""))
        except ValueError:
            raise BadInput(f"--seeds must be a whole number ≥ 1 (got '{text}')",
                           field="seeds") from None
        first = self.options().seed
        return budgets, seeds_of(count, first)

    def on_select_changed(self, event: Any) -> None:  # Select.Changed
        self._clear_start_error()
        if event.select.id == "precision":
            self._check_form()
        elif event.select.id in ("text_column", "label_column"):
            self._columns_changed(event)

    def _columns_changed(self, event: Any) -> None:
        info = self.dataset_info
        if info is None or self._select(event.select.id) is None:
            return
        if info.get(event.select.id) == event.value:
            return  # the value the last check filled in
        self._check_dataset()

    def _check_dataset(self, debounce: bool = True, columns: bool = True) -> None:
        self.dataset_ok = None
        for name in ("dataset", "split", "text_column", "label_column"):
            self._set_error(name, None)
        self.query_one("#dataset-info", Static).update("reading the dataset…")
        self._update_start()
        key = self._dataset_key()
        if not columns:
            key = (key[0], key[1], "", "")
        self._dataset_worker(key, debounce)

    @work(thread=True, exclusive=True, group="dataset", exit_on_error=False)
    def _dataset_worker(self, key: tuple[str, str, str, str], debounce: bool) -> None:
        worker = get_current_worker()
        if debounce:
            time.sleep(DEBOUNCE_SECONDS)
        if worker.is_cancelled:
            return
        spec, split, text_column, label_column = key
        field = "dataset"
        try:
            from bertui.core.data import inspect

            info = inspect(spec, split=split or None, rows=6, text_column=text_column or None,
                           label_column=label_column or None)
            error = None
        except Exception as exc:
            info, error = None, one_line(str(exc) or type(exc).__name__)
            field = FIELD_ALIASES.get(getattr(exc, "field", None) or "dataset",
                                      getattr(exc, "field", None) or "dataset")
        if not worker.is_cancelled:
            self.post_message(self.DatasetChecked(key, info, error, field))

    def on_new_run_screen_dataset_checked(self, message: DatasetChecked) -> None:
        current = self._dataset_key()
        if message.key[:2] != current[:2]:
            return
        self.dataset_ok = message.error is None
        if message.error:
            self._set_error(message.field if message.field in self._fields() else "dataset",
                            message.error)
            self.query_one("#dataset-info", Static).update("")
            self._update_start()
            return
        info = message.info or {}
        self.dataset_info = info
        columns = [str(c) for c in info.get("columns") or []]
        for name in ("text_column", "label_column"):
            select = self.query_one(f"#{name}")
            if self._columns.get(name) != columns:
                self._columns[name] = columns
                select.set_options([(c, c) for c in columns])
            if info.get(name) in columns and select.value != info[name]:
                select.value = info[name]
        self._show_dataset_info(info, message.key[0])
        table = self.query_one("#preview")
        table.clear(columns=True)
        shown = [c for c in (info.get("text_column"), info.get("label_column")) if c]
        shown += [c for c in columns if c not in shown][:2]
        for column in shown:
            table.add_column(column, key=column)
        for row in info.get("preview") or []:
            table.add_row(*(one_line(str(row.get(c, "")), 44) for c in shown))
        if self.study_mode:  # the number of classes is known now: the budgets are checked
            self._check_form()
        self._update_start()

    def _show_dataset_info(self, info: dict[str, Any], spec: str) -> None:
        counts = info.get("label_counts") or {}
        biggest = max(counts.values(), default=1) or 1
        balance = "  ".join(f"{label} {n} {'▇' * max(1, round(6 * n / biggest))}"
                            for label, n in list(counts.items())[:8])
        if len(counts) > 8:
            balance += f"  … {len(counts) - 8} more labels"
        source = "the bundled demo dataset" if spec == "demo" else info.get("source", spec)
        self.query_one("#dataset-info", Static).update(
            f"{info.get('rows', '?')} rows from {source}\n"
            f"labels: {balance}\n{self._eval_source()}")

    def _eval_source(self) -> str:
        eval_value = self.query_one("#eval", Input).value.strip()
        dataset = self.query_one("#dataset", Input).value.strip()
        if eval_value:
            kind = "file" if self._is_file_spec(eval_value) else "split"
            return f"eval: {kind} {eval_value}"
        if dataset == "demo":
            return "eval: the demo's own test set (100 rows)"
        holdout = self.query_one("#holdout", Input).value.strip() or "0.2"
        try:
            share = f"{float(holdout.rstrip('%')) / (100 if holdout.endswith('%') else 1):.0%}"
        except ValueError:
            share = holdout
        return f"eval: a validation or test split if there is one, else {share} held out"

    @staticmethod
    def _is_file_spec(value: str) -> bool:
        from bertui.core.data import FILE_KINDS

        return looks_like_path(value) or value.lower().endswith(tuple(FILE_KINDS))

    # --- hyper-parameters ---------------------------------------------------------------------

    def _fields(self) -> set[str]:
        return {w.id[: -len("-error")] for w in self.query(".field-error") if w.id}

    @on(Input.Changed)
    def _any_input(self, event: Input.Changed) -> None:
        self._clear_start_error()
        if event.input.id in SCHEMA_INPUTS or event.input.id in STUDY_INPUTS:
            self._check_form()
            # the info's eval line follows; a failed or running dataset check is left alone
            if event.input.id in ("eval", "holdout") and self.dataset_ok and self.dataset_info:
                self._show_dataset_info(self.dataset_info, self._dataset_key()[0])

    def options(self) -> RunOptions:
        """The form as RunOptions: each field from its widget (a CLI-only one at its default);
        the eval input is a file or else a split. Raises BadInput (a FieldError, with
        ``.field``) for a text that does not parse."""
        from textual.widgets import Select

        values = {}
        for field in FIELDS:
            widget: Any = self.query_one(f"#{field.widget_id}") if field.widget else None
            raw = None if widget is None or widget.value is Select.NULL else widget.value
            values[field.name] = field.from_widget(raw)
        eval_value = values["eval_dataset"]
        eval_is_file = eval_value is not None and self._is_file_spec(eval_value)
        values["eval_dataset"] = eval_value if eval_is_file else None
        values["eval_split"] = None if eval_is_file else eval_value
        return RunOptions(**values)

    def _check_form(self) -> None:
        """The cheap checks (parse the numbers, ``validate_options``), run on every change."""
        if not self.ready:
            return
        for name in list(self.form_errors):
            self._set_error(name, None)
        self.form_errors = {}
        try:
            validate_options(self.options())
            if self.study_mode:
                self.study_grid()
        except Exception as exc:
            field = getattr(exc, "field", None) or "start"
            field = FIELD_ALIASES.get(field, field)
            self.form_errors[field] = user_message(one_line(str(exc)))
            self._set_error(field, self.form_errors[field])
        self._update_start()

    # --- errors and the Start button ----------------------------------------------------------

    def _clear_start_error(self) -> None:
        """What Start was refused for goes at the next change of the form (Start asks again);
        unless a check has put its own error on that field meanwhile."""
        if self._start_error is None:
            return
        field, error = self._start_error
        self._start_error = None
        if self._shown_errors.get(field) == error:
            self._set_error(field, None)

    def _set_error(self, field: str, error: str | None) -> None:
        self._shown_errors[field] = error
        widgets = self.query(f"#{field}-error")
        if not widgets:
            field = "start"
            widgets = self.query("#start-error")
        widget = widgets.first(Static)
        widget.update(f"✗ {error}" if error else "")
        widget.display = bool(error)
        self.query(f"#{field}-field").set_class(bool(error), "-invalid")

    @property
    def valid(self) -> bool:
        return bool(self.ready and self.model_ok and self.dataset_ok and not self.form_errors)

    def _update_start(self) -> None:
        if not self.ready:
            return
        button = self.query_one("#start")
        status = self.query_one("#start-status", Static)
        button.disabled = self.starting or not self.valid
        what = "study" if self.study_mode else "run"
        if self.starting:
            status.update(f"starting the {what} (reading the data)…")
        elif self.model_ok is None or self.dataset_ok is None:
            status.update("checking…")
        elif not self.valid:
            problems = (not self.model_ok) + (not self.dataset_ok) + len(self.form_errors)
            where = "below" if problems == len(set(self.form_errors) & set(STUDY_INPUTS)) \
                else "above"
            status.update(f"{problems} problem{'s' if problems > 1 else ''} to fix {where}")
        else:
            status.update("ready: Start (ctrl+s) begins the study in the background"
                          if self.study_mode else
                          "ready: Start (ctrl+s) begins training in the background")
        can_start = not button.disabled
        if can_start != getattr(self, "_can_start", None):
            # Only when ctrl+s comes or goes: each refresh recomposes the footer (costly
            # while the form's checks settle at start-up).
            self._can_start = can_start
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":
            return None if not self.is_mounted or not self.valid or self.starting else True
        return True

    # --- start --------------------------------------------------------------------------------

    def on_button_pressed(self, event: Any) -> None:  # Button.Pressed
        if event.button.id == "start":
            self.action_start()

    def action_start(self) -> None:
        if self.starting or not self.valid:
            return
        try:
            options = self.options()
            grid = self.study_grid() if self.study_mode else None
        except BadInput as exc:
            field = exc.field or "start"
            self._set_error(FIELD_ALIASES.get(field, field), user_message(str(exc)))
            return
        self.starting = True
        self._update_start()
        self._start_worker(options, grid)

    @work(thread=True, exclusive=True, group="start", exit_on_error=False)
    def _start_worker(self, options: Any, grid: tuple[list[Any], list[int]] | None) -> None:
        try:
            if grid is not None:
                from bertui.core.studies import start_study, study_config

                study = start_study(study_config(options, *grid), self.bertui.home)
                self.post_message(self.Started(study.path, study=True))
                return
            from bertui.core.launch import build_config, start_run

            run = start_run(build_config(options), self.bertui.home)
        except Exception as exc:
            self.post_message(self.StartFailed(user_message(one_line(str(exc) or
                                                                     type(exc).__name__)),
                                               getattr(exc, "field", None)))
            return
        self.post_message(self.Started(run.path))

    def on_new_run_screen_started(self, message: Started) -> None:
        self.starting = False
        if message.study:
            self.bertui.open_study(message.path)
        else:
            self.bertui.open_run(message.path, view="monitor")

    def on_new_run_screen_start_failed(self, message: StartFailed) -> None:
        self.starting = False
        field = FIELD_ALIASES.get(message.field or "", message.field or "start")
        self._set_error(field, message.error)
        self._start_error = (field, message.error)
        self._update_start()
        what = "study" if self.study_mode else "run"
        self.notify(message.error, title=f"Cannot start the {what}", severity="error")

    def action_defaults(self) -> None:
        """Put every field back to its default (the columns back to inferred: the dataset is
        read again to fill them in)."""
        from textual.widgets import Select

        for field in FIELDS:
            if field.widget:
                value = field.to_widget(field.default)
                widget: Any = self.query_one(f"#{field.widget_id}")
                widget.value = Select.NULL if value is None else value
        if self.ready:
            self._check_dataset(columns=False)

    def palette_commands(self) -> list[PaletteCommand]:
        return [("Start the run", "Start training with this form", self.action_start),
                ("Reset the form", "Every field back to its default", self.action_defaults)]
