"""The ``setfit`` arm: SetFit, the few-shot method a practitioner would try instead of fine-tuning.

It runs the ``setfit`` library (an optional extra: ``pip install 'bertui[setfit]'``) on the
run's model as a sentence-transformers body: the checkpoint's own modules where it is a
sentence-transformers checkpoint (the embedded MiniLM: mean pooling, then normalisation), else
the encoder with mean pooling. SetFit's recipe: one epoch of contrastive tuning of the body on
sentence pairs (its "oversampling": as many same-class as other-class pairs, batch 16, its
learning rate), then a logistic-regression head on the tuned body's embeddings of the same rows.

Bounded so that large data stays affordable (SetFit's pairs grow with the square of the rows):
a seeded sample of at most ``ROWS_PER_CLASS`` training rows per class (all of a smaller class),
and at most ``MAX_PAIRS`` sentence pairs (SetFit's ``max_steps``; 100 steps of 16). With 16
rows per class nothing is cut: 544 pairs, 34 steps.

SetFit's own ``Trainer.evaluate`` loads ``evaluate``'s metric from the hub (and fails offline):
the arm only predicts, and the engine scores it with bertui's report like every arm. It keeps
``arms/setfit/``: the tuned body as sentence-transformers saves it (safetensors, tokenizer,
pooling) and the head as plain arrays in ``head.safetensors`` (``weight`` K×H, ``bias`` K: the
probe's form), not SetFit's joblib pickle; ``load_setfit`` reads both back for ``bertui predict``
and the classifier pane with no pickle and no ``setfit`` import.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertui.core.arms.base import Arm
from bertui.core.errors import BadInput
from bertui.core.predictions import Prediction
from bertui.core.runs import ARMS_DIR
from bertui.core.schema import missing_extras

ROWS_PER_CLASS = 64  # the largest few-shot budget of the SetFit paper (8, 16, 32, 64 a class)
MAX_PAIRS = 1600  # contrastive pairs at most: 100 steps of 16
BATCH_SIZE = 16  # SetFit's pair batch, where the run sets none
HEAD_FILE = "head.safetensors"
NOTE = "SetFit: contrastive sentence-encoder tuning, logistic-regression head"


class SetFit(Arm):
    name = "setfit"
    title = "SetFit"
    keeps = (f"{ARMS_DIR}/setfit",)

    def prepare(self) -> None:
        super().prepare()
        missing = missing_extras([self.name])
        if missing:
            raise BadInput(missing, field="arms")
        ctx = self.ctx
        self.t0 = time.perf_counter()
        self.rows = per_class_sample(ctx.prepared.train.labels, ROWS_PER_CLASS, ctx.hyper.seed)
        self.batch_size = ctx.hyper.batch_size or BATCH_SIZE
        natural = pair_count([ctx.prepared.train.labels[i] for i in self.rows])
        self.max_steps = -1 if natural <= MAX_PAIRS else max(1, MAX_PAIRS // self.batch_size)
        self.body: Any = None
        self.head: dict[str, Any] = {}
        self.pairs = self.steps = 0
        self.loss: float | None = None
        self.train_seconds = 0.0
        ctx.rec.log(f"setfit: {len(self.rows)} of {len(ctx.prepared.train)} training rows "
                    f"(at most {ROWS_PER_CLASS} a class), "
                    f"{min(natural, MAX_PAIRS)} sentence pairs, batch {self.batch_size}")

    def train(self) -> bool:
        from bertui.core.training import fit_probe

        ctx = self.ctx
        train = ctx.prepared.train
        texts = [train.texts[i] for i in self.rows]
        labels = [train.labels[i] for i in self.rows]
        t0 = time.perf_counter()
        self.body = load_body(ctx, ctx.source.path)
        with tempfile.TemporaryDirectory(prefix="bertui-setfit-") as scratch:
            trainer = self.trainer(scratch)
            ctx.ctl.training = True
            try:
                trainer.train_embeddings(texts, labels)
            finally:
                ctx.ctl.training = False
        if ctx.ctl.stop_requested:
            ctx.rec.log("cancelled during SetFit's training (it starts again on resume)")
            return False
        state = trainer.st_trainer.state
        self.steps = int(state.global_step)
        losses = [h["train_loss"] for h in state.log_history if "train_loss" in h]
        self.loss = round(float(losses[-1]), 4) if losses else None
        self.pairs = min(len(trainer.st_trainer.train_dataset), self.steps * self.batch_size)
        features = encode(self.body, texts, ctx.eval_batch_size)
        self.head = fit_probe(features, labels, len(ctx.labels), ctx.hyper.seed)
        self.train_seconds = time.perf_counter() - t0
        return True

    def trainer(self, scratch: str) -> Any:
        """SetFit's Trainer over the body: the run's seed, stopped by a cancel, quiet, saving
        nothing (``scratch``: a folder it may write to, removed after training)."""
        from setfit import SetFitModel, Trainer, TrainingArguments
        from transformers import ProgressCallback

        ctx = self.ctx
        args = TrainingArguments(
            output_dir=scratch, batch_size=self.batch_size, num_epochs=1,
            max_steps=self.max_steps, seed=ctx.hyper.seed, report_to="none",
            save_strategy="no", logging_strategy="no", show_progress_bar=False,
        )
        model = SetFitModel(model_body=self.body, labels=ctx.labels)
        trainer = Trainer(model=model, args=args, callbacks=[stop_hook(ctx.ctl)])
        trainer.st_trainer.remove_callback(ProgressCallback)  # no progress bars in worker.log
        trainer.st_trainer.args.dataloader_pin_memory = ctx.device.kind == "cuda"
        return trainer

    def predict(self) -> Prediction:
        from bertui.core.training import probe_probs

        features = encode(self.body, self.ctx.prepared.eval.texts, self.ctx.eval_batch_size)
        return Prediction.of_probs(probe_probs(self.head, features))

    def fields(self) -> dict[str, Any]:
        return {"note": NOTE, "train_rows": len(self.rows), "pairs": self.pairs,
                "steps": self.steps, "pair_loss": self.loss,
                "seconds": round(time.perf_counter() - self.t0, 2)}

    def cost(self, seconds: float) -> dict[str, Any]:
        """The training samples are the contrastive phase's sentence pairs."""
        samples = self.pairs / max(1e-9, self.train_seconds)
        return {**super().cost(seconds), "train_seconds": round(self.train_seconds, 2),
                "train_samples_per_s": round(samples, 2)}

    def save(self, prediction: Prediction) -> None:
        import numpy as np
        import torch
        from safetensors.torch import save_file

        self.body.save(str(self.folder), create_model_card=False, safe_serialization=True)
        save_file(
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.head.items()},
            str(self.folder / HEAD_FILE),
            metadata={"head": "logistic regression on the body's sentence embeddings"},
        )

    def summary(self, report: dict[str, Any]) -> str:
        return (f"SetFit: accuracy {report['accuracy']:.4f} ({report['train_rows']} rows, "
                f"{report['pairs']} pairs)")


