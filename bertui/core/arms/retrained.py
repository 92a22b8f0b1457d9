"""What the ``scratch`` and ``tapt`` arms share: a model of their own, fine-tuned with the
``finetuned`` arm's recipe.

Such an arm builds its classifier (``build_model``), gives it what the run's model was given (the
compact vocabulary the run's splits are encoded in, fast dropout where the run uses it, the
device) and a Trainer of its own made as the run's is (``engine.build_trainer``: the same
arguments, callbacks and data), then runs the ``finetuned`` arm's own code over a copy of the run
context that holds that model and Trainer: training, resume, prediction, throughput and saving
are the fine-tune's, not a copy of them. Its checkpoints go to ``arms/<name>/checkpoints/``
(removed once its model is saved), its model and tokenizer to ``arms/<name>/``
(``save_pretrained``, safetensors), which ``bertui predict`` and the classifier pane load. Every
event its training writes carries ``arm`` (its name), so that readers keep its curves apart
from the fine-tune's.
"""

from __future__ import annotations

import dataclasses
import shutil
from abc import abstractmethod
from typing import Any

from bertui.core.arms.base import Arm, Recorder, RunContext
from bertui.core.arms.finetune import FineTuned
from bertui.core.predictions import Prediction
from bertui.core.runs import CHECKPOINTS_DIR


class ArmRecorder:
    """The run's recorder as one arm's training uses it: ``arm`` on every event, the arm's
    title before every log line; the status (heartbeat, live step) is the run's."""

    def __init__(self, rec: Recorder, arm: str, title: str) -> None:
        self.rec, self.arm, self.title = rec, arm, title
        self.live = rec.live

    def set(self, **fields: Any) -> None:
        self.rec.set(**fields)

    def emit(self, type_: str, step: int | None = None, **fields: Any) -> None:
        self.rec.emit(type_, step, arm=self.arm, **fields)

    def log(self, message: str, level: str = "info") -> None:
        self.rec.log(f"{self.title}: {message}", level)


class Retrained(Arm):
    """An arm that fine-tunes a classifier of its own with the ``finetuned`` recipe."""

    baseline = False

    def prepare(self) -> None:
        super().prepare()
        self.recipe: FineTuned | None = None
        self.note = self.title

    @property
    def resuming(self) -> bool:
        """Whether its own fine-tune has a checkpoint to go on from (a resumed run)."""
        from bertui.core.runs import last_checkpoint

        return self.ctx.ctl.resume and last_checkpoint(self.folder / CHECKPOINTS_DIR) is not None

    @abstractmethod
    def build_model(self) -> Any:
        """Its classifier for the run's labels (on the CPU, seeded), or None when the run was
        cancelled meanwhile. May set ``self.note`` (its report's note)."""

    def train(self) -> bool:
        model = self.build_model()
        if model is None:
            return False
        self.recipe = FineTuned(self.own_context(model), self.folder)
        self.recipe.prepare()
        return self.recipe.train()

    def own_context(self, model: Any) -> RunContext:
        """The run context with this arm's model and Trainer in it (and its own recorder and
        metrics): what the ``finetuned`` arm's code runs over."""
        from bertui.core.engine import build_trainer
        from bertui.core.vocab import CompactedModel

        ctx = self.ctx
        model.config.id2label = dict(ctx.id2label)
        model.config.label2id = {v: k for k, v in ctx.id2label.items()}
        model.to(ctx.device.kind)
        own = dataclasses.replace(
            ctx, rec=ArmRecorder(ctx.rec, self.name, self.title), model=model, loading={},
            compacted=None, dropout_swap=None, trainer=None, epoch_order=None, metrics={},
            predictions={},
        )
        if ctx.compacted is not None:  # the splits are in the run's compact ids
            own.compacted = CompactedModel(model, ctx.compacted.vocab)
            own.compacted.shrink()
        from bertui.core.dropout import for_run

        own.dropout_swap, _ = for_run(model, ctx.hyper.fast_dropout, ctx.device.kind,
                                      ctx.hyper.torch_compile)
        build_trainer(own, self.folder / CHECKPOINTS_DIR)
        return own

    def predict(self) -> Prediction:
        assert self.recipe is not None
        return self.recipe.predict()

    def fields(self) -> dict[str, Any]:
        assert self.recipe is not None
        return {**self.recipe.fields(), "note": self.note, "train": self.recipe.train_stats()}

    def cost(self, seconds: float) -> dict[str, Any]:
        assert self.recipe is not None
        return self.recipe.cost(seconds)

    def save(self, prediction: Prediction) -> None:
        assert self.recipe is not None
        self.recipe.save(prediction)
        shutil.rmtree(self.folder / CHECKPOINTS_DIR, ignore_errors=True)
        self.recipe.ctx.trainer = None  # its optimizer state is no longer needed

    def summary(self, report: dict[str, Any]) -> str:
        sps = report["train"]["train_samples_per_s"]
        return f"{self.title}: accuracy {report['accuracy']:.4f} ({sps} samples/s)"
