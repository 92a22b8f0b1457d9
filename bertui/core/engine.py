"""One run from its run directory's config: the arms it names, in phases over one context.

``run_experiment`` is what the worker process calls; it is the only training code path (the
TUI and the CLI only start workers and read their run directories). Its phases, one function
each: **load** (the model source, tokenizer and data), **tokenise** (the two splits, then the
model and the Trainer every arm shares), **arms** (each arm the config names, in the registry's
order, skipping those a resumed run already reported), **report** (after each arm: its metrics,
the Wilson interval of its accuracy, its fields and its cost, with the energy an
``EnergyMeter`` measured around it, into metrics.json, its predictions into predictions.npz, so
a resumed run does not run it again; then every pair of arms compared again and the verdict)
and **save** (both files once more as the run ends, and the ``done`` phase). An arm other than
the fine-tune that raises fails alone: its entry says why, and the run goes on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bertui.core import data as data_mod
from bertui.core import models
from bertui.core.arms import ARMS, Arm, Control, FineTuned, Recorder, RunContext
from bertui.core.distributed import is_main, world_size
from bertui.core.energy import EnergyMeter, cuda_gpus
from bertui.core.errors import BadInput
from bertui.core.predictions import Prediction, read_predictions, write_predictions
from bertui.core.runs import Run, atomic_write_json, bertui_home, last_checkpoint
from bertui.core.schema import arms_of, from_config
from bertui.core.stats import RESAMPLES
from bertui.core.training import Encoded, Hyper, make_training_args, pick_device
from bertui.core.vocab import CompactedModel, CompactVocab, can_compact

__all__ = ["Control", "Recorder", "prepare_data", "run_experiment"]


def prepare_data(config: dict[str, Any]) -> data_mod.PreparedData:
    """The train and eval splits a run's config names (the worker and ``build_config``)."""
    o = from_config(config)  # a field the config lacks takes the schema's default
    return data_mod.prepare(
        o.dataset,
        o.eval_dataset,
        text_column=o.text_column,
        label_column=o.label_column,
        split=o.split,
        eval_split=o.eval_split,
        holdout=o.holdout,
        max_train_samples=o.max_train_samples,
        max_eval_samples=o.max_eval_samples,
        seed=o.seed,
        budget=o.budget,
        data_seed=o.data_seed,
        unlabeled=o.unlabeled,
    )


def run_experiment(run: Run, rec: Recorder, ctl: Control) -> bool:
    """Run the arms the run's config names (pre-trained, probe, fine-tuned by default).

    Returns True when the run finished, False when it was cancelled (a checkpoint is saved).
    """
    names = arm_names(run.config)
    ctx = load(run, rec, ctl)
    tokenise(ctx)
    load_model(ctx)
    build_trainer(ctx)
    start_metrics(ctx)
    for name in names:
        if not run_arm(ctx, ARMS[name](ctx)):
            return False
    save(ctx)
    return True


def arm_names(config: dict[str, Any]) -> list[str]:
    """The arms the config names, in the order they run (the registry's)."""
    names = arms_of(config)
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise BadInput(f"unknown arm {unknown[0]!r}; the arms are {', '.join(ARMS)}",
                       field="arms")
    return [n for n in ARMS if n in names]


# --- load -------------------------------------------------------------------------------------


def load(run: Run, rec: Recorder, ctl: Control) -> RunContext:
    """The model source, its tokenizer and the data, with the run's label map checked."""
    import torch

    config = run.config
    hyper = Hyper.from_config(config.get("train", {}))
    options = from_config(config)
    trust = options.trust_remote_code
    if trust:
        rec.log("trust_remote_code is on: code from the model repository will run", "warning")
    rec.emit("phase", 0, name="loading")
    device = pick_device(hyper.precision)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    source = models.resolve_model(
        options.model,
        allow_pickle=options.allow_pickle,
        trust_remote_code=trust,
        download=True,
    )
    assert source.path is not None
    rec.log(f"model {source.label}; device {device.name} ({device.reason or device.precision})")
    tokenizer = models.load_tokenizer(source.path, trust_remote_code=trust)
    prepared = prepare_data(config)
    id2label = prepared.id2label
    stored = config.get("labels", {}).get("id2label")
    if stored and {int(k): v for k, v in stored.items()} != id2label:
        # config.toml's map names the saved model's outputs, and a resumed run's checkpoint
        # head rows and baselines mean it: a run never trains on another one.
        then = data_mod.few_labels(stored.values())
        now = data_mod.few_labels(id2label[i] for i in sorted(id2label))
        raise BadInput(f"the data's labels changed since the run was created ({then} then, "
                       f"{now} now); put the data back or start a new run")
    if prepared.report.get("eval_only_labels"):
        rec.log(f"eval labels that never occur in training (the model cannot predict them): "
                f"{data_mod.few_labels(prepared.report['eval_only_labels'])}", "warning")
    ctl.check_cancel()
    return RunContext(run, rec, ctl, config, hyper, device, source, tokenizer, prepared, id2label)