def per_class_sample(labels: list[int], per_class: int, seed: int) -> list[int]:
    """The indices of a seeded sample of at most ``per_class`` rows of each label, in order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = np.asarray(labels)
    chosen = [
        rng.choice(rows, size=min(per_class, len(rows)), replace=False)
        for rows in (np.flatnonzero(ids == label) for label in sorted(set(labels)))
    ]
    return sorted(int(i) for i in np.concatenate(chosen))


def pair_count(labels: list[int]) -> int:
    """How many pairs SetFit's oversampling draws from rows with these labels: twice the larger
    of its same-class pairs (each row with itself included) and its other-class pairs."""
    from collections import Counter

    sizes = list(Counter(labels).values())
    same = sum(n * (n + 1) // 2 for n in sizes)
    other = (sum(sizes) ** 2 - sum(n * n for n in sizes)) // 2
    return 2 * max(same, other)


def stop_hook(ctl: Any) -> Any:
    """A Trainer callback that ends SetFit's training at the step's end once a stop is asked."""
    from transformers import TrainerCallback

    class StopHook(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if ctl.stop_requested:
                control.should_training_stop = True
            return control

    return StopHook()


def load_body(ctx: Any, path: Path | str | None) -> Any:
    """The model at ``path`` as a sentence-transformers body on the run's device: local files
    only, safetensors unless the run allows pickled weights, the run's max length."""
    return sentence_encoder(
        path, device=ctx.device.kind, max_length=ctx.hyper.max_length,
        trust_remote_code=ctx.options.trust_remote_code,
        allow_pickle=ctx.options.allow_pickle,
    )


def sentence_encoder(
    path: Path | str | None, *, device: str | None, max_length: int,
    trust_remote_code: bool = False, allow_pickle: bool = False,
) -> Any:
    from sentence_transformers import SentenceTransformer

    if path is None:
        raise BadInput("the SetFit arm needs the model on this machine")
    body = SentenceTransformer(
        str(path), device=device, trust_remote_code=trust_remote_code, local_files_only=True,
        model_kwargs={} if allow_pickle else {"use_safetensors": True},
    )
    body.max_seq_length = max_length
    return body


def encode(body: Any, texts: list[str], batch_size: int) -> Any:
    """The body's sentence embeddings of ``texts`` (float32, n×H), as SetFit's head reads them."""
    return body.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                       show_progress_bar=False)


@dataclass
class SetFitModelFiles:
    """A run's kept SetFit model (``arms/setfit/``): ``predict_proba(texts)`` → n×K."""

    body: Any
    head: dict[str, Any]

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> Any:
        from bertui.core.training import probe_probs

        return probe_probs(self.head, encode(self.body, texts, batch_size))


def load_setfit(
    folder: Path, *, max_length: int, trust_remote_code: bool = False
) -> SetFitModelFiles | None:
    """The SetFit model a run keeps in ``folder`` on the CPU (None where it has none)."""
    from safetensors.numpy import load_file

    if not (folder / HEAD_FILE).exists():
        return None
    body = sentence_encoder(folder, device="cpu", max_length=max_length,
                            trust_remote_code=trust_remote_code)
    return SetFitModelFiles(body.eval(), load_file(str(folder / HEAD_FILE)))
