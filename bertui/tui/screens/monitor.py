"""Monitor: a live view of one run, read from its directory: state, elapsed, ETA, progress,
loss and accuracy curves, throughput, GPU (or CPU/RAM) telemetry and the last log lines.

The screen polls the run directory a few times a second (``RunFollower``); a whole history is
replayed on the first poll, so re-attaching to a run started earlier shows everything. After
that first look the reading (files, psutil) happens in a thread worker, one read at a time, and
comes back as a message: a filesystem that stalls leaves the screen answering its keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import ProgressBar, RichLog, Static
from textual.worker import Worker

from bertui.core.runs import ACTIVE_STATES, RESUMABLE_STATES, pid_alive
from bertui.tui.follow import Reading, RunFollower
from bertui.tui.format import clock_time, count, duration, number, percent, rate, score
from bertui.tui.screens.base import BertuiScreen, PaletteCommand
from bertui.tui.themes import state_style, theme_color
from bertui.tui.widgets.chart import Chart, step_axis
from bertui.tui.widgets.hardware import HardwarePanel

if TYPE_CHECKING:
    from bertui.tui.app import BertuiApp

POLL_SECONDS = 0.3  # ~3 Hz
STATE_ICONS = {"queued": "◌", "running": "●", "finished": "✓", "failed": "✗",
               "cancelled": "■", "lost": "?"}


class MonitorScreen(BertuiScreen):
    """Follows the run at ``run_path``."""

    CSS_PATH = "monitor.tcss"
    TITLE = "Monitor"
    BINDINGS = [
        Binding("c", "compare", "Compare"),
        Binding("x", "cancel_run", "Cancel run"),
        Binding("r", "resume", "Resume"),
        Binding("escape", "app.show_runs", "Runs"),
    ]

    @dataclass
    class Read(Message):
        """A look at the run directory, from the reading thread (``None``: it failed)."""

        reading: Reading | None

    def __init__(self, run_path: Path) -> None:
        super().__init__()
        self.follower = RunFollower(Path(run_path))
        self.sub_title = self.follower.run.name
        self._logged = 0
        self._last_state: str | None = None
        self._reading: Worker[None] | None = None  # the read in flight, if any

    @property
    def bertui(self) -> BertuiApp:
        return self.app  # type: ignore[return-value]

    @property
    def run(self):
        return self.follower.run

    def compose_body(self) -> ComposeResult:
        with Vertical(id="monitor-body"):
            yield Static("", id="run-headline")
            with Horizontal(id="progress-row"):
                yield ProgressBar(total=None, show_eta=False, id="run-progress")
                yield Static("", id="run-clock")
            yield Static("", id="run-problem")
            with Horizontal(id="monitor-charts"):
                yield Chart(id="loss-chart", classes="chart")
                yield Chart(id="accuracy-chart", classes="chart")
            with Horizontal(id="monitor-lower"):
                with Vertical(id="monitor-numbers"):
                    yield Static("", id="run-throughput")
                    yield Static("", id="run-scores")
                yield HardwarePanel(id="hardware")
            yield RichLog(id="run-log", max_lines=200, wrap=False, markup=False,
                          auto_scroll=True)

    async def on_mount(self) -> None:
        await self._show(self.follower.poll(), force=True)
        self.set_interval(POLL_SECONDS, self._tick)

    # --- polling ------------------------------------------------------------------------------

    def _tick(self) -> None:
        self._show_clock()
        if self._reading is None or self._reading.is_finished:
            self._reading = self._read()

    @work(thread=True, exclusive=True, exit_on_error=False, group="follow")
    def _read(self) -> None:
        try:
            reading: Reading | None = self.follower.read()
        except OSError:  # the folder went away, lost its permissions…: look again later
            reading = None
        self.post_message(self.Read(reading))

    async def on_monitor_screen_read(self, message: Read) -> None:
        if message.reading is not None:
            await self._show(self.follower.apply(message.reading))

    async def _show(self, changed: bool, force: bool = False) -> None:
        state = self.follower.state
        if changed or force:
            await self._show_history()
        self._show_clock()
        if state != self._last_state:
            if self._last_state in ACTIVE_STATES and state == "finished":
                self.notify("The run finished: press c to compare the models.",
                            title=self.run.name)
            elif self._last_state in ACTIVE_STATES and state in ("failed", "lost"):
                self.notify(f"The run {state}.", title=self.run.name, severity="error")
            self._last_state = state
            self.refresh_bindings()

    async def _show_history(self) -> None:
        history = self.follower.history
        run = self.run
        state = self.follower.state
        variables = self.app.theme_variables
        start = history.start
        config = run.config
        model = (config.get("model") or {}).get("spec") or "?"
        data = (config.get("data") or {}).get("train") or "?"
        parts = [f"{model} on {data}"]
        if start:
            precision = start.get("precision_reason") or start.get("precision", "")
            parts.append(f"{start.get('device', '?')} {precision}".strip())
            parts.append(f"batch {start.get('batch_size', '?')}")
            if start.get("learning_rate"):
                parts.append(f"lr {start['learning_rate']:g}")
            parts.append(f"{count(start.get('n_train'))} train / "
                         f"{count(start.get('n_eval'))} eval")
        headline = Text.assemble(
            (f"{STATE_ICONS.get(state, '')} {state}", state_style(variables, state)),
            "  ", (run.name, "bold"), "  ", " · ".join(parts))
        self.query_one("#run-headline", Static).update(headline)

        bar = self.query_one("#run-progress", ProgressBar)
        if history.total_steps:
            bar.update(total=history.total_steps, progress=history.step)

        problem = self.query_one("#run-problem", Static)
        message = self._problem(state)
        problem.display = bool(message)
        problem.update(message or "")
        problem.set_class(state == "failed" or state == "lost", "-error")

        progress = history.progress
        self.query_one("#run-throughput", Static).update(
            f"samples/s  {rate(progress.get('samples_per_s'), '')}\n"
            f"tokens/s   {rate(progress.get('tokens_per_s'), '')}\n"
            f"epoch      {number(history.epoch)}"
            f" / {number(history.epochs or (config.get('train') or {}).get('epochs'))}")
        lines = []
        for name, title in (("pretrained", "pre-trained"), ("probe", "linear probe")):
            base = history.baselines.get(name)
            if base:
                lines.append(f"{title:<13} acc {percent(base.get('accuracy'))}  "
                             f"F1 {score(base.get('macro_f1'))}")
        if history.evals:
            last = history.evals[-1]
            lines.append(f"{'fine-tuned':<13} acc {percent(last.get('accuracy'))}  "
                         f"F1 {score(last.get('macro_f1'))}")
        self.query_one("#run-scores", Static).update(
            "\n".join(lines) or "accuracy: waiting for the first evaluation")

        self._plot_curves()
        await self.query_one(HardwarePanel).update_samples(history.telemetry)
        log = self.query_one("#run-log", RichLog)
        entries = list(history.logs)
        new = entries[self._logged:] if self._logged <= len(entries) else entries
        for entry in new:
            level = str(entry.get("level") or "info")
            style = {"error": theme_color(variables, "error"),
                     "warning": theme_color(variables, "warning")}.get(level, "")
            clock = clock_time(entry.get("time"))
            log.write(Text.assemble((clock, theme_color(variables, "foreground-muted")),
                                    f" {level:<7} ", (str(entry.get("message", "")), style)))
        self._logged = len(entries)

    def _problem(self, state: str) -> str | None:
        run = self.run
        if state == "failed":
            error = run.status.get("error") or (self.follower.history.end or {}).get("error")
            return f"✗ failed: {error or 'no reason given'}\n  full log: {run.log_path}"
        if state == "lost":
            pid = run.status.get("pid")
            if run.on_this_host and pid_alive(pid, run.status.get("pid_started")):
                quiet = duration(time.time() - float(run.status.get("heartbeat") or 0))
                return (f"? lost: the worker (pid {pid}) is alive but has written nothing for "
                        f"{quiet}: hung? It keeps the run until it ends (kill {pid}); resume "
                        f"after that.\n  full log: {run.log_path}")
            checkpoint = run.last_checkpoint()
            where = f"from {checkpoint.name}" if checkpoint else "from the start"
            return (f"? lost: the worker (pid {pid or '?'}) is gone. "
                    f"Press r to resume {where}.\n  full log: {run.log_path}")
        if state == "cancelled":
            return f"■ cancelled at step {self.follower.history.step}: press r to resume."
        return None

    def _show_clock(self) -> None:
        now = self.bertui.clock()
        history = self.follower.history
        phase = history.phase or "starting"
        step = f"step {history.step}/{history.total_steps or '?'}"
        self.query_one("#run-clock", Static).update(
            f"{step} · {phase} · elapsed {duration(self.follower.elapsed(now))} · "
            f"ETA {duration(self.follower.eta(now))}")

    def _plot_curves(self) -> None:
        history = self.follower.history
        loss = list(history.train_loss)
        eval_loss = history.eval_series("eval_loss")
        accuracy = history.eval_series("accuracy")
        baselines = {name: b.get("accuracy") for name, b in history.baselines.items()}
        total = history.total_steps
        mlm = list(history.mlm_loss)  # the tapt arm's masked-LM loss: far above the others

        def draw_loss(plt, colors) -> None:
            if loss:
                plt.plot([s for s, _ in loss], [v for _, v in loss], label="train",
                         color=colors("chart-train"), marker="braille")
            if eval_loss:
                plt.plot([s for s, _ in eval_loss], [v for _, v in eval_loss], label="eval",
                         color=colors("chart-eval"), marker="braille")
            if mlm:
                plt.plot([s for s, _ in mlm], [v for _, v in mlm], label="TAPT MLM (right)",
                         color=colors("warning"), marker="braille", yside="right")
            right = max([total or 0, *(s for s, _ in mlm)]) or None
            step_axis(plt, [s for s, _ in loss + eval_loss + mlm], right)
            plt.title("loss")
            plt.xlabel("step")

        def draw_accuracy(plt, colors) -> None:
            right = total or max([s for s, _ in accuracy] or [1])
            steps = [s for s, _ in accuracy]
            for name, label in (("pretrained", "pre-trained"), ("probe", "linear probe")):
                value = baselines.get(name)
                if isinstance(value, (int, float)):
                    plt.plot([0, right], [value, value], label=label,
                             color=colors(f"model-{name}"), marker="braille")
                    steps += [0, right]
            if accuracy:
                plt.plot([s for s, _ in accuracy], [v for _, v in accuracy],
                         label="fine-tuned", color=colors("model-finetuned"),
                         marker="braille")
            plt.ylim(0, 1)
            step_axis(plt, steps, total)
            plt.title("eval accuracy")
            plt.xlabel("step")

        self.query_one("#loss-chart", Chart).plot(draw_loss)
        self.query_one("#accuracy-chart", Chart).plot(draw_accuracy)

    # --- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.follower.state
        if action == "compare":
            return state == "finished"
        if action == "cancel_run":
            return state in ACTIVE_STATES
        if action == "resume":
            return state in RESUMABLE_STATES
        return True

    def action_compare(self) -> None:
        if self.follower.state == "finished":
            self.bertui.open_run(self.run.path, view="compare")

    def action_cancel_run(self) -> None:
        if self.follower.state in ACTIVE_STATES:
            self.bertui.cancel_run(self.run)

    def action_resume(self) -> None:
        if self.follower.state in RESUMABLE_STATES:
            self._resume()

    @work(thread=True, exclusive=True, group="resume", exit_on_error=False)
    def _resume(self) -> None:
        try:
            from bertui.core.launch import resume_run

            resumed = resume_run(self.run)
        except Exception as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Cannot resume",
                                      severity="error")
            return
        self.app.call_from_thread(self.bertui.open_run, resumed.path, "monitor")

    def palette_commands(self) -> list[PaletteCommand]:
        state = self.follower.state
        commands: list[PaletteCommand] = []
        if state == "finished":
            commands.append(("Compare this run", "Pre-trained vs fine-tuned",
                             self.action_compare))
        if state in ACTIVE_STATES:
            commands.append(("Cancel this run", "Stop the worker (asks first)",
                             self.action_cancel_run))
        if state in RESUMABLE_STATES:
            commands.append(("Resume this run", "From its last checkpoint", self.action_resume))
        return commands
