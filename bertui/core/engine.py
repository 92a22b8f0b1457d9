"""One experiment from a run directory's config: baselines, fine-tuning, final metrics.

``run_experiment`` is what the worker process calls; it is the only training code path (the
TUI and the CLI only start workers and read their run directories).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from bertui.core import data as data_mod
from bertui.core import models
from bertui.core.errors import BadInput
from bertui.core.runs import Run, atomic_write_json, bertui_home, last_checkpoint
from bertui.core.training import (
    Encoded,
    Hyper,
    batched_forward,
    classifier_head_state,
    encode,
    fit_probe,
    make_epoch_order_callback,
    make_events_callback,
    make_trainer,
    make_training_args,
    pick_device,
    probe_probs,
    tokenizer_fingerprint,
)
from bertui.core.vocab import CompactedModel, CompactVocab, can_compact, weight_decay_factor

HEAD_FILE = "pretrained_head.safetensors"
PROBE_FILE = "probe.safetensors"
ERROR_SAMPLE = 50


class Recorder(Protocol):
    live: dict[str, Any]

    def set(self, **fields: Any) -> None: ...
    def emit(self, type_: str, step: int | None = None, **fields: Any) -> None: ...
    def log(self, message: str, level: str = "info") -> None: ...


class Control(Protocol):
    stop_requested: bool
    training: bool
    resume: bool

    def check_cancel(self) -> None: ...


def prepare_data(config: dict[str, Any]) -> data_mod.PreparedData:
    d = config.get("data", {})
    hyper = config.get("train", {})
    return data_mod.prepare(
        d["train"],
        d.get("eval"),
        text_column=d.get("text_column"),
        label_column=d.get("label_column"),
        split=d.get("split"),
        eval_split=d.get("eval_split"),
        holdout=d.get("holdout", data_mod.DEFAULT_HOLDOUT),
        max_train_samples=d.get("max_train_samples"),
        max_eval_samples=d.get("max_eval_samples"),
        seed=hyper.get("seed", 0),
    )


def run_experiment(run: Run, rec: Recorder, ctl: Control) -> bool:
    """Measure the pre-trained model and the linear probe, fine-tune, measure again.

    Returns True when the run finished, False when it was cancelled (a checkpoint is saved).
    """
    import numpy as np
    import torch

    config = run.config
    hyper = Hyper.from_config(config.get("train", {}))
    mcfg = config.get("model", {})
    allow_pickle = bool(mcfg.get("allow_pickle", False))
    trust = bool(mcfg.get("trust_remote_code", False))
    if trust:
        rec.log("trust_remote_code is on: code from the model repository will run", "warning")

    rec.emit("phase", 0, name="loading")
    device = pick_device(hyper.precision)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    source = models.resolve_model(
        mcfg.get("spec", models.DEFAULT_SPEC),
        allow_pickle=allow_pickle,
        trust_remote_code=trust,
        download=True,
    )
    assert source.path is not None
    rec.log(f"model {source.label}; device {device.name} ({device.precision})")
    tokenizer = models.load_tokenizer(source.path, trust_remote_code=trust)
    prepared = prepare_data(config)
    stored = config.get("labels", {}).get("id2label")
    id2label = prepared.id2label
    labels = [id2label[i] for i in sorted(id2label)]
    if stored and {int(k): v for k, v in stored.items()} != id2label:
        # config.toml's map names the saved model's outputs, and a resumed run's checkpoint
        # head rows and baselines mean it: a run never trains on another one.
        then, now = data_mod.few_labels(stored.values()), data_mod.few_labels(labels)
        raise BadInput(f"the data's labels changed since the run was created ({then} then, "
                       f"{now} now); put the data back or start a new run")
    if prepared.report.get("eval_only_labels"):
        rec.log(f"eval labels that never occur in training (the model cannot predict them): "
                f"{data_mod.few_labels(prepared.report['eval_only_labels'])}", "warning")
    ctl.check_cancel()

    rec.emit("phase", 0, name="tokenizing")
    cache = bertui_home() / "cache" / "tokens"
    fp = tokenizer_fingerprint(source.path)
    train = encode(
        tokenizer, prepared.train.texts, prepared.train.labels, hyper.max_length, cache, fp
    )
    evaluation = encode(
        tokenizer, prepared.eval.texts, prepared.eval.labels, hyper.max_length, cache, fp
    )
    truncated = {"train": train.truncated, "eval": evaluation.truncated}
    if train.truncated or evaluation.truncated:
        rec.log(
            f"truncated to {hyper.max_length} tokens: {train.truncated} train and "
            f"{evaluation.truncated} eval texts"
        )
    pad_id = tokenizer.pad_token_id or 0

    model, loading = models.load_classifier(
        source.path,
        id2label=id2label,
        allow_pickle=allow_pickle,
        trust_remote_code=trust,
        seed=hyper.seed,
        output_loading_info=True,
    )
    model.to(device.kind if device.kind != "cpu" else "cpu")
    compacted, pad_id, train, evaluation = compact_vocabulary(
        run, rec, hyper, model, tokenizer, train, evaluation, pad_id, resume=ctl.resume
    )
    fast = None
    if hyper.fast_dropout and device.kind == "cpu":
        from bertui.core.dropout import FastDropout

        fast = FastDropout.install(model)
        if fast.active:
            rec.log(f"fast dropout: {fast.describe()}")
    if hyper.learning_rate is None:
        hyper.learning_rate = models.default_learning_rate(
            getattr(model.config, "hidden_size", None)
        )
        if device.kind == "cuda" and not hyper.batch_size:
            hyper.learning_rate *= 2.0  # sqrt scaling for the 4x larger GPU batch

    metrics = run.metrics() if ctl.resume else {}
    metrics.update(
        labels=labels,
        eval_rows=len(evaluation),
        eval_source=prepared.eval_source,
        data=prepared.report,
        truncated=truncated,
        text_column=prepared.text_column,
        label_column=prepared.label_column,
    )
    eval_bs = hyper.eval_batch_size or 64

    # The Trainer exists before the baselines: the pre-trained model is measured through it,
    # exactly as a hand-written Trainer script measures its starting point.
    args = make_training_args(hyper, device, run.checkpoints_dir, len(train))
    rec.set(batch_size=args.per_device_train_batch_size)
    samples_per_step = args.per_device_train_batch_size * max(
        1, device.count if device.kind == "cuda" else 1
    )
    callback = make_events_callback(
        rec.emit,
        rec.live,
        samples_per_step=samples_per_step,
        tokens_per_sample=train.mean_length,
        checkpoint_seconds=hyper.checkpoint_minutes * 60,
        stop_requested=lambda: ctl.stop_requested,
    )
    epoch_order = make_epoch_order_callback()
    trainer = make_trainer(
        model,
        args,
        train,
        evaluation,
        tokenizer,
        [callback, epoch_order],
        pad_multiple=8 if device.kind == "cuda" else None,
        pad_id=pad_id,
    )
    callback.trainer = trainer

    if "pretrained" not in metrics:
        from safetensors.torch import save_file

        from bertui.core.metrics import classification_report

        rec.emit("phase", 0, name="pretrained")
        missing = set(loading.get("missing_keys", [])) if isinstance(loading, dict) else set()
        if isinstance(loading, dict):  # a head of its own for other labels: replaced
            missing |= {key[0] for key in loading.get("mismatched_keys", [])}
        head = classifier_head_state(model)
        fresh = {
            k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in missing
        }
        save_file({**head, **fresh}, str(run.path / HEAD_FILE))
        out = trainer.predict(trainer.eval_dataset)
        logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
        report = classification_report(
            np.asarray(out.label_ids).tolist(), np.asarray(logits).argmax(-1).tolist(), labels
        )
        report["note"] = "untrained classification head" if missing else "head as loaded"
        if getattr(model, "bertui_head_note", None) and not missing:
            report["note"] += f" ({model.bertui_head_note})"
        metrics["pretrained"] = report
        metrics["metrics_backend"] = report.pop("backend")
        rec.emit(
            "baseline",
            0,
            name="pretrained",
            accuracy=report["accuracy"],
            macro_f1=report["macro_f1"],
        )
        rec.log(f"pre-trained ({report['note']}): accuracy {report['accuracy']:.4f}")
        if hyper.probe:
            rec.emit("phase", 0, name="probe")
            t0 = time.perf_counter()
            _, feats = batched_forward(
                model, evaluation, pad_id, eval_bs, features=True, check=ctl.check_cancel
            )
            _, train_feats = batched_forward(
                model, train, pad_id, eval_bs, features=True, check=ctl.check_cancel
            )
            probe = fit_probe(train_feats, train.labels, len(labels), hyper.seed)
            save_file(
                {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in probe.items()},
                str(run.path / PROBE_FILE),
                metadata={"pooling": "mean"},
            )
            p_pred = probe_probs(probe, feats).argmax(-1).tolist()
            p_report = classification_report(evaluation.labels, p_pred, labels)
            p_report.pop("backend")
            p_report.update(
                note="frozen encoder, mean-pooled features, logistic regression",
                seconds=round(time.perf_counter() - t0, 2),
            )
            metrics["probe"] = p_report
            rec.emit(
                "baseline",
                0,
                name="probe",
                accuracy=p_report["accuracy"],
                macro_f1=p_report["macro_f1"],
            )
            rec.log(f"linear probe: accuracy {p_report['accuracy']:.4f}")
        else:
            metrics["probe"] = None
        metrics.setdefault("finetuned", None)
        atomic_write_json(run.metrics_path, metrics)
    ctl.check_cancel()

    # --- fine-tuning ---------------------------------------------------------------------------
    resume_from = last_checkpoint(run.checkpoints_dir) if ctl.resume else None
    if ctl.resume:
        resume_step = int(resume_from.name.split("-")[-1]) if resume_from else 0
        rec.emit("resume", resume_step, checkpoint=str(resume_from) if resume_from else None)
        rec.log(
            f"resuming from {resume_from.name}"
            if resume_from
            else "no checkpoint yet: training starts from the beginning"
        )
    epoch_order.resume_from = resume_from
    steps_per_epoch = -(-len(train) // samples_per_step)
    rec.emit(
        "run_start",
        0,
        total_steps=int(steps_per_epoch * hyper.epochs + 0.999),
        epochs=hyper.epochs,
        n_train=len(train),
        n_eval=len(evaluation),
        labels=labels,
        device=device.name,
        precision=device.precision,
        batch_size=args.per_device_train_batch_size,
        learning_rate=hyper.learning_rate,
        resumed_from=str(resume_from) if resume_from else None,
    )
    ctl.training = True
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        ctl.training = False
    wall = time.perf_counter() - t0
    if ctl.stop_requested:
        rec.log("cancelled: checkpoint saved")
        return False

    # --- final measurement --------------------------------------------------------------------
    from bertui.core.metrics import classification_report, misclassified

    rec.emit("phase", trainer.state.global_step, name="saving")
    model = trainer.model
    probs, _ = batched_forward(model, evaluation, pad_id, eval_bs)
    report = classification_report(evaluation.labels, probs.argmax(-1).tolist(), labels)
    report.pop("backend")
    report["note"] = "fine-tuned"
    eval_losses = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    if eval_losses:
        report["eval_loss"] = eval_losses[-1]
    metrics["finetuned"] = report
    metrics["errors"] = misclassified(
        prepared.eval.texts, evaluation.labels, probs, labels, ERROR_SAMPLE
    )

    start_step = 0
    if resume_from is not None:
        start_step = int(Path(resume_from).name.split("-")[-1])
    steps_done = max(0, trainer.state.global_step - start_step)
    train_seconds = max(1e-9, wall - trainer.paused_seconds)
    samples = len(train) * hyper.epochs * steps_done / max(1, trainer.state.max_steps)
    metrics["train"] = {
        "train_samples_per_s": round(samples / train_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "wall_seconds": round(wall, 2),
        "tokens_per_s": round(samples * train.mean_length / train_seconds, 1),
        "steps": trainer.state.global_step,
        "device": device.name,
        "precision": device.precision,
        "batch_size": args.per_device_train_batch_size,
        "learning_rate": hyper.learning_rate,
        "epochs": hyper.epochs,
        "n_train": len(train),
        "resumed": resume_from is not None,
    }
    if compacted is not None:
        compacted.expand(weight_decay_factor(trainer, compacted.compact.weight))
    if fast is not None:
        fast.undo()
    model.config.id2label = dict(id2label)
    model.config.label2id = {v: k for k, v in id2label.items()}
    model.save_pretrained(str(run.model_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(run.model_dir))
    atomic_write_json(run.metrics_path, metrics)
    rec.log(
        f"fine-tuned: accuracy {report['accuracy']:.4f} "
        f"({metrics['train']['train_samples_per_s']} samples/s)"
    )
    rec.emit("phase", trainer.state.global_step, name="done")
    return True


def compact_vocabulary(
    run: Run,
    rec: Recorder,
    hyper: Hyper,
    model: Any,
    tokenizer: Any,
    train: Encoded,
    evaluation: Encoded,
    pad_id: int,
    *,
    resume: bool,
) -> tuple[CompactedModel | None, int, Encoded, Encoded]:
    """Train on the embedding rows the data uses (see ``bertui.core.vocab``): returns the
    swap to undo after training, the pad id and the two splits in compact ids. A run resumed
    from checkpoints keeps the vocabulary it started with (none, for runs made before it)."""
    vocab = CompactVocab.load(run.path)
    if vocab is None:
        if not hyper.compact_vocab or (resume and last_checkpoint(run.checkpoints_dir)):
            return None, pad_id, train, evaluation
        vocab = CompactVocab.of(
            [*train.input_ids, *evaluation.input_ids], [pad_id, *tokenizer.all_special_ids]
        )
        if not can_compact(model, len(vocab)):
            return None, pad_id, train, evaluation
        vocab.save(run.path)
    size = model.get_input_embeddings().num_embeddings
    train = Encoded(vocab.remap(train.input_ids, size), train.labels, train.truncated)
    evaluation = Encoded(
        vocab.remap(evaluation.input_ids, size), evaluation.labels, evaluation.truncated
    )
    compacted = CompactedModel(model, vocab)
    compacted.shrink()
    rec.log(f"compact vocabulary: training {len(vocab)} of {size} embedding rows")
    return compacted, int(vocab.table(size)[pad_id]), train, evaluation
