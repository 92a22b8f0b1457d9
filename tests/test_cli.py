"""The headless CLI end to end, on a tiny random BERT: real worker, real Trainer, real files."""

from __future__ import annotations

import json
import shutil

import pytest

from bertui.core.events import read_events
from bertui.core.runs import Run
from conftest import run_bertui


def test_train_makes_a_complete_run_directory(finished_run):
    run = Run.load(finished_run)
    assert run.state == "finished"
    for name in (
        "config.toml",
        "status.json",
        "events.jsonl",
        "metrics.json",
        "worker.log",
        "pretrained_head.safetensors",
        "probe.safetensors",
    ):
        assert (finished_run / name).is_file(), name
    assert (finished_run / "model" / "model.safetensors").is_file()
    assert not list((finished_run / "model").glob("*.bin"))
    assert run.last_checkpoint() is not None
    assert run.config["labels"]["id2label"] == {"0": "negative", "1": "positive"}

    metrics = run.metrics()
    for name in ("pretrained", "probe", "finetuned"):
        m = metrics[name]
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
        assert sum(map(sum, m["confusion_matrix"])) == metrics["eval_rows"] == 100
        assert set(m["per_class"]) == {"negative", "positive"}
    assert metrics["pretrained"]["note"] == "untrained classification head"
    assert metrics["metrics_backend"] in ("evaluate", "scikit-learn")
    assert metrics["train"]["train_samples_per_s"] > 0
    assert isinstance(metrics["errors"], list)

    events = read_events(run.events_path)
    types = {e["type"] for e in events}
    assert {
        "phase",
        "baseline",
        "run_start",
        "progress",
        "train",
        "eval",
        "telemetry",
        "checkpoint",
        "run_end",
    } <= types
    assert all({"v", "type", "time", "step"} <= e.keys() for e in events)
    start = next(e for e in events if e["type"] == "run_start")
    assert start["total_steps"] == 23  # 360 rows / batch 16, one epoch
    assert events[-1]["type"] == "run_end" and events[-1]["state"] == "finished"
    tele = next(e for e in events if e["type"] == "telemetry")
    assert tele["ram_total"] > 0 and isinstance(tele["gpus"], list)


def test_saved_model_loads_with_pipeline_and_predict_agrees(finished_run, session_home):
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(finished_run / "model"), device="cpu")
    texts = ["An absolute delight from start to finish.", "The worst customer service ever."]
    expected = [r["label"] for r in clf(texts)]
    assert set(expected) <= {"negative", "positive"}

    proc = run_bertui("predict", finished_run.name, *texts, "--json", home=session_home, check=True)
    rows = json.loads(proc.stdout)
    assert [r["finetuned"]["label"] for r in rows] == expected
    for row in rows:
        assert set(row) == {"text", "pretrained", "probe", "finetuned"}
        for name in ("pretrained", "probe", "finetuned"):
            assert sum(row[name]["probs"].values()) == pytest.approx(1.0, abs=1e-3)


def test_predict_rebuilds_the_measured_pretrained_model(finished_run):
    """The classifier pane must show the very model that was measured: predicting the eval
    set with the reloaded pre-trained model gives the recorded accuracy."""
    from bertui.core.data import prepare
    from bertui.core.predict import RunPredictor

    run = Run.load(finished_run)
    prepared = prepare("demo")
    predictor = RunPredictor(run).load()
    rows = predictor.predict(prepared.eval.texts)
    for name in ("pretrained", "probe", "finetuned"):
        predicted = [predictor.labels.index(r[name]["label"]) for r in rows]
        accuracy = sum(p == t for p, t in zip(predicted, prepared.eval.labels)) / len(predicted)
        assert accuracy == pytest.approx(run.metrics()[name]["accuracy"], abs=1e-9), name


def test_one_text_goes_through_the_traced_forward_with_the_same_answer(finished_run):
    """The pane predicts one sentence at a time through TorchScript traces of the models; they
    must give what the eager forward gives (the batch path above is eager)."""
    from bertui.core.data import prepare
    from bertui.core.predict import RunPredictor

    predictor = RunPredictor(Run.load(finished_run)).load()
    assert set(predictor._fast) == {"base", "finetuned"}
    assert all(f is not None for f in predictor._fast.values())  # the tiny BERT traces
    texts = prepare("demo").eval.texts[:12] + ["ok", "Not what I expected at all, sadly."]
    fast = [predictor.predict([t])[0] for t in texts]
    traced, predictor._fast = predictor._fast, {}
    eager = [predictor.predict([t])[0] for t in texts]
    predictor._fast = traced
    for f, e in zip(fast, eager):
        for name in ("pretrained", "probe", "finetuned"):
            assert f[name]["label"] == e[name]["label"], name
            for label, p in e[name]["probs"].items():
                assert f[name]["probs"][label] == pytest.approx(p, abs=2e-4), name


def test_runs_lists_the_run(finished_run, session_home):
    rows = json.loads(run_bertui("runs", "--json", home=session_home, check=True).stdout)
    row = next(r for r in rows if r["id"] == finished_run.name)
    assert row["name"] == "tiny-demo" and row["status"] == "finished"
    assert row["accuracy_before"] is not None and row["accuracy_after"] is not None
    text = run_bertui("runs", home=session_home, check=True).stdout
    assert finished_run.name in text and "finished" in text


def test_detach_returns_the_run_id_and_cancel_then_resume(tiny_model, bertui_home):
    proc = run_bertui(
        "train",
        "--model",
        str(tiny_model),
        "--dataset",
        "demo",
        "--epochs",
        "30",
        "--no-probe",
        "--checkpoint-minutes",
        "0.005",
        "--detach",
        home=bertui_home,
        check=True,
    )
    run_id = proc.stdout.strip()
    run = Run.load(bertui_home / "runs" / run_id)
    _wait_for(lambda: any(e["type"] == "checkpoint" for e in read_events(run.events_path)))
    cancel = run_bertui("cancel", run_id, home=bertui_home, check=True)
    assert "cancelled" in cancel.stderr
    assert run.refresh().state == "cancelled"
    assert run.last_checkpoint() is not None
    resumed = run_bertui("resume", run_id, "--detach", home=bertui_home, check=True)
    assert resumed.stdout.strip() == run_id
    _wait_for(lambda: any(e["type"] == "resume" for e in read_events(run.events_path)))
    run_bertui("cancel", run_id, home=bertui_home, check=True)
    assert run.refresh().state == "cancelled"


def test_resume_of_a_finished_run_is_refused(finished_run, session_home, bertui_home):
    copy = bertui_home / "runs" / finished_run.name
    shutil.copytree(finished_run, copy)
    proc = run_bertui("resume", finished_run.name, home=bertui_home)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "already finished" in proc.stderr


def _wait_for(predicate, timeout: float = 180.0) -> None:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("timed out waiting")


def test_the_app_with_a_runs_folder_under_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    proc = run_bertui(home=blocker / "bertui", timeout=60)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in proc.stderr
    assert "cannot read the runs folder" in line and "Not a directory" in line

