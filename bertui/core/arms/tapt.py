"""The ``tapt`` arm: task-adaptive pre-training (Gururangan et al. 2020, "Don't Stop
Pretraining"), then the fine-tune's recipe from the adapted weights.

**Adapt.** Masked-LM training of the checkpoint on the task's own texts: the training split's
texts plus the optional unlabeled corpus (``--unlabeled``), never an eval text (any eval text
found in the corpus is dropped, and the log says how many), each text once. 15 % of the tokens
are masked (80 % ``[MASK]``, 10 % a random token, 10 % kept), redrawn every time a text is
batched (transformers' ``DataCollatorForLanguageModeling``), so every pass masks anew. A
checkpoint without a masked-LM head (the embedded MiniLM is a sentence-transformers encoder)
gets a fresh, seeded one, which trains alone for the first 10 % of the steps (else its random
gradients reach the pre-trained weights, the input embeddings too, which its decoder shares);
the note and the log say so. Its loss goes out as ``mlm`` events (the Monitor's MLM curve).

**Budget.** The paper's TAPT is 100 passes over the task's texts at batch 256, learning rate
1e-4, 6 % warmup, 15 % masking. Kept: the masking, the 6 % warmup, and a learning rate of the
model's size (the fine-tune's: 1e-4 for MiniLM, the paper's). Scaled down for small data on
small hardware: 10 passes at the run's batch (16 on CPU, 64 on GPU), at most 500 steps (8,000
texts at batch 16), so that adapting costs about two to three fine-tunes on a CPU;
``--tapt-steps N`` sets the number of steps instead.

**Then** the classifier is the checkpoint's (its pooler, a seeded head) with the adapted encoder
weights, fine-tuned exactly as the ``finetuned`` arm is (``bertui.core.arms.retrained``). A
resumed run goes on from the arm's last checkpoint: of its masked-LM training
(``arms/tapt/mlm/``) or, once that is done, of its fine-tune. What the adaptation did is kept in
``arms/tapt/mlm.json`` (and in the arm's report, ``mlm``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from bertui.core.arms.retrained import ArmRecorder, Retrained
from bertui.core.errors import BadInput
from bertui.core.runs import ARMS_DIR, atomic_write_json, last_checkpoint

MLM_PROBABILITY = 0.15
PASSES = 10  # the paper's 100, scaled down
MAX_STEPS = 500
WARMUP = 0.06  # the paper's
HEAD_FIRST = 0.1  # of the budget: a fresh masked-LM head trains alone first
MLM_DIR = "mlm"  # its masked-LM checkpoints, under arms/tapt/
MLM_FILE = "mlm.json"  # what the adaptation did
FRESH_HEAD = "a fresh masked-LM head (the checkpoint has none)"


def mlm_corpus(train: list[str], unlabeled: list[str], evaluation: list[str]
               ) -> tuple[list[str], dict[str, int]]:
    """The texts to adapt on: train then unlabeled, each once, without any eval text; and the
    counts (texts, from the unlabeled corpus, eval texts dropped)."""
    held = {t.strip() for t in evaluation}
    seen: set[str] = set()
    texts: list[str] = []
    dropped = from_unlabeled = 0
    for i, text in enumerate([*train, *unlabeled]):
        key = text.strip()
        if key in held:
            dropped += 1
        elif key and key not in seen:
            seen.add(key)
            texts.append(text)
            from_unlabeled += i >= len(train)
    return texts, {"texts": len(texts), "unlabeled": from_unlabeled, "dropped_eval": dropped}


def default_steps(texts: int, batch: int) -> int:
    """The default budget: ``PASSES`` passes over the texts, at most ``MAX_STEPS`` steps."""
    return max(1, min(MAX_STEPS, PASSES * math.ceil(texts / max(1, batch))))


class MLMTexts:
    """Token ids for the masked-LM collator (no labels: it makes them)."""

    def __init__(self, input_ids: list[list[int]]) -> None:
        self.input_ids = input_ids

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[i]}


def head_first(head: list[Any], steps: int) -> Any:
    """A Trainer callback: for the first ``steps`` optimizer steps only the fresh head's own
    weights move (every other gradient is dropped before the step; AdamW skips a weight that
    has none), so that a random head's gradients do not reach the pre-trained weights."""
    from transformers import TrainerCallback

    own = {id(p) for p in head}

    class HeadFirst(TrainerCallback):
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any,
                                  model: Any = None, **kwargs: Any) -> None:
            if state.global_step < steps and model is not None:
                for param in model.parameters():
                    if id(param) not in own:
                        param.grad = None

    return HeadFirst()


