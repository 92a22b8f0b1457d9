"""The event log of a run (``events.jsonl``): its schema, its writer, its reader, its folding.

The worker appends one JSON object a line; every client (the CLI's progress line, the TUI's
Monitor, Runs and Compare) reads the same lines through :class:`EventReader` and folds them
with :class:`RunHistory`, so the meaning of an event is written down once, here.

Every event has ``v`` (``EVENT_VERSION``), ``type``, ``time`` (wall clock, seconds) and ``step``
(the training step it belongs to, 0 before training). ``EVENT_FIELDS`` lists, for each type, the
fields its writers add; a reader treats every one of them as optional and ignores types and
fields it does not know, so older and newer logs both read.

This module is light on purpose (no torch, no transformers): the TUI imports it at start-up.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENT_VERSION = 1
# The fields every event has.
BASE_FIELDS = ("v", "type", "time", "step")
# The event types and the fields their writers add (all optional to a reader).
# ``arm`` on a training event: the arm whose own Trainer wrote it (scratch, tapt: see
# ``bertui.core.arms.retrained``); without it, the run's fine-tune.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    # training is about to start (or start again): what it will do
    "run_start": ("total_steps", "epochs", "n_train", "n_eval", "labels", "device", "precision",
                  "precision_reason", "batch_size", "learning_rate", "resumed_from", "arm",
                  "world_size", "global_batch_size"),
    # a resumed worker continues from ``checkpoint`` (None: from the beginning)
    "resume": ("checkpoint", "arm"),
    # the worker entered a phase: loading, tokenizing, an arm (pretrained, probe...), training,
    # saving, done
    "phase": ("name", "total_steps", "arm"),
    # a model measured without fine-tuning (the pre-trained model, the linear probe)
    "baseline": ("name", "accuracy", "macro_f1"),
    # the Trainer's training log (every few steps)
    "train": ("loss", "learning_rate", "epoch", "grad_norm", "arm"),
    # the tapt arm's masked-LM training log (every few steps): its loss falls as it adapts
    "mlm": ("loss", "learning_rate", "epoch", "grad_norm", "arm"),
    # throughput and ETA (about once a second)
    "progress": ("total_steps", "epoch", "samples_per_s", "tokens_per_s", "eta_s", "elapsed_s",
                 "arm"),
    # an evaluation during training (each epoch's end)
    "eval": ("epoch", "eval_loss", "accuracy", "macro_f1", "arm"),
    # a hardware sample (see bertui.core.telemetry.sample)
    "telemetry": ("cpu_percent", "ram_used", "ram_total", "rss", "gpus"),
    # a Trainer checkpoint was written at ``path``
    "checkpoint": ("path", "arm"),
    # a line of the worker's log: level is info, warning or error
    "log": ("level", "message"),
    # the run ended: state is finished, failed or cancelled; error is its one-line reason
    "run_end": ("state", "error"),
    # a study's events (studies/<id>/events.jsonl; ``log`` too): its runner started, with
    # ``total`` runs in its grid
    "study_start": ("total", "resumed", "executor", "parallel", "slots"),
    # the study's run of one cell started: how is started, resumed or "still running"
    "study_run_start": ("run", "budget", "seed", "how", "job", "gpus"),
    # that run ended, in ``state``
    "study_run_end": ("run", "budget", "seed", "state", "error"),
    # summary.json was rewritten: runs finished of total, the crossover budget (or None)
    "study_summary": ("finished", "total", "crossover"),
    # the study's runner ended: state is finished, failed or cancelled
    "study_end": ("state", "error"),
}
EVENT_TYPES = tuple(EVENT_FIELDS)
# Written even with monitoring events off (they carry the run's outcome, not its pulse).
ESSENTIAL_TYPES = frozenset({"run_start", "run_end", "resume", "phase", "baseline", "eval", "log",
                             "study_start", "study_run_start", "study_run_end", "study_summary",
                             "study_end"})

TELEMETRY_HISTORY = 60  # samples RunHistory keeps (the Monitor's sparklines)
LOG_LINES = 200  # log lines RunHistory keeps


# --- writing ----------------------------------------------------------------------------------


def make_event(type_: str, step: int = 0, **fields: Any) -> dict[str, Any]:
    """An event as written to events.jsonl: every line has v, type, time and step."""
    return {"v": EVENT_VERSION, "type": type_, "time": time.time(), "step": int(step), **fields}


def append_event(path: Path, event: dict[str, Any]) -> None:
    """Append one event as one line, in one write(2) on an O_APPEND descriptor."""
    line = (json.dumps(event, separators=(",", ":"), default=_json_default) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


# --- reading ----------------------------------------------------------------------------------


class EventReader:
    """Incremental reader of an events.jsonl file.

    ``read_new()`` returns the events appended since the last call. A last line without its
    newline (the worker is half-way through writing it) is left for the next call; a line that
    is not valid JSON is skipped and counted in ``bad_lines``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.bad_lines = 0

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for raw in chunk[: end + 1].splitlines():
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.bad_lines += 1
                continue
            if isinstance(event, dict):
                events.append(event)
            else:
                self.bad_lines += 1
        return events


