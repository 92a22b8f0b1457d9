"""The ``scratch`` and ``tapt`` arms: a tiny random BERT run with five arms by the real worker
(every arm's report and predictions, the masked-LM loss events, the models under arms/,
``bertui predict`` for every arm), the masked-LM corpus and budget, the bad inputs; and, marked
slow, the embedded MiniLM on the reviews data with default settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertui.core.arms.tapt import MAX_STEPS, default_steps, mlm_corpus
from bertui.core.data import demo_files, read_unlabeled
from bertui.core.engine import prepare_data
from bertui.core.errors import BadInput
from bertui.core.events import BASE_FIELDS, EVENT_FIELDS, RunHistory
from bertui.core.runs import Run
from bertui.core.schema import RunOptions
from conftest import run_bertui

FIVE = "pretrained,probe,finetuned,scratch,tapt,setfit"  # every arm (the name is older)


def first_eval_text() -> str:
    import csv

    with open(demo_files()[1], newline="", encoding="utf-8") as fh:
        return next(csv.DictReader(fh))["text"]


@pytest.fixture(scope="module")
def five_arm_run(tiny_model, tmp_path_factory):
    """``bertui train`` of the tiny BERT with all six arms, an unlabeled corpus (two new texts,
    one eval text, a blank line) and a tapt budget of 6 steps."""
    home = tmp_path_factory.mktemp("five-home")
    corpus = tmp_path_factory.mktemp("corpus") / "unlabeled.txt"
    corpus.write_text(f"A brand new sentence.\n\n{first_eval_text()}\nAnother new one.\n")
    proc = run_bertui("train", "--model", str(tiny_model), "--dataset", "demo", "--epochs", "1",
                      "--arms", FIVE, "--unlabeled", str(corpus), "--tapt-steps", "6",
                      "--json", "--quiet", home=home, check=True)
    return json.loads(proc.stdout), Run.load(sorted((home / "runs").iterdir())[-1]), home


def test_every_arm_reports_and_has_a_prediction_for_every_eval_row(five_arm_run):
    metrics, run, _ = five_arm_run
    assert metrics["arms"] == FIVE.split(",")
    with np.load(run.predictions_path, allow_pickle=False) as z:
        labels = z["labels"]
        assert z["arms"].tolist() == FIVE.split(",")
        for arm in metrics["arms"]:
            pred = z[f"{arm}.pred"]
            assert pred.shape == labels.shape == (metrics["eval_rows"],), arm
            assert (pred == labels).mean() == pytest.approx(metrics[arm]["accuracy"]), arm
    pairs = {(c["a"], c["b"]) for c in metrics["comparisons"]}
    assert len(pairs) == 15 and len(metrics["comparisons"]) == 30  # every pair, both metrics
    assert metrics["verdict"]
    assert metrics["scratch"]["note"] == "trained from scratch (no pre-training)"
    assert metrics["tapt"]["note"].startswith("task-adaptive pre-training (6 MLM steps")
    for arm in ("scratch", "tapt"):
        cost = metrics[arm]["cost"]
        assert cost["seconds"] > 0 and cost["train_samples_per_s"] > 0, arm
        assert metrics[arm]["train"]["steps"] == metrics["train"]["steps"], arm  # same recipe
    mlm = metrics["tapt"]["mlm"]
    assert mlm["steps"] == 6 and mlm["dropped_eval"] == 1 and mlm["unlabeled"] == 2
    prepared = prepare_data(run.config)
    assert prepared.unlabeled == ["A brand new sentence.", first_eval_text(), "Another new one."]
    texts, _ = mlm_corpus(prepared.train.texts, prepared.unlabeled, prepared.eval.texts)
    assert mlm["texts"] == len(texts) and first_eval_text() not in texts
    assert metrics["tapt"]["cost"]["mlm_seconds"] > 0


def test_the_arms_training_is_told_apart_from_the_fine_tune(five_arm_run):
    _, run, _ = five_arm_run
    events = run.events()
    for event in events:  # every event and field the arms write is in the table
        assert set(event) - set(BASE_FIELDS) <= set(EVENT_FIELDS[event["type"]]), event
    mlm = [e for e in events if e["type"] == "mlm"]
    assert mlm and all(e["arm"] == "tapt" and isinstance(e["loss"], float) for e in mlm)
    for arm in ("scratch", "tapt"):
        evals = [e for e in events if e["type"] == "eval" and e.get("arm") == arm]
        assert len(evals) == 1, arm  # one epoch
    history = RunHistory()
    history.extend(events)
    assert [s for s, _ in history.mlm_loss] == [e["step"] for e in mlm]
    # the fine-tune's curves hold the fine-tune's events only
    assert len(history.evals) == 1 and "arm" not in history.evals[0]
    assert set(history.arm_evals) == {"scratch", "tapt"}
    assert history.last_eval["accuracy"] == pytest.approx(
        Run.load(run.path).metrics()["finetuned"]["accuracy"])


def test_the_arms_models_are_kept_and_bertui_predict_answers_for_every_arm(five_arm_run):
    _, run, home = five_arm_run
    for arm in ("scratch", "tapt"):
        folder = run.arms_dir / arm
        assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
        assert (folder / "tokenizer.json").exists()
        assert not (folder / "checkpoints").exists() and not (folder / "mlm").exists()
        config = json.loads((folder / "config.json").read_text())
        assert config["id2label"] == {"0": "negative", "1": "positive"}
    proc = run_bertui("predict", run.id, "What a lovely day.", "--json", home=home, check=True)
    (answer,) = json.loads(proc.stdout)
    assert set(answer) - {"text"} == set(FIVE.split(","))
    for arm in FIVE.split(","):
        assert answer[arm]["label"] in ("negative", "positive")
        assert sum(answer[arm]["probs"].values()) == pytest.approx(1.0, abs=1e-3)


def test_the_scratch_arm_starts_from_seeded_random_weights(tiny_model, tmp_path):
    """Nothing of the checkpoint's weights is read (here they are all 0.5), and the same seed
    draws the same weights."""
    from types import SimpleNamespace

    import torch
    from transformers import BertModel

    from bertui.core.arms.scratch import Scratch

    constant = BertModel.from_pretrained(str(tiny_model))
    with torch.no_grad():
        for param in constant.parameters():
            param.fill_(0.5)
    constant.save_pretrained(str(tmp_path / "constant"))

    def built(seed: int):
        ctx = SimpleNamespace(source=SimpleNamespace(path=tmp_path / "constant"), config={},
                              options=RunOptions(), id2label={0: "a", 1: "b", 2: "c"},
                              hyper=SimpleNamespace(seed=seed))
        arm = Scratch.__new__(Scratch)
        arm.ctx = ctx
        model = arm.build_model()
        assert arm.note == "trained from scratch (no pre-training)"
        return model

    model = built(0)
    query = model.bert.encoder.layer[0].attention.self.query.weight
    assert model.num_labels == 3 and not torch.isclose(query, torch.tensor(0.5)).any()
    assert torch.equal(built(0).bert.encoder.layer[0].attention.self.query.weight, query)
    assert not torch.equal(built(1).bert.encoder.layer[0].attention.self.query.weight, query)


# --- the masked-LM corpus and budget ----------------------------------------------------------


def test_the_mlm_corpus_never_holds_an_eval_text_and_holds_each_text_once():
    texts, counts = mlm_corpus(["a b", "c d", "held"], ["c d", " held ", "new", ""], ["held"])
    assert texts == ["a b", "c d", "new"]
    assert counts == {"texts": 3, "unlabeled": 1, "dropped_eval": 2}


def test_the_default_budget_is_ten_passes_at_most_max_steps():
    assert default_steps(100, 16) == 70  # 10 passes of 7 batches
    assert default_steps(2400, 16) == MAX_STEPS
    assert default_steps(1, 64) == 10


def test_a_fresh_mlm_head_trains_alone_first(tiny_model):
    """For its first steps only the fresh head's weights get a gradient to step on."""
    from types import SimpleNamespace

    import torch
    from transformers import BertForMaskedLM

    from bertui.core.arms.tapt import head_first

    model, loading = BertForMaskedLM.from_pretrained(str(tiny_model), output_loading_info=True)
    fresh = {k for k in loading["missing_keys"] if not k.startswith("bert.")}
    head = [p for name, p in model.named_parameters() if name in fresh]
    assert head and len(head) < len(list(model.parameters()))
    callback = head_first(head, steps=2)
    ids = torch.tensor([[101, 2023, 2003, 102]])
    for step, encoder_moves in ((0, False), (1, False), (2, True)):
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        callback.on_pre_optimizer_step(None, SimpleNamespace(global_step=step), None, model=model)
        assert all(p.grad is not None for p in head)
        embeddings = model.bert.embeddings.word_embeddings.weight  # the tied decoder too
        assert (embeddings.grad is not None) == encoder_moves, step


