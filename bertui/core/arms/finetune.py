"""The ``finetuned`` arm: every weight trained with the transformers ``Trainer``.

It trains the run's Trainer (built by the engine: the pre-trained arm measures through it
first), resuming from the newest checkpoint when the run resumes, and keeps the model and
tokenizer in ``model/`` (``save_pretrained``, safetensors). It also owns two run-level entries
of metrics.json: ``train`` (throughput, steps, device, recipe) and ``errors`` (the eval
examples it still gets wrong, most confident first).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bertui.core.arms.base import Arm, RunContext
from bertui.core.predictions import Prediction
from bertui.core.runs import CHECKPOINTS_DIR, MODEL_DIR, last_checkpoint

ERROR_SAMPLE = 50


class FineTuned(Arm):
    name = "finetuned"
    title = "fine-tuned"
    keeps = (MODEL_DIR,)
    baseline = False

    def __init__(self, ctx: RunContext, folder: Path | None = None) -> None:
        """``folder``: where the model and its checkpoints go (``model/`` and
        ``checkpoints/`` of the run by default; ``arms.retrained`` runs this arm on a model of
        its own, kept in ``folder`` with its checkpoints in ``folder/checkpoints``)."""
        super().__init__(ctx)
        self.model_dir = folder or ctx.run.model_dir
        self.checkpoints_dir = folder / CHECKPOINTS_DIR if folder else ctx.run.checkpoints_dir

    def prepare(self) -> None:
        ctx = self.ctx
        resume_from = last_checkpoint(self.checkpoints_dir) if ctx.ctl.resume else None
        self.resume_from: Path | None = resume_from
        self.start_step = int(resume_from.name.split("-")[-1]) if resume_from else 0
        self.wall = 0.0
        if ctx.ctl.resume:
            ctx.rec.emit("resume", self.start_step,
                         checkpoint=str(resume_from) if resume_from else None)
            ctx.rec.log(f"resuming from {resume_from.name}" if resume_from
                        else "no checkpoint yet: training starts from the beginning")
        ctx.epoch_order.resume_from = resume_from
        steps_per_epoch = -(-len(ctx.train) // ctx.samples_per_step)
        args = ctx.trainer.args
        ctx.rec.emit(
            "run_start",
            0,
            total_steps=int(steps_per_epoch * ctx.hyper.epochs + 0.999),
            epochs=ctx.hyper.epochs,
            n_train=len(ctx.train),
            n_eval=len(ctx.evaluation),
            labels=ctx.labels,
            device=ctx.device.name,
            precision=ctx.device.precision,
            precision_reason=ctx.device.reason,
            batch_size=args.per_device_train_batch_size,
            world_size=args.world_size,  # torchrun's processes (1 without it)
            global_batch_size=ctx.samples_per_step,  # samples a step on all of them
            learning_rate=ctx.hyper.learning_rate,
            resumed_from=str(resume_from) if resume_from else None,
        )

    def train(self) -> bool:
        ctx = self.ctx
        ctx.ctl.training = True
        t0 = time.perf_counter()
        try:
            ctx.trainer.train(resume_from_checkpoint=str(self.resume_from)
                              if self.resume_from else None)
        finally:
            ctx.ctl.training = False
        self.wall = time.perf_counter() - t0
        if ctx.ctl.stop_requested:
            ctx.rec.log("cancelled: checkpoint saved")
            return False
        ctx.rec.emit("phase", ctx.step, name="saving")
        return True

    def predict(self) -> Prediction:
        from bertui.core.training import batched_forward, inference_device

        ctx = self.ctx
        # Without the Trainer's autocast wrapper: the precision is the one that keeps the
        # trained model's answers (the run's, or fp32), as the classifier pane checks it too.
        model = ctx.trainer.accelerator.unwrap_model(ctx.trainer.model, keep_fp32_wrapper=False)
        self.precision = inference_device(model, ctx.evaluation, ctx.pad_id, ctx.device)
        if self.precision is not ctx.device:
            ctx.rec.log(f"the fine-tuned model is measured in {self.precision.reason}", "warning")
        probs, _ = batched_forward(
            model, ctx.evaluation, ctx.pad_id, ctx.eval_batch_size, device=self.precision
        )
        return Prediction.of_probs(probs)

    def fields(self) -> dict[str, Any]:
        history = self.ctx.trainer.state.log_history
        eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
        precision = self.precision.reason or self.precision.precision
        return {"note": "fine-tuned", "precision": precision,
                **({"eval_loss": eval_losses[-1]} if eval_losses else {})}

    def train_stats(self) -> dict[str, Any]:
        """metrics.json's ``train``: what this session's training did, and how fast (the time
        the Trainer spent evaluating and checkpointing left out)."""
        ctx = self.ctx
        state, hyper = ctx.trainer.state, ctx.hyper
        steps_done = max(0, state.global_step - self.start_step)
        train_seconds = max(1e-9, self.wall - ctx.trainer.paused_seconds)
        samples = len(ctx.train) * hyper.epochs * steps_done / max(1, state.max_steps)
        return {
            "train_samples_per_s": round(samples / train_seconds, 2),
            "train_seconds": round(train_seconds, 2),
            "wall_seconds": round(self.wall, 2),
            "tokens_per_s": round(samples * ctx.train.mean_length / train_seconds, 1),
            "steps": state.global_step,
            "device": ctx.device.name,
            "precision": ctx.device.precision,
            "precision_reason": ctx.device.reason,
            "batch_size": ctx.trainer.args.per_device_train_batch_size,
            "world_size": ctx.trainer.args.world_size,
            "global_batch_size": ctx.samples_per_step,
            "learning_rate": hyper.learning_rate,
            "epochs": hyper.epochs,
            "n_train": len(ctx.train),
            "resumed": self.resume_from is not None,
        }

    def cost(self, seconds: float) -> dict[str, Any]:
        stats = self.train_stats()
        return {**super().cost(seconds), "train_seconds": stats["train_seconds"],
                "train_samples_per_s": stats["train_samples_per_s"]}

    def save(self, prediction: Prediction) -> None:
        from bertui.core.metrics import misclassified
        from bertui.core.vocab import weight_decay_factor

        ctx = self.ctx
        ctx.metrics["errors"] = misclassified(
            ctx.prepared.eval.texts, ctx.evaluation.labels, prediction.probs, ctx.labels,
            ERROR_SAMPLE,
        )
        ctx.metrics["train"] = self.train_stats()
        model = ctx.trainer.model
        if ctx.compacted is not None:
            ctx.compacted.expand(weight_decay_factor(ctx.trainer, ctx.compacted.compact.weight))
        if ctx.dropout_swap is not None:
            ctx.dropout_swap.undo()
        model.config.id2label = dict(ctx.id2label)
        model.config.label2id = {v: k for k, v in ctx.id2label.items()}
        model.save_pretrained(str(self.model_dir), safe_serialization=True)
        ctx.tokenizer.save_pretrained(str(self.model_dir))

    def summary(self, report: dict[str, Any]) -> str:
        sps = self.ctx.metrics["train"]["train_samples_per_s"]
        return f"fine-tuned: accuracy {report['accuracy']:.4f} ({sps} samples/s)"
