"""The ``pretrained`` arm: the model as loaded, measured with no training at all.

A plain encoder gets a seeded, untrained classification head (near chance, and said so in the
note); a checkpoint with a head for these labels keeps it. It is measured through the Trainer's
``predict``, as a hand-written Trainer script measures its starting point. It keeps the head
(and every other weight ``from_pretrained`` initialised fresh) in ``pretrained_head.safetensors``
so the very same model can be rebuilt for ``bertui predict`` and the classifier pane.
"""

from __future__ import annotations

from typing import Any

from bertui.core.arms.base import Arm
from bertui.core.predictions import Prediction
from bertui.core.runs import HEAD_FILE


class Pretrained(Arm):
    name = "pretrained"
    title = "pre-trained"
    keeps = (HEAD_FILE,)

    def fresh_keys(self) -> set[str]:
        """The weights ``from_pretrained`` did not find (or found for other labels)."""
        loading = self.ctx.loading
        missing = set(loading.get("missing_keys", []))
        return missing | {key[0] for key in loading.get("mismatched_keys", [])}

    def predict(self) -> Prediction:
        from bertui.core.shared import pretrained_prediction

        self.precision = self.ctx.baseline_device()
        return pretrained_prediction(self.ctx, self.measure)

    def measure(self) -> Prediction:
        """Through the Trainer's ``predict``, in the baseline's precision."""
        import numpy as np

        trainer = self.ctx.trainer
        out = predict_in(trainer, self.precision.precision != "fp32")
        logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
        logits = in_eval_order(trainer, np.asarray(logits), np.asarray(out.label_ids))
        if logits is None:  # an order the Trainer did not let us follow: measure it directly
            from bertui.core.training import batched_forward

            ctx = self.ctx
            probs, _ = batched_forward(ctx.model, ctx.evaluation, ctx.pad_id, ctx.eval_batch_size,
                                       device=self.precision)
            return Prediction.of_probs(probs)
        shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
        return Prediction(logits.argmax(-1).astype(np.int64), probs.astype(np.float32))

    def fields(self) -> dict[str, Any]:
        fresh = bool(self.fresh_keys())
        note = "untrained classification head" if fresh else "head as loaded"
        head_note = getattr(self.ctx.model, "bertui_head_note", None)
        if head_note and not fresh:
            note += f" ({head_note})"
        return {"note": note, "precision": self.precision.reason or self.precision.precision}

    def save(self, prediction: Prediction) -> None:
        from safetensors.torch import save_file

        from bertui.core.training import classifier_head_state

        model, fresh = self.ctx.model, self.fresh_keys()
        head = classifier_head_state(model)
        weights = {
            k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in fresh
        }
        save_file({**head, **weights}, str(self.ctx.run.path / HEAD_FILE))

    def summary(self, report: dict[str, Any]) -> str:
        return f"pre-trained ({report['note']}): accuracy {report['accuracy']:.4f}"


def predict_in(trainer: Any, low_precision: bool) -> Any:
    """``trainer.predict`` of its eval split, in the run's bf16/fp16 autocast or (where
    ``low_precision`` is False) in fp32: the Trainer's accelerator then leaves the model's
    forward unwrapped (it wraps it when it prepares the model, on the first predict or train;
    training wraps it then)."""
    accelerator = trainer.accelerator
    amp = accelerator.native_amp
    accelerator.native_amp = amp and low_precision
    try:
        return trainer.predict(trainer.eval_dataset)
    finally:
        accelerator.native_amp = amp


def in_eval_order(trainer: Any, rows: Any, label_ids: Any) -> Any:
    """``Trainer.predict`` visits the eval rows in its eval sampler's order (length-grouped
    batches when training groups by length): ``rows`` put back in the eval split's order, or
    None when that order cannot be told (the labels it returned do not follow it)."""
    import numpy as np

    dataset = trainer.eval_dataset
    sampler = trainer._get_eval_sampler(dataset)  # a fresh one draws the same order again
    order = np.asarray(list(sampler) if sampler is not None else range(len(dataset)))
    labels = np.asarray(dataset.encoded.labels)
    if len(order) != len(rows) or not np.array_equal(labels[order], label_ids):
        return None
    ordered = np.empty_like(rows)
    ordered[order] = rows
    return ordered