class MLMRecorder(ArmRecorder):
    """The tapt arm's recorder during its masked-LM training: the Trainer's loss goes out as
    ``mlm`` events (its progress and checkpoints as usual, with ``arm``)."""

    def emit(self, type_: str, step: int | None = None, **fields: Any) -> None:
        super().emit("mlm" if type_ == "train" else type_, step, **fields)


class Tapt(Retrained):
    name = "tapt"
    title = "TAPT"
    keeps = (f"{ARMS_DIR}/tapt",)

    def prepare(self) -> None:
        super().prepare()
        self.mlm: dict[str, Any] = {}
        self.head: list[Any] = []  # a fresh masked-LM head's weights (none: it has its own)

    def build_model(self) -> Any:
        from bertui.core import models

        ctx = self.ctx
        encoder = None
        if not self.resuming:  # else its fine-tune checkpoint holds the adapted weights
            adapted = self.adapt()
            if adapted is None:
                return None
            encoder = adapted.base_model.state_dict()
            del adapted
        assert ctx.source.path is not None
        model = models.load_classifier(
            ctx.source.path, id2label=ctx.id2label, seed=ctx.hyper.seed,
            allow_pickle=ctx.options.allow_pickle,
            trust_remote_code=ctx.options.trust_remote_code,
        )
        if encoder is not None:
            missing, unexpected = model.base_model.load_state_dict(encoder, strict=False)
            if unexpected or any(not key.startswith("pooler.") for key in missing):
                raise BadInput("tapt: the masked-LM encoder does not fit the classifier's "
                               f"({len(missing)} weights missing, {len(unexpected)} left over)")
        self.mlm = self.mlm or self.read_mlm()
        fresh = f"; {FRESH_HEAD}" if self.mlm.get("fresh_head") else ""
        self.note = f"task-adaptive pre-training ({self.mlm.get('steps', '?')} MLM steps{fresh})"
        return model

    def read_mlm(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.folder / MLM_FILE).read_text()))
        except (OSError, ValueError):
            return {}

    # --- the masked-LM training ---------------------------------------------------------------

    def load_mlm_model(self) -> Any:
        """The checkpoint as a masked-LM model (a fresh, seeded head where it has none)."""
        import torch
        from transformers import AutoModelForMaskedLM

        from bertui.core.models import quiet_transformers

        ctx = self.ctx
        if ctx.tokenizer.mask_token is None:
            raise BadInput("tapt needs a tokenizer with a mask token; this model's has none")
        quiet_transformers()
        torch.manual_seed(ctx.hyper.seed)
        try:
            model, loading = AutoModelForMaskedLM.from_pretrained(
                str(ctx.source.path), output_loading_info=True, dtype=torch.float32,
                use_safetensors=None if ctx.options.allow_pickle else True,
                trust_remote_code=ctx.options.trust_remote_code,
            )
        except ValueError as exc:  # a model type with no masked-LM class
            raise BadInput(f"tapt: this model has no masked-LM form ({exc})") from None
        base = model.base_model_prefix + "."
        fresh = {k for k in loading["missing_keys"] if not k.startswith(base)}
        self.head = [p for name, p in model.named_parameters() if name in fresh]
        self.mlm["fresh_head"] = bool(fresh)
        if self.mlm["fresh_head"]:
            ctx.rec.log(f"TAPT: {FRESH_HEAD}")
        return model.to(ctx.device.kind)

    def adapt(self) -> Any:
        """Masked-LM training on the corpus; the adapted model, or None when cancelled."""
        ctx = self.ctx
        texts, counts = mlm_corpus(ctx.prepared.train.texts, ctx.prepared.unlabeled,
                                   ctx.prepared.eval.texts)
        ctx.rec.log(f"TAPT: masked-LM training on {counts['texts']} texts "
                    f"({counts['unlabeled']} from the unlabeled corpus); left out as eval "
                    f"texts: {counts['dropped_eval']}")
        model = self.load_mlm_model()
        resume_from = last_checkpoint(self.folder / MLM_DIR) if ctx.ctl.resume else None
        if resume_from is not None:
            ctx.rec.log(f"TAPT: the masked-LM training goes on from {resume_from.name}")
        trainer = self.mlm_trainer(model, texts, resume_from)
        ctx.ctl.training = True
        t0 = time.perf_counter()
        try:
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        finally:
            ctx.ctl.training = False
        seconds = max(1e-9, time.perf_counter() - t0 - trainer.paused_seconds)
        if ctx.ctl.stop_requested:
            ctx.rec.log("TAPT: cancelled during masked-LM training: checkpoint saved")
            return None
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        steps = trainer.state.global_step
        self.mlm.update(
            counts, steps=steps, batch_size=trainer.args.per_device_train_batch_size,
            learning_rate=trainer.args.learning_rate, warmup=WARMUP,
            mlm_probability=MLM_PROBABILITY, first_loss=losses[0] if losses else None,
            last_loss=losses[-1] if losses else None, seconds=round(seconds, 2),
            samples_per_s=round(steps * ctx.samples_per_step / seconds, 2),
        )
        from bertui.core.distributed import is_main

        if is_main():  # rank 0 of a torchrun run alone writes
            atomic_write_json(self.folder / MLM_FILE, self.mlm)
            shutil.rmtree(self.folder / MLM_DIR, ignore_errors=True)
        return model.cpu()

    def mlm_trainer(self, model: Any, texts: list[str], resume_from: Path | None) -> Any:
        """The Trainer of the masked-LM training: the run's arguments with this budget, 6 %
        warmup, no evaluation; its progress and loss as events, its checkpoints for resume."""
        import dataclasses

        from transformers import DataCollatorForLanguageModeling

        from bertui.core.runs import bertui_home
        from bertui.core.trainer_hooks import EpochOrder, EventsCallback, TimedTrainer
        from bertui.core.training import encode, make_training_args, tokenizer_fingerprint

        ctx = self.ctx
        assert ctx.source.path is not None
        encoded = encode(ctx.tokenizer, texts, [0] * len(texts), ctx.hyper.max_length,
                         bertui_home() / "cache" / "tokens", tokenizer_fingerprint(ctx.source.path))
        hyper = dataclasses.replace(ctx.hyper, warmup_ratio=WARMUP)
        args = make_training_args(hyper, ctx.device, self.folder / MLM_DIR, len(encoded))
        budget = ctx.config.get("train", {}).get("tapt_steps") or default_steps(
            len(encoded), args.per_device_train_batch_size * ctx.device.count)
        args = dataclasses.replace(args, max_steps=int(budget), eval_strategy="no",
                                   save_strategy="no",
                                   logging_steps=max(1, int(budget) // hyper.logging_points))
        rec = MLMRecorder(ctx.rec, self.name, self.title)
        events = EventsCallback(
            rec.emit, rec.live, ctx.ctl, samples_per_step=ctx.samples_per_step,
            tokens_per_sample=encoded.mean_length,
            checkpoint_seconds=hyper.checkpoint_minutes * 60,
        )
        order = EpochOrder()
        order.resume_from = resume_from
        callbacks: list[Any] = [order, events]
        if self.head:
            first = int(budget * HEAD_FIRST)
            self.mlm["head_first_steps"] = first
            callbacks.append(head_first(self.head, first))
        cuda = ctx.device.kind == "cuda"
        trainer = TimedTrainer(
            model=model, args=args, train_dataset=MLMTexts(encoded.input_ids),
            data_collator=DataCollatorForLanguageModeling(
                ctx.tokenizer, mlm_probability=MLM_PROBABILITY,
                pad_to_multiple_of=8 if cuda else None),
            processing_class=ctx.tokenizer, callbacks=callbacks,
        )
        events.trainer = trainer
        return trainer

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "mlm": self.mlm}

    def cost(self, seconds: float) -> dict[str, Any]:
        """The fine-tune's cost, and the masked-LM training's seconds and samples/s (its wall
        time, ``seconds``, covers both)."""
        return {**super().cost(seconds), "mlm_seconds": self.mlm.get("seconds"),
                "mlm_samples_per_s": self.mlm.get("samples_per_s")}