# --- tokenise: the splits, the model, the Trainer ---------------------------------------------


def tokenise(ctx: RunContext) -> None:
    """Both splits as token ids (cached per tokenizer, texts and max length)."""
    from bertui.core.training import encode, tokenizer_fingerprint

    ctx.rec.emit("phase", 0, name="tokenizing")
    cache = bertui_home() / "cache" / "tokens"
    assert ctx.source.path is not None
    fp = tokenizer_fingerprint(ctx.source.path)
    max_length = ctx.hyper.max_length
    ctx.train, ctx.evaluation = (
        encode(ctx.tokenizer, split.texts, split.labels, max_length, cache, fp)
        for split in (ctx.prepared.train, ctx.prepared.eval)
    )
    if ctx.train.truncated or ctx.evaluation.truncated:
        ctx.rec.log(f"truncated to {max_length} tokens: {ctx.train.truncated} train and "
                    f"{ctx.evaluation.truncated} eval texts")
    ctx.pad_id = ctx.tokenizer.pad_token_id or 0


def load_model(ctx: RunContext) -> None:
    """The classifier (seeded head), on the device, on the vocabulary the data uses, with the
    learning rate that suits its size where the config sets none."""
    options = ctx.options
    assert ctx.source.path is not None
    model, loading = models.load_classifier(
        ctx.source.path,
        id2label=ctx.id2label,
        allow_pickle=options.allow_pickle,
        trust_remote_code=options.trust_remote_code,
        seed=ctx.hyper.seed,
        output_loading_info=True,
    )
    ctx.model, ctx.loading = model, loading if isinstance(loading, dict) else {}
    model.to(ctx.device.kind if ctx.device.kind != "cpu" else "cpu")
    compact_vocabulary(ctx)
    hyper = ctx.hyper
    # On a CPU: torch's dropout masks from bertui's kernel (the same numbers, faster), or fast
    # dropout where asked for (core.dropout).
    from bertui.core.dropout import for_run

    ctx.dropout_swap, line = for_run(model, hyper.fast_dropout, ctx.device.kind,
                                     hyper.torch_compile)
    if line:
        ctx.rec.log(line)
    if hyper.learning_rate is None:
        hyper.learning_rate = models.default_learning_rate(
            getattr(model.config, "hidden_size", None)
        )
        if ctx.device.kind == "cuda" and not hyper.batch_size:
            hyper.learning_rate *= 2.0  # sqrt scaling for the 4x larger GPU batch


def build_trainer(ctx: RunContext, output_dir: Path | None = None) -> None:
    """The run's Trainer, with the events and epoch-order callbacks. It exists before any arm:
    the pre-trained model is measured through it, exactly as a hand-written Trainer script
    measures its starting point, and the fine-tuned arm trains it. An arm with a model of its
    own (``arms.retrained``) builds its Trainer here too, over its copy of the context, with
    its checkpoints in ``output_dir``."""
    from bertui.core.trainer_hooks import EpochOrder, EventsCallback
    from bertui.core.training import make_trainer

    hyper, device = ctx.hyper, ctx.device
    args = make_training_args(hyper, device, output_dir or ctx.run.checkpoints_dir,
                              len(ctx.train))
    ctx.rec.set(batch_size=args.per_device_train_batch_size)
    gpus = device.count if device.kind == "cuda" else 1
    # The global batch: every GPU's (DataParallel in one process, or DDP under torchrun).
    ctx.samples_per_step = args.per_device_train_batch_size * max(1, gpus, world_size())
    events = EventsCallback(
        ctx.rec.emit,
        ctx.rec.live,
        ctx.ctl,
        samples_per_step=ctx.samples_per_step,
        tokens_per_sample=ctx.train.mean_length,
        checkpoint_seconds=hyper.checkpoint_minutes * 60,
    )
    ctx.epoch_order = EpochOrder()
    # The epoch order first: a checkpoint is complete (its generator state written) before
    # the events callback reports it.
    ctx.trainer = make_trainer(
        ctx.model,
        args,
        ctx.train,
        ctx.evaluation,
        ctx.tokenizer,
        [ctx.epoch_order, events],
        pad_multiple=8 if device.kind == "cuda" else None,
        pad_id=ctx.pad_id,
    )
    ctx.trainer.replay_evaluations = not hyper.epoch_eval
    events.trainer = ctx.trainer