# --- bad input --------------------------------------------------------------------------------


def test_an_unlabeled_text_file_is_one_text_a_line_and_a_data_file_a_column(tmp_path):
    txt = tmp_path / "more.txt"
    txt.write_text("one\n\n  two  \nthree\n")
    assert read_unlabeled(str(txt)) == ["one", "two", "three"]
    csv = tmp_path / "more.csv"
    csv.write_text("id,review\n1,a fine text\n2,\n3,another text\n")
    assert read_unlabeled(str(csv), "text") == ["a fine text", "another text"]  # inferred
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text('{"text": "x y", "n": 1}\n{"text": "z", "n": 2}\n')
    assert read_unlabeled(str(jsonl), "text") == ["x y", "z"]


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"), ("", "is empty"), ("\n  \n", "is empty"),
    (b"\x00\x01binary", "binary"), ("dir", "is a directory"),
])
def test_a_bad_unlabeled_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(BadInput, match=message) as caught:
        read_unlabeled(str(path))
    assert caught.value.field == "unlabeled"


@pytest.mark.parametrize(("flags", "message"), [
    (["--unlabeled", "{missing}"], "no such file"),
    (["--unlabeled", "{empty}"], "is empty"),
    (["--tapt-steps", "0"], "--tapt-steps: must be a positive number of steps (got 0)"),
    (["--tapt-steps", "-5"], "--tapt-steps: must be a positive number of steps"),
    (["--arms", "pretrained,finetuned", "--unlabeled", "{text}"], "add tapt to --arms"),
    (["--arms", "pretrained,finetuned,setfitt"], "must be among"),
])
def test_bad_tapt_options_exit_2_with_one_line_and_write_nothing(
        tiny_model, bertui_home, tmp_path, flags, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "text.txt").write_text("some text\n")
    paths = {"missing": tmp_path / "nope.txt", "empty": tmp_path / "empty.txt",
             "text": tmp_path / "text.txt"}
    flags = [f.format(**paths) for f in flags]
    if "--arms" not in flags:
        flags += ["--arms", FIVE]
    proc = run_bertui("train", "--model", str(tiny_model), "--dataset", "demo", *flags,
                      home=bertui_home)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (bertui_home / "runs").exists() or not any((bertui_home / "runs").iterdir())