def read_events(path: Path) -> list[dict[str, Any]]:
    """All complete events of a file (a half-written last line is ignored)."""
    return EventReader(path).read_new()


# --- folding ----------------------------------------------------------------------------------


@dataclass
class RunHistory:
    """Everything the events of one run said so far (``apply`` them in order)."""

    total_steps: int | None = None
    step: int = 0
    epoch: float | None = None
    epochs: float | None = None
    phase: str | None = None
    start: dict[str, Any] = field(default_factory=dict)  # the run_start event
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)  # the newest progress event
    telemetry: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=TELEMETRY_HISTORY)
    )
    logs: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    checkpoints: list[str] = field(default_factory=list)
    end: dict[str, Any] | None = None
    first_time: float | None = None
    last_time: float | None = None
    # The training of arms with a Trainer of their own (events with ``arm``): kept apart
    # from the fine-tune's curves above, by arm (steps: that arm's Trainer's).
    arm_loss: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    arm_evals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    mlm_loss: list[tuple[int, float]] = field(default_factory=list)  # the tapt arm's
    training_arm: str | None = None  # the arm of the newest training phase (None: fine-tune)

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event in. Unknown types and missing fields are ignored."""
        kind = event.get("type")
        when = event.get("time")
        if isinstance(when, (int, float)):
            self.first_time = when if self.first_time is None else self.first_time
            self.last_time = when
        arm = event.get("arm")
        if arm is not None and arm != "finetuned":
            self._apply_arm(str(arm), event)
            return
        step = event.get("step")
        if isinstance(step, int) and step > self.step:
            self.step = step
        if kind == "run_start":
            self.start = event
            self.total_steps = event.get("total_steps") or self.total_steps
            self.epochs = event.get("epochs") or self.epochs
        elif kind == "resume":
            self.logs.append({"level": "info", "time": when,
                              "message": f"resumed from {event.get('checkpoint') or 'start'}"})
        elif kind == "phase":
            self.phase = event.get("name")
            self.training_arm = None if self.phase == "training" else self.training_arm
            if event.get("total_steps"):
                self.total_steps = event["total_steps"]
        elif kind == "baseline":
            self.baselines[str(event.get("name"))] = event
        elif kind == "train":
            loss = event.get("loss")
            if isinstance(loss, (int, float)):
                self.train_loss.append((int(step or 0), float(loss)))
            if event.get("epoch") is not None:
                self.epoch = event["epoch"]
        elif kind == "progress":
            self.progress = event
            self.total_steps = event.get("total_steps") or self.total_steps
            if event.get("epoch") is not None:
                self.epoch = event["epoch"]
        elif kind == "eval":
            self.evals.append(event)
        elif kind == "telemetry":
            self.telemetry.append(event)
        elif kind == "checkpoint":
            self.checkpoints.append(str(event.get("path")))
        elif kind == "log":
            self.logs.append(event)
        elif kind == "run_end":
            self.end = event
            error = event.get("error")
            if error and not any(entry.get("message") == error for entry in self.logs):
                self.logs.append({"level": "error", "time": when, "message": error})

    def _apply_arm(self, arm: str, event: dict[str, Any]) -> None:
        """An event of an arm's own training: its losses and evaluations go to that arm's
        curves; its phase and progress are what the run is doing now."""
        kind, step = event.get("type"), int(event.get("step") or 0)
        loss = event.get("loss")
        if kind in ("train", "mlm") and isinstance(loss, (int, float)):
            series = self.mlm_loss if kind == "mlm" else self.arm_loss.setdefault(arm, [])
            series.append((step, float(loss)))
        elif kind == "eval":
            self.arm_evals.setdefault(arm, []).append(event)
        elif kind == "phase":
            self.phase = event.get("name")
            self.training_arm = arm
        elif kind == "progress":
            self.progress = event

    def extend(self, events: list[dict[str, Any]]) -> None:
        """Fold several events in, in order."""
        for event in events:
            self.apply(event)

    @property
    def fraction(self) -> float | None:
        """Training progress 0..1, when the total is known."""
        if not self.total_steps:
            return None
        return min(1.0, self.step / self.total_steps)

    @property
    def last_eval(self) -> dict[str, Any] | None:
        """The newest evaluation during training, if any."""
        return self.evals[-1] if self.evals else None

    def eval_series(self, key: str) -> list[tuple[int, float]]:
        return [(int(e.get("step") or 0), float(e[key])) for e in self.evals
                if isinstance(e.get(key), (int, float))]

    def latest_telemetry(self) -> dict[str, Any] | None:
        return self.telemetry[-1] if self.telemetry else None