def compact_vocabulary(ctx: RunContext) -> None:
    """Train on the embedding rows the data uses (see ``bertui.core.vocab``): the model
    shrinks (``ctx.compacted`` undoes it after training) and the splits and pad id move to
    compact ids. A run resumed from checkpoints keeps the vocabulary it started with (none,
    for runs made before it)."""
    run, train, evaluation = ctx.run, ctx.train, ctx.evaluation
    vocab = CompactVocab.load(run.path)
    if vocab is None:
        if not ctx.hyper.compact_vocab or (ctx.ctl.resume and last_checkpoint(run.checkpoints_dir)):
            return
        vocab = CompactVocab.of(
            [*train.input_ids, *evaluation.input_ids], [ctx.pad_id, *ctx.tokenizer.all_special_ids]
        )
        if not can_compact(ctx.model, len(vocab)):
            return
        vocab.save(run.path)
    size = ctx.model.get_input_embeddings().num_embeddings
    ctx.train = Encoded(vocab.remap(train.input_ids, size), train.labels, train.truncated)
    ctx.evaluation = Encoded(
        vocab.remap(evaluation.input_ids, size), evaluation.labels, evaluation.truncated
    )
    ctx.compacted = CompactedModel(ctx.model, vocab)
    ctx.compacted.shrink()
    ctx.rec.log(f"compact vocabulary: training {len(vocab)} of {size} embedding rows")
    ctx.pad_id = int(vocab.table(size)[ctx.pad_id])


# --- arms -------------------------------------------------------------------------------------


def start_metrics(ctx: RunContext) -> None:
    """metrics.json's run-level entries; a resumed run keeps what its arms reported (and
    their predictions, where they are of the same eval rows)."""
    import numpy as np

    ctx.metrics = ctx.run.metrics() if ctx.ctl.resume else {}
    prepared = ctx.prepared
    ctx.metrics.update(
        labels=ctx.labels,
        eval_rows=len(ctx.evaluation),
        eval_source=prepared.eval_source,
        data=prepared.report,
        truncated={"train": ctx.train.truncated, "eval": ctx.evaluation.truncated},
        text_column=prepared.text_column,
        label_column=prepared.label_column,
    )
    for name in ARMS:  # an arm that has not reported (or is not run) is null
        ctx.metrics.setdefault(name, None)
    if ctx.ctl.resume:
        labels, kept = read_predictions(ctx.run.predictions_path)
        if labels is not None and np.array_equal(labels, ctx.evaluation.labels):
            ctx.predictions = {n: p for n, p in kept.items() if reported(ctx, n)}


def reported(ctx: RunContext, name: str) -> bool:
    """Whether an arm's report is in metrics.json (a resumed run does not run it again; an
    arm that failed has no scores, and a resumed run tries it again)."""
    entry = ctx.metrics.get(name)
    return isinstance(entry, dict) and "accuracy" in entry


def run_arm(ctx: RunContext, arm: Arm) -> bool:
    """Run one arm (unless it already reported) and report it with its cost; False when
    cancelled. An arm other than ``finetuned`` that raises fails alone (``fail_arm``); the
    fine-tune's failure is the run's: its model is the run's own, and a failed run resumes
    from its checkpoint."""
    from bertui.core.training import Cancelled

    if reported(ctx, arm.name):
        return True
    ctx.ctl.check_cancel()
    meter = EnergyMeter(cuda_gpus(arm.devices()) if ctx.device.kind == "cuda" else None).start()
    t0 = time.perf_counter()
    try:
        arm.prepare()
        if not arm.train():
            return False
        prediction = arm.predict()
        seconds = time.perf_counter() - t0
        report_arm(ctx, arm, prediction, arm_cost(arm, arm.cost(seconds), seconds, meter))
    except Exception as exc:
        if arm.name == FineTuned.name or isinstance(exc, Cancelled):
            raise
        seconds = time.perf_counter() - t0
        fail_arm(ctx, arm, exc, arm_cost(arm, Arm.cost(arm, seconds), seconds, meter))
    finally:
        meter.stop()  # its poller thread ends whatever happened (a second stop repeats the first)
    return True


def arm_cost(arm: Arm, cost: dict[str, Any], seconds: float, meter: EnergyMeter) -> dict[str, Any]:
    """The arm's own cost fields, then the devices it used, its device-seconds (wall seconds
    × devices) and the energy the meter measured (or why it could not)."""
    devices = arm.devices()
    return {**cost, "devices": devices, "device_seconds": round(seconds * devices, 2),
            **meter.stop().as_cost()}