# --- real model, real data ---------------------------------------------------------------------


def train_on_reviews(shared_data, home, arms: str) -> tuple[dict, Run]:
    """``bertui train`` of the embedded MiniLM on the reviews data, default settings."""
    reviews = shared_data / "reviews"
    proc = run_bertui("train", "--dataset", str(reviews / "train.csv"), "--eval-dataset",
                      str(reviews / "test.csv"), "--arms", arms, "--json", "--quiet",
                      home=home, timeout=7200, check=True)
    metrics = json.loads(proc.stdout)
    costs = {a: metrics[a]["cost"] for a in metrics["arms"]}
    print(f"\n{arms}: " + ", ".join(f"{a} {metrics[a]['accuracy']:.4f}" for a in metrics["arms"])
          + f"\ncost {json.dumps(costs)}")
    return metrics, Run.load(sorted((home / "runs").iterdir())[-1])


@pytest.mark.slow
def test_on_real_data_pre_training_is_worth_at_least_15_points(shared_data, bertui_home):
    """From scratch ends at least 15 points below the fine-tune."""
    metrics, _ = train_on_reviews(shared_data, bertui_home, "pretrained,finetuned,scratch")
    assert metrics["finetuned"]["accuracy"] - metrics["scratch"]["accuracy"] >= 0.15


