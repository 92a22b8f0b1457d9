"""The bertui application: builds the App (``make_app``), holds the navigation between the
screens (New run, Monitor, Compare, Runs, Study; the New run form is kept while other screens are
looked at), loads the themes and remembers the chosen one.

Start-up imports only Textual and bertui's light modules (no torch, no transformers): the
first screen is drawn before any model or dataset is read.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen

from bertui.core.runs import Run, RunError, find_run, list_runs, runs_dir
from bertui.tui.commands import ActionsProvider, ThemesProvider
from bertui.tui.settings import Settings, config_dir
from bertui.tui.themes import DEFAULT_THEME, builtin_themes, user_themes

NEW_RUN_SCREEN = "new-run"  # the name the New run form is installed under


class BertuiApp(App):
    """See the module docstring. Build it with :func:`make_app`."""

    TITLE = "bertui"
    CSS_PATH = "bertui.tcss"
    COMMANDS = App.COMMANDS | {ActionsProvider, ThemesProvider}
    BINDINGS = [
        Binding("ctrl+n", "new_run", "New run", priority=True),
        Binding("ctrl+r", "show_runs", "Runs", priority=True),
        Binding("ctrl+t", "change_theme", "Theme"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, *, home: Path | None = None, show_run: str | None = None,
                 config_path: Path | None = None,
                 predictor_factory: Callable[[Path], Any] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.home = Path(home) if home is not None else None
        self.show_run = show_run
        self.config_path = Path(config_path) if config_path is not None else config_dir()
        self.settings = Settings(self.config_path)
        self.predictor_factory = predictor_factory
        self.clock = clock
        self.theme_problems: list[str] = []
        self._themes_ready = False
        self._first_frame_shown = False
        self._after_first_frame: list[Callable[[], object]] = []
        self._register_themes()

    @property
    def runs_folder(self) -> Path:
        return runs_dir(self.home)

    # --- themes -------------------------------------------------------------------------------

    def _register_themes(self) -> None:
        for theme in builtin_themes():
            self.register_theme(theme)
        themes, problems = user_themes(self.config_path)
        for theme in themes:
            self.register_theme(theme)
        self.theme_problems = problems
        wanted = self.settings.theme or DEFAULT_THEME
        if wanted not in self.available_themes:
            self.theme_problems.append(f"theme '{wanted}' is not available; using {DEFAULT_THEME}")
            wanted = DEFAULT_THEME
        self._set_first_theme(wanted)
        self._themes_ready = True

    def _set_first_theme(self, name: str) -> None:
        """The theme to start with, set before any CSS is parsed: what Textual's theme watcher
        does, without the full re-parse of every stylesheet it schedules (start-up time)."""
        self.set_reactive(App.theme, name)
        theme = self.current_theme
        self.update_classes({f"-theme-{name}": True, "-dark-mode": theme.dark,
                             "-light-mode": not theme.dark}, update=False)
        self._refresh_truecolor_filter(self.ansi_theme)
        self.stylesheet.set_variables(self.get_css_variables())

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # Our own theme variables, for themes that do not set them (Textual's built-ins).
        return {"chart-train": "#5fa8ff", "chart-eval": "#ffb454",
                "model-pretrained": "#8b95a5", "model-probe": "#b48cff",
                "model-finetuned": "#7fd88f"}

    def watch_theme(self, name: str) -> None:
        if self._themes_ready and name != self.settings.theme:
            problem = self.settings.set_theme(name)
            if problem:
                self.notify(problem, severity="warning")

    # --- start-up -----------------------------------------------------------------------------

    def on_mount(self) -> None:
        for problem in self.theme_problems:
            self.notify(problem, title="Theme", severity="warning", timeout=8)
        if self.show_run and self._show_study(self.show_run):
            return
        if self.show_run:
            try:
                run = find_run(self.show_run, self.home)
            except RunError as exc:
                self.notify(str(exc), title="No such run", severity="error")
                self.action_show_runs()
                return
            self.open_run(run.path)
            return
        try:
            active = any(run.is_active for run in list_runs(self.home))
        except RunError as exc:
            self.notify(str(exc), title="Runs", severity="error")
            active = False
        if active:
            self.action_show_runs()
        else:
            self.action_new_run()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The key that opens the screen already shown is left out of the footer.
        return action != getattr(self.screen, "OPENED_BY", None)

    def on_ready(self) -> None:
        # Textual's Ready comes with the first layout; the frame reaches the terminal on the
        # refresh after it.
        self.call_after_refresh(self._first_frame)

    def _first_frame(self) -> None:
        self._first_frame_shown = True
        if not gc.isenabled():
            # The CLI starts the app with garbage collection off (start-up time). What
            # start-up built lives as long as the app: later collections leave it out.
            gc.freeze()
            gc.enable()
        callbacks, self._after_first_frame = self._after_first_frame, []
        for callback in callbacks:
            self.call_later(callback)

    def after_first_frame(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once the first frame is on the terminal (soon, if it is already):
        work that can wait a few milliseconds does not delay the first screen."""
        if self._first_frame_shown:
            self.call_later(callback)
        else:
            self._after_first_frame.append(callback)

    # --- actions on runs ----------------------------------------------------------------------

    def cancel_run(self, run: Run) -> None:
        """Ask, then cancel ``run`` (its worker saves a checkpoint before it stops)."""
        from bertui.tui.screens.confirm import ConfirmModal

        def answered(yes: bool | None) -> None:
            if yes:
                self._cancel(run)

        self.push_screen(
            ConfirmModal(f"Cancel run {run.name}? Its last checkpoint is kept, "
                         "so it can be resumed.", "Cancel run"), answered)

    @work(thread=True, group="cancel", exit_on_error=False)
    def _cancel(self, run: Run) -> None:
        try:
            from bertui.core.launch import cancel_run

            cancel_run(run)
        except Exception as exc:  # RunError: it ended meanwhile, a worker we cannot signal
            self.call_from_thread(self.notify, str(exc), title="Cannot cancel",
                                  severity="error")
            return
        self.call_from_thread(self.notify, "Cancelling…", title=run.name)

    # --- navigation ---------------------------------------------------------------------------

    def show(self, screen: Screen) -> None:
        """Make ``screen`` the one main screen (modals on top are closed first)."""
        while len(self.screen_stack) > 2:
            self.pop_screen()
        if len(self.screen_stack) <= 1:
            self.push_screen(screen)
        else:
            self.switch_screen(screen)

    def action_new_run(self) -> None:
        """The New run form: the same one each time (what was typed in it stays while the
        other screens are looked at), a fresh one once a run was started from it."""
        from bertui.tui.screens.new_run import NewRunScreen

        if isinstance(self.screen, NewRunScreen):
            return
        if not self.is_screen_installed(NEW_RUN_SCREEN):
            self.install_screen(NewRunScreen(), NEW_RUN_SCREEN)  # installed: kept when left
        self.show(self.get_screen(NEW_RUN_SCREEN))

    def action_new_study(self) -> None:
        """The New run form with its study switch on (its budgets and seeds shown)."""
        self.action_new_run()
        self.get_screen(NEW_RUN_SCREEN).want_study()

    def on_new_run_screen_started(self, message: Message) -> None:
        # Bubbled up from the form, after its own handler has opened the new run.
        self.call_later(self._discard_new_run_form)

    async def _discard_new_run_form(self) -> None:
        if not self.is_screen_installed(NEW_RUN_SCREEN):
            return
        form = self.get_screen(NEW_RUN_SCREEN)
        if form in self.screen_stack:
            return  # still shown: the new run could not be opened, the form stays as it is
        self.uninstall_screen(NEW_RUN_SCREEN)
        if form.is_attached:
            await form.remove()

    def action_show_runs(self) -> None:
        from bertui.tui.screens.runs import RunsScreen

        if not isinstance(self.screen, RunsScreen):
            self.show(RunsScreen())

    def _show_study(self, ref: str) -> bool:
        """Open on the Study screen when ``ref`` names a study (a ``study-`` id or a study's
        folder, as ``bertui show STUDY`` passes it); False when it names a run."""
        from bertui.core.studies import ID_PREFIX, STUDY_FILE, match_study

        if not ref.startswith(ID_PREFIX) and not (Path(ref) / STUDY_FILE).is_file():
            return False
        try:
            study = match_study(ref, self.home)
            if study is None:
                raise RunError(f"no study '{ref}'")
        except RunError as exc:
            self.notify(str(exc), title="No such study", severity="error")
            self.action_show_runs()
            return True
        self.open_study(study.path)
        return True

    def open_study(self, path: Path) -> None:
        """The Study screen of the study at ``path`` (its screen module loads now)."""
        from bertui.tui.screens.study import StudyScreen

        current = self.screen
        if not (isinstance(current, StudyScreen) and Path(current.study.path) == Path(path)):
            self.show(StudyScreen(Path(path), self.home))

    def open_run(self, path: Path, view: str | None = None,
                 back_to: Path | None = None) -> None:
        """Monitor (active, failed, …) or Compare (finished) for the run at ``path``;
        ``back_to``: the study whose screen escape on Compare goes back to."""
        from bertui.tui.screens.compare import CompareScreen
        from bertui.tui.screens.monitor import MonitorScreen

        run = Run.load(Path(path))
        if view is None:
            view = "compare" if run.state == "finished" and run.metrics() else "monitor"
        current = self.screen
        same = getattr(current, "run", None) is not None and \
            Path(current.run.path) == Path(path)
        if view == "compare":
            if not (same and isinstance(current, CompareScreen)):
                compare = CompareScreen(run.path)
                compare.back_to = back_to
                self.show(compare)
        elif not (same and isinstance(current, MonitorScreen)):
            self.show(MonitorScreen(run.path))


def make_app(*, home: Path | None = None, show_run: str | None = None,
             config_path: Path | None = None,
             predictor_factory: Callable[[Path], Any] | None = None,
             clock: Callable[[], float] = time.time) -> BertuiApp:
    """The app, as the CLI (``bertui``, ``bertui show RUN``) and the tests build it.

    ``home``: the bertui home (default ``$BERTUI_HOME`` or the user data dir); ``show_run``: a
    run id, name or path to open on; ``config_path``: where settings.json and themes/ live
    (default the user config dir); ``predictor_factory``: builds the classifier pane's
    predictor from a run path (tests pass a fake); ``clock``: wall time (tests freeze it).
    """
    return BertuiApp(home=home, show_run=show_run, config_path=config_path,
                     predictor_factory=predictor_factory, clock=clock)