def fail_arm(ctx: RunContext, arm: Arm, exc: Exception, cost: dict[str, Any]) -> None:
    """An arm that raised: its entry in metrics.json says why (``error``, one line) and what
    it cost; the other arms' results stand, and the run goes on."""
    import gc
    import traceback

    traceback.print_exc()  # worker.log keeps the whole story
    ctx.ctl.training = False
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    error = f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
    ctx.metrics[arm.name] = {"error": error, "title": arm.title, "note": arm.title,
                             "cost": cost}
    ctx.predictions.pop(arm.name, None)
    gc.collect()  # what the arm held (a model, its optimiser) goes before the next arm
    if ctx.device.kind == "cuda":
        import torch

        torch.cuda.empty_cache()
    write_results(ctx)
    ctx.rec.log(f"{arm.title}: failed ({error}); the other arms go on", "warning")


def report_arm(ctx: RunContext, arm: Arm, prediction: Prediction, cost: dict[str, Any]) -> None:
    """An arm's report (metrics of its predictions with the Wilson interval of its accuracy,
    its own fields, its cost) into metrics.json, its predictions into predictions.npz, what
    it keeps onto disk; then its baseline event and log line."""
    from bertui.core.metrics import classification_report
    from bertui.core.stats import wilson_interval

    labels = ctx.evaluation.labels
    result = classification_report(labels, prediction.pred, ctx.labels)
    ctx.metrics.setdefault("metrics_backend", result.pop("backend"))
    correct = sum(int(p == y) for p, y in zip(prediction.pred.tolist(), labels, strict=True))
    result["accuracy_ci"] = list(wilson_interval(correct, len(labels)))
    result["title"] = arm.title
    result.update(arm.fields())
    result["cost"] = cost
    if is_main():  # rank 0 of a torchrun run alone writes (its peers' numbers are the same)
        arm.save(prediction)
    ctx.metrics[arm.name] = result
    ctx.predictions[arm.name] = prediction
    write_results(ctx)
    if arm.baseline:
        ctx.rec.emit("baseline", 0, name=arm.name, accuracy=result["accuracy"],
                     macro_f1=result["macro_f1"])
    if is_main():
        ctx.rec.log(arm.summary(result))


def write_results(ctx: RunContext) -> None:
    """predictions.npz, then metrics.json (so an arm in metrics.json has its predictions);
    metrics.json's ``arms`` lists the arms that have reported, ``comparisons`` every pair of
    them, ``verdict`` what those numbers say."""
    from bertui.core.verdict import verdict

    if not is_main():  # a torchrun rank other than 0: nothing to write, nothing to compare
        return
    ctx.metrics["arms"] = [n for n in ARMS if reported(ctx, n)]
    ordered = {n: ctx.predictions[n] for n in ARMS if n in ctx.predictions}
    ctx.metrics["comparisons"] = compare_arms(ctx, ordered)
    ctx.metrics["statistics"] = STATISTICS | {"seed": ctx.hyper.seed}
    ctx.metrics["verdict"] = verdict(ctx.metrics)
    write_predictions(ctx.run.predictions_path, ctx.evaluation.labels, ctx.labels, ordered)
    atomic_write_json(ctx.run.metrics_path, ctx.metrics)


STATISTICS = {
    "accuracy_interval": "Wilson score, 95 %",
    "difference_interval": "paired percentile bootstrap, 95 %",
    "resamples": RESAMPLES,
    "test": "McNemar exact (two-sided binomial test of the discordant rows)",
}


def compare_arms(ctx: RunContext, ordered: dict[str, Prediction]) -> list[dict[str, Any]]:
    """Every pair of the arms with predictions (each later arm − each earlier one), on
    accuracy and macro-F1, seeded with the run's seed. The pairs already in metrics.json are
    kept when they are the same (the run's end writes the file once more)."""
    from bertui.core.stats import compare_all, pair_order

    names, n = list(ordered), len(ctx.evaluation)
    kept = ctx.metrics.get("comparisons") or []
    wanted = [(names[j], names[i]) for j, i in pair_order(names)]
    if [(c.get("a"), c.get("b")) for c in kept if c.get("metric") == "accuracy"] == wanted \
            and all(c.get("n") == n for c in kept):
        return kept
    found = compare_all(ctx.evaluation.labels, {k: p.pred for k, p in ordered.items()},
                        resamples=RESAMPLES, seed=ctx.hyper.seed)
    return [c.as_dict() for c in found]


# --- save -------------------------------------------------------------------------------------


def save(ctx: RunContext) -> None:
    """metrics.json and predictions.npz as the run ends, then the ``done`` phase."""
    write_results(ctx)
    ctx.rec.emit("phase", ctx.step, name="done")