@pytest.mark.slow
def test_on_real_data_tapt_runs_to_its_end_and_its_mlm_loss_falls(shared_data, bertui_home):
    metrics, run = train_on_reviews(shared_data, bertui_home, "pretrained,finetuned,tapt")
    mlm = metrics["tapt"]["mlm"]
    print(f"mlm {json.dumps(mlm)}")
    assert mlm["steps"] == MAX_STEPS and mlm["fresh_head"]
    assert mlm["last_loss"] < mlm["first_loss"]
    losses = [e["loss"] for e in run.events() if e["type"] == "mlm"]
    tenth = max(1, len(losses) // 10)
    assert np.mean(losses[-tenth:]) < np.mean(losses[:tenth])
    assert metrics["tapt"]["accuracy"] > 0.5 and (run.arms_dir / "tapt" / "config.json").exists()


# --- cancel and resume --------------------------------------------------------------------------


class StopInArm:
    """A run's control that asks for a stop at step 3 of the first training whose events
    carry ``arm`` (the arm's own Trainer), as SIGTERM does in the worker."""

    def __init__(self, rec, arm: str, resume: bool = False) -> None:
        self.rec, self.arm = rec, arm
        self.stop_requested = self.training = False
        self.resume = resume

    def check_cancel(self) -> None:
        pass

    def at_step(self, step: int, saved: bool) -> None:
        in_arm = any(e.get("arm") == self.arm for e in self.rec.events)
        if in_arm and step == 3 and not saved and not self.resume:
            self.stop_requested = True


@pytest.mark.parametrize(("arm", "checkpoints"), [("scratch", "checkpoints"), ("tapt", "mlm")])
def test_an_arm_cancelled_mid_training_resumes_from_its_own_checkpoint(
        finished_run, bertui_home, arm, checkpoints):
    """Cancelled at step 3 of its own training (the scratch fine-tune; the tapt arm's
    masked-LM training), the arm keeps checkpoint-3 in arms/<arm>/; resumed, the run goes on
    from there and ends with the arm's report and model, its checkpoints gone."""
    from test_arms import Recorded, config_like

    from bertui.core.engine import run_experiment
    from bertui.core.runs import create_run

    config = config_like(finished_run, arms=["pretrained", "finetuned", arm])
    config["train"] = {**config["train"], "tapt_steps": 8}
    run = create_run(config)
    rec = Recorded()
    assert run_experiment(run, rec, StopInArm(rec, arm)) is False
    folder = run.arms_dir / arm
    assert (folder / checkpoints / "checkpoint-3").is_dir()
    assert run.metrics()["finetuned"]["accuracy"] > 0 and run.metrics().get(arm) is None
    again = Recorded()
    assert run_experiment(run, again, StopInArm(again, arm, resume=True)) is True
    resumed = [e for e in again.events if e["type"] == "resume" or e["type"] == "phase"]
    assert not any(e.get("name") == "finetuned" for e in resumed)  # reported: not run again
    metrics = run.metrics()
    assert metrics["arms"] == ["pretrained", "finetuned", arm]
    assert metrics[arm]["train"]["steps"] == metrics["train"]["steps"]
    if arm == "tapt":
        assert metrics[arm]["mlm"]["steps"] == 8
        logs = [e["message"] for e in again.events if e["type"] == "log"]
        assert "TAPT: the masked-LM training goes on from checkpoint-3" in logs
    assert (folder / "model.safetensors").exists()
    assert not (folder / "checkpoints").exists() and not (folder / "mlm").exists()


# --- the New run form -------------------------------------------------------------------------


def test_the_forms_compare_boxes_tick_the_arms_and_the_tapt_options_need_tapt(
        tmp_path, monkeypatch):
    from test_schema import form_test
    from textual.widgets import Checkbox, Input
    from tui.conftest import settle

    async def check(pilot, screen) -> None:
        screen.query_one("#scratch", Checkbox).value = True
        screen.query_one("#unlabeled", Input).value = str(tmp_path / "more.txt")
        await settle(pilot)
        assert screen.options().arms == ("pretrained", "probe", "finetuned", "scratch")
        assert "is for the tapt arm: add tapt to arms" in screen.form_errors["unlabeled"]
        screen.query_one("#tapt", Checkbox).value = True
        screen.query_one("#probe", Checkbox).value = False
        screen.query_one("#tapt_steps", Input).value = "40"
        await settle(pilot)
        options = screen.options()
        assert options.arms == ("pretrained", "finetuned", "scratch", "tapt")
        assert options.tapt_steps == 40 and options.unlabeled == str(tmp_path / "more.txt")
        assert "unlabeled" not in screen.form_errors
        screen.query_one("#tapt_steps", Input).value = "0"
        await settle(pilot)
        assert "must be a positive number of steps" in screen.form_errors["tapt_steps"]
        screen.action_defaults()
        await settle(pilot, 0.8)
        assert screen.options().arms == ("pretrained", "probe", "finetuned")
        assert not screen.query_one("#scratch", Checkbox).value

    form_test(tmp_path, monkeypatch, check)
