"""The arms of a run and what they leave: the real worker and the real Trainer on the tiny BERT
(tests/conftest.py), predictions.npz read back, configs that name their arms (and old ones that
do not), a resume that runs only what has not reported, the events callback's step hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertui.core.events import read_events
from bertui.core.runs import PREDICTIONS_FILE, Run, create_run


def run_worker(run: Run, *extra: str) -> subprocess.CompletedProcess:
    """``python -m bertui.worker RUN_DIR``: the real worker, in this test's BERTUI_HOME."""
    proc = subprocess.run(
        [sys.executable, "-m", "bertui.worker", str(run.path), *extra],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


KEEP = object()


def config_like(finished_run: Path, *, arms=KEEP, probe=KEEP) -> dict:
    """The config.toml of the shared finished run (a real one, as ``bertui train`` wrote it),
    with its ``arms`` and ``[train] probe`` set (None: removed, as in older configs)."""
    config = dict(Run.load(finished_run).config)
    config.pop("name", None)
    config["train"] = dict(config.get("train", {}))
    for table, key, value in ((config, "arms", arms), (config["train"], "probe", probe)):
        if value is None:
            table.pop(key, None)
        elif value is not KEEP:
            table[key] = value
    return config


def predictions(run: Run) -> dict[str, np.ndarray]:
    with np.load(run.predictions_path, allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


def test_predictions_reproduce_each_arms_report(finished_run):
    run = Run.load(finished_run)
    metrics = run.metrics()
    z = predictions(run)
    assert run.predictions_path.name == PREDICTIONS_FILE
    assert z["arms"].tolist() == metrics["arms"] == ["pretrained", "probe", "finetuned"]
    assert z["label_names"].tolist() == metrics["labels"] == ["negative", "positive"]
    labels = z["labels"]
    assert labels.dtype == np.int64 and labels.shape == (metrics["eval_rows"],)
    for arm in metrics["arms"]:
        pred, probs = z[f"{arm}.pred"], z[f"{arm}.probs"]
        assert pred.shape == labels.shape and probs.shape == (len(labels), 2), arm
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        assert (pred == labels).mean() == pytest.approx(metrics[arm]["accuracy"], abs=1e-12)
        confusion = np.zeros((2, 2), dtype=int)
        np.add.at(confusion, (labels, pred), 1)
        assert confusion.tolist() == metrics[arm]["confusion_matrix"], arm
        assert metrics[arm]["cost"]["seconds"] > 0, arm
    assert metrics["finetuned"]["cost"]["train_samples_per_s"] > 0
    # The Trainer's compute_metrics during training is the same report: its last evaluation
    # (the end of the only epoch, the final weights) says what the final report says.
    last_eval = [e for e in run.events() if e["type"] == "eval"][-1]
    assert last_eval["accuracy"] == pytest.approx(metrics["finetuned"]["accuracy"])
    assert last_eval["macro_f1"] == pytest.approx(metrics["finetuned"]["macro_f1"])


def varied_head_model(tiny_model: Path, folder: Path) -> Path:
    """The tiny BERT with a head of its own (kept as loaded) whose answers differ from one
    demo eval text to the next: the random encoder's features hardly vary, so the head is
    steep and centred on their mean. Then a row out of order shows."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from bertui.core.data import prepare

    labels = {0: "negative", 1: "positive"}
    model = BertForSequenceClassification.from_pretrained(
        str(tiny_model), id2label=labels, label2id={v: k for k, v in labels.items()}).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    batch = tokenizer(prepare("demo").eval.texts, padding=True, return_tensors="pt")
    torch.manual_seed(3)
    with torch.no_grad():
        pooled = model.bert(**batch).pooler_output
        weight = torch.randn(2, pooled.shape[1]) / pooled.std(0).clamp(min=1e-6)
        model.classifier.weight.copy_(weight / pooled.shape[1] ** 0.5)
        model.classifier.bias.copy_(-(model.classifier.weight @ pooled.mean(0)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_prediction_rows_are_the_eval_rows(tiny_model, finished_run, bertui_home, tmp_path):
    """Row i of every arm is eval row i: the Trainer's predict visits the eval rows in
    length-grouped batches, and the pre-trained arm's rows are put back in order. An
    independent forward pass of each kept model, row by row, gives the same probabilities."""
    import torch

    from bertui.core import models
    from bertui.core.data import prepare
    from bertui.core.predict import RunPredictor
    from bertui.core.training import Encoded, batched_forward, probe_probs

    folder = varied_head_model(tiny_model, tmp_path / "varied")
    config = config_like(finished_run)
    config["model"] = {**config["model"], "spec": str(folder)}
    run = create_run(config)
    run_worker(run)
    metrics, z = run.metrics(), predictions(run)
    assert metrics["pretrained"]["note"].startswith("head as loaded")
    assert len(set(z["pretrained.pred"].tolist())) == 2  # both labels: the order matters

    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    try:  # it sets both for the whole process
        predictor = RunPredictor(run).load()
    finally:
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
    tokenizer = models.load_tokenizer(folder)
    ids = tokenizer(prepare("demo").eval.texts, truncation=True, max_length=128)["input_ids"]
    encoded, pad = Encoded(ids, [0] * len(ids)), tokenizer.pad_token_id
    with torch.no_grad():
        base, feats = batched_forward(predictor.base, encoded, pad, features=True)
        tuned, _ = batched_forward(predictor.finetuned, encoded, pad)
    for arm, probs in (("pretrained", base), ("probe", probe_probs(predictor.probe, feats)),
                       ("finetuned", tuned)):
        np.testing.assert_allclose(z[f"{arm}.probs"], probs, atol=1e-4, err_msg=arm)
    # The pre-trained rows differ enough that a row out of place could not pass.
    assert np.abs(base - np.roll(base, 1, axis=0)).max() > 0.05


@pytest.mark.parametrize(
    "changes",
    [{"arms": ["pretrained", "finetuned"]}, {"arms": None, "probe": False}],
    ids=["arms-named", "old-config-probe-off"],
)
def test_a_run_runs_the_arms_its_config_names(finished_run, bertui_home, changes):
    run = create_run(config_like(finished_run, **changes))
    assert run.config.get("arms") == changes["arms"]
    run_worker(run)
    metrics = run.metrics()
    assert metrics["arms"] == ["pretrained", "finetuned"]
    assert metrics["probe"] is None and metrics["finetuned"]["accuracy"] is not None
    assert not (run.path / "probe.safetensors").exists()
    assert predictions(run)["arms"].tolist() == ["pretrained", "finetuned"]
    events = run.events()
    assert [e["name"] for e in events if e["type"] == "baseline"] == ["pretrained"]
    assert "probe" not in [e.get("name") for e in events if e["type"] == "phase"]


def test_an_old_config_without_arms_runs_all_three(finished_run, bertui_home):
    from bertui.core.arms import ARMS
    from bertui.core.engine import arm_names
    from bertui.core.schema import ARM_NAMES

    assert tuple(ARMS) == ARM_NAMES  # the schema offers the arms the engine has
    assert all(arm.name == name for name, arm in ARMS.items())

    config = config_like(finished_run, arms=None, probe=None)
    assert "arms" not in config and "probe" not in config["train"]
    assert arm_names(config) == ["pretrained", "probe", "finetuned"]
    # The registry's order, whatever the config's: the baselines measure the untrained model.
    assert arm_names({"arms": ["finetuned", "pretrained"]}) == ["pretrained", "finetuned"]
    from bertui.core.errors import BadInput

    with pytest.raises(BadInput, match="unknown arm 'bogus'"):
        arm_names({"arms": ["pretrained", "bogus"]})


@pytest.mark.parametrize("old_run", [False, True], ids=["with-predictions", "made-before-them"])
def test_a_resume_runs_only_the_arms_that_have_not_reported(finished_run, bertui_home, old_run):
    """A run that stopped after its baselines (here: the finished run with its fine-tuned
    report taken out) resumes with the fine-tuning alone; the baselines' reports and
    predictions stay as they were. A run made before predictions.npz existed resumes too."""
    import shutil

    path = bertui_home / "runs" / finished_run.name
    shutil.copytree(finished_run, path)
    run = Run.load(path)
    before = run.metrics()
    metrics = {k: v for k, v in before.items() if k not in ("errors", "train")}
    metrics["finetuned"] = None
    kept = predictions(run)
    if old_run:
        run.predictions_path.unlink()
        for arm in ("pretrained", "probe"):
            metrics[arm] = {k: v for k, v in metrics[arm].items() if k != "cost"}
        del metrics["arms"]
    run.metrics_path.write_text(json.dumps(metrics))
    run.status_path.write_text(json.dumps({**run.status, "state": "cancelled"}))
    n_events = len(run.events())

    run_worker(run, "--resume")
    after = run.metrics()
    assert after["pretrained"] == metrics["pretrained"] and after["probe"] == metrics["probe"]
    assert after["finetuned"]["accuracy"] == before["finetuned"]["accuracy"]
    assert after["arms"] == ["pretrained", "probe", "finetuned"]
    new = read_events(run.events_path)[n_events:]
    assert not [e for e in new if e["type"] == "baseline"]
    phases = [e["name"] for e in new if e["type"] == "phase"]
    assert "pretrained" not in phases and "probe" not in phases and phases[-1] == "done"
    z = predictions(run)
    ran = ["finetuned"] if old_run else ["pretrained", "probe", "finetuned"]
    assert z["arms"].tolist() == ran
    assert set(z) == {"labels", "label_names", "arms", *(f"{a}.{k}" for a in ran
                                                            for k in ("pred", "probs"))}
    assert z["label_names"].tolist() == kept["label_names"].tolist()
    for key in set(z) - {"arms", "label_names"}:
        np.testing.assert_allclose(z[key], kept[key], atol=1e-6, err_msg=key)


class StopAt:
    """A run's control (the worker's, less the signals) that asks for a stop at one step
    through the events callback's step hook, and keeps every call it gets."""

    def __init__(self, step: int, live: dict) -> None:
        self.step, self.live = step, live
        self.stop_requested = self.training = self.resume = False
        self.calls: list[tuple[int, bool, int]] = []

    def check_cancel(self) -> None:
        pass

    def at_step(self, step: int, saved: bool) -> None:
        self.calls.append((step, saved, self.live.get("step")))
        if step == self.step:
            self.stop_requested = True


class Recorded:
    """A recorder that keeps the events in a list (the worker's writes them to events.jsonl)."""

    def __init__(self) -> None:
        self.live: dict = {}
        self.events: list[dict] = []

    def set(self, **fields) -> None:
        pass

    def emit(self, type_: str, step: int | None = None, **fields) -> None:
        self.events.append({"type": type_, "step": step, **fields})

    def log(self, message: str, level: str = "info") -> None:
        self.emit("log", message=message, level=level)


def test_the_step_hook_sees_every_step_and_checkpoint(finished_run, bertui_home):
    """The engine in this process, the real Trainer: ``at_step`` gets every step's end (with
    the live step already set) and every checkpoint; a stop it asks for at step 7 ends the
    run there with checkpoint-7, whatever the CPU's speed."""
    from bertui.core.engine import run_experiment

    run = create_run(config_like(finished_run, arms=["finetuned"]))
    rec = Recorded()
    ctl = StopAt(7, rec.live)
    assert run_experiment(run, rec, ctl) is False
    steps = [(step, live) for step, saved, live in ctl.calls if not saved]
    assert steps == [(s, s) for s in range(1, 8)]
    saves = [step for step, saved, _ in ctl.calls if saved]
    checkpoints = [e["step"] for e in rec.events if e["type"] == "checkpoint"]
    assert saves == checkpoints and saves[-1] == 7
    assert run.last_checkpoint().name == "checkpoint-7"
    assert (run.last_checkpoint() / "bertui_epoch_rng.safetensors").is_file()
    assert rec.live["step"] == 7
