"""The arm interface, and the run context every arm works in.

An arm is one model of a run's comparison (see DESIGN.md, "The comparison: arms"): it is
prepared, trained (or not), predicts the eval split, keeps what it needs on disk and says what
it cost. The engine (``bertui.core.engine``) builds one ``RunContext`` (the config, device,
tokenizer, data, encoded splits, model and Trainer of the run) and runs each arm the run names
over it, one after the other, on the same eval split; it computes each arm's report (accuracy,
macro-F1, per-class figures, confusion matrix) from the arm's ``Prediction`` itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bertui.core.data import PreparedData
from bertui.core.models import ModelSource
from bertui.core.predictions import Prediction
from bertui.core.runs import Run
from bertui.core.schema import RunOptions, from_config
from bertui.core.training import Device, Encoded, Hyper
from bertui.core.vocab import CompactedModel


class Recorder(Protocol):
    """Where a run tells what it does (the worker's status.json and events.jsonl)."""

    live: dict[str, Any]

    def set(self, **fields: Any) -> None: ...
    def emit(self, type_: str, step: int | None = None, **fields: Any) -> None: ...
    def log(self, message: str, level: str = "info") -> None: ...


class Control(Protocol):
    """How a run is steered from outside: a stop request (the worker's SIGTERM), whether it
    trains now, whether it resumes. It may also have ``at_step(step, saved=...)``, which the
    Trainer's events callback calls at every step's end and after every checkpoint."""

    stop_requested: bool
    training: bool
    resume: bool

    def check_cancel(self) -> None: ...


@dataclass
class RunContext:
    """What the engine's phases build (load, tokenise, model, trainer) and the arms read."""

    run: Run
    rec: Recorder
    ctl: Control
    config: dict[str, Any]
    hyper: Hyper
    device: Device
    source: ModelSource
    tokenizer: Any
    prepared: PreparedData
    id2label: dict[int, str]
    train: Encoded = field(default_factory=lambda: Encoded([], []))
    evaluation: Encoded = field(default_factory=lambda: Encoded([], []))
    pad_id: int = 0
    model: Any = None
    loading: dict[str, Any] = field(default_factory=dict)  # from_pretrained's loading info
    compacted: CompactedModel | None = None
    dropout_swap: Any = None  # core.dropout: exact or fast dropout swapped in (undone at save)
    trainer: Any = None
    epoch_order: Any = None  # the trainer's EpochOrder callback
    samples_per_step: int = 1
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json, as it grows
    predictions: dict[str, Prediction] = field(default_factory=dict)  # predictions.npz's arms
    baseline: Device | None = None  # see baseline_device

    def baseline_device(self) -> Device:
        """The precision the model as loaded is measured in (the pre-trained arm, the probe's
        features): the run's, unless that changes its answers (``training.inference_device``;
        then fp32, and the log says so). Checked once, before the Trainer first wraps the
        model's forward in its autocast."""
        if self.baseline is None:
            from bertui.core.training import inference_device

            self.baseline = inference_device(self.model, self.evaluation, self.pad_id,
                                             self.device)
            if self.baseline is not self.device:
                self.rec.log(f"the pre-trained model is measured in {self.baseline.reason}",
                             "warning")
        return self.baseline

    @property
    def labels(self) -> list[str]:
        return [self.id2label[i] for i in sorted(self.id2label)]

    @cached_property
    def options(self) -> RunOptions:
        """The run's options as the schema reads config.toml (defaults where it is silent)."""
        return from_config(self.config)

    @property
    def eval_batch_size(self) -> int:
        return self.hyper.eval_batch_size or 64

    @property
    def step(self) -> int:
        """The Trainer's global step (0 before any training)."""
        return int(self.trainer.state.global_step) if self.trainer is not None else 0


class Arm(ABC):
    """One model of the comparison. The engine calls, in order: ``prepare``, ``train`` (False:
    the run was cancelled, nothing more is called), ``predict``, ``fields`` and ``cost`` (for
    its report in metrics.json), ``save``, then logs ``summary``."""

    name: ClassVar[str]  # its key in metrics.json and predictions.npz, and in config's arms
    title: ClassVar[str]  # as people read it ("linear probe")
    keeps: ClassVar[tuple[str, ...]] = ()  # what it keeps on disk, relative to the run folder
    baseline: ClassVar[bool] = True  # reported as a baseline event (a reference for training)

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    @property
    def folder(self) -> Path:
        """Where an arm keeps what it keeps when that is more than a file of the run folder
        (``arms/<name>/``); made on first use."""
        path = self.ctx.run.arms_dir / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prepare(self) -> None:
        """Before training: say that it starts (a ``phase`` event named after the arm)."""
        self.ctx.rec.emit("phase", 0, name=self.name)

    def train(self) -> bool:
        """Train, where the arm trains; False when the run was cancelled meanwhile."""
        return True

    @abstractmethod
    def predict(self) -> Prediction:
        """The predicted label id and class probabilities of every eval row, in eval order."""

    def fields(self) -> dict[str, Any]:
        """The arm's own fields of its report (at least ``note``: what the model is)."""
        return {"note": self.title}

    def cost(self, seconds: float) -> dict[str, Any]:
        """What the arm cost: ``seconds`` is its wall time, prepare to predict. An arm that
        trains adds ``train_samples_per_s`` (samples through training a second). The engine
        adds the rest of metrics.json's ``cost``: ``devices``, ``device_seconds`` and the
        energy (``bertui.core.energy``), measured around the arm on the GPUs ``devices``
        names."""
        return {"seconds": round(seconds, 2)}

    def devices(self) -> int:
        """How many devices the arm computes on (its device-seconds are its wall seconds
        times this; the energy meter reads that many GPUs): the run's GPUs, else 1."""
        device = self.ctx.device
        return max(1, device.count) if device.kind == "cuda" else 1

    def save(self, prediction: Prediction) -> None:  # noqa: B027 - an arm may keep nothing
        """Keep on disk what ``keeps`` names (and any run-level metrics the arm owns)."""

    def summary(self, report: dict[str, Any]) -> str:
        """The log line of its result."""
        return f"{self.title}: accuracy {report['accuracy']:.4f}"
