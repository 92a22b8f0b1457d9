"""The ``setfit`` arm: a tiny run through the real worker (the tiny random BERT of conftest.py
as a sentence-transformers body, SetFit's real Trainer), what it leaves on disk, ``bertui
predict`` with its model, its bounds, the one-line error without the optional extra, and (slow)
the embedded MiniLM with 16 examples per class of the real reviews data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bertui.core.arms.setfit import (
    HEAD_FILE,
    MAX_PAIRS,
    ROWS_PER_CLASS,
    load_setfit,
    pair_count,
    per_class_sample,
)
from bertui.core.engine import prepare_data
from bertui.core.runs import Run
from bertui.core.schema import RunOptions, validate_options
from conftest import run_bertui, train_tiny

ARMS = "pretrained,finetuned,setfit"


@pytest.fixture(scope="module")
def setfit_run(tiny_model, tmp_path_factory) -> tuple[dict, Run]:
    """One real run of the tiny BERT on the demo data with the SetFit arm (batches of 64: SetFit
    takes the run's batch size, and fewer steps are faster here)."""
    pytest.importorskip("setfit")
    home = tmp_path_factory.mktemp("setfit-home")
    metrics, path = train_tiny(tiny_model, home, "--arms", ARMS, "--batch-size", "64")
    return metrics, Run.load(path)


def test_setfit_reports_predicts_every_eval_row_and_keeps_its_model(setfit_run):
    metrics, run = setfit_run
    assert metrics["arms"] == ["pretrained", "finetuned", "setfit"]
    report = metrics["setfit"]
    assert report["note"].startswith("SetFit")
    with np.load(run.predictions_path, allow_pickle=False) as z:
        labels, pred, probs = z["labels"], z["setfit.pred"], z["setfit.probs"]
        assert z["arms"].tolist() == ["pretrained", "finetuned", "setfit"]
    assert pred.shape == labels.shape == (metrics["eval_rows"],)
    assert probs.shape == (len(labels), 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert (pred == labels).mean() == pytest.approx(report["accuracy"], abs=1e-12)
    assert report["cost"]["seconds"] > 0 and report["cost"]["train_samples_per_s"] > 0
    # The demo's training split has more than ROWS_PER_CLASS rows of each class: SetFit sees a
    # sample of each, and its pairs (8,320 of them drawn in full) stop at the cap.
    assert report["train_rows"] == 2 * ROWS_PER_CLASS
    assert report["pairs"] == MAX_PAIRS and report["steps"] == MAX_PAIRS // 64

    folder = run.arms_dir / "setfit"
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", HEAD_FILE, "modules.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".pkl", ".bin", ".pt"))]
    # What it keeps is the model it measured: the eval rows' probabilities come back.
    model = load_setfit(folder, max_length=128)
    assert model is not None
    texts = prepare_data(run.config).eval.texts[:8]
    np.testing.assert_allclose(model.predict_proba(texts), probs[:8], atol=1e-4)


def test_bertui_predict_answers_with_the_setfit_model(setfit_run):
    _, run = setfit_run
    proc = run_bertui("predict", str(run.path), "a wonderful film", "dull and far too long",
                      "--json", home=run.path.parent.parent, check=True)
    answers = json.loads(proc.stdout)
    assert len(answers) == 2
    for answer in answers:
        setfit = answer["setfit"]
        assert setfit["label"] in ("negative", "positive")
        assert sum(setfit["probs"].values()) == pytest.approx(1.0, abs=1e-3)
        assert {"pretrained", "finetuned"} <= set(answer)


def test_per_class_sample_and_pair_count():
    labels = [0] * 100 + [1] * 5 + [2] * 30
    rows = per_class_sample(labels, 16, seed=3)
    assert rows == sorted(rows) and len(set(rows)) == len(rows)
    taken = [labels[i] for i in rows]
    assert [taken.count(c) for c in (0, 1, 2)] == [16, 5, 16]
    assert per_class_sample(labels, 16, seed=3) == rows != per_class_sample(labels, 16, seed=4)
    # SetFit's oversampling on 16 + 16 rows: 272 same-class pairs (with each row itself), 256
    # other-class pairs: twice the larger.
    assert pair_count([0] * 16 + [1] * 16) == 544


MISSING = """
import sys
sys.modules["setfit"] = None  # as if the optional extra were not installed
sys.argv = ["bertui", *sys.argv[1:]]
from bertui.cli import main
sys.exit(main())
"""


def test_setfit_without_the_extra_is_one_line_and_writes_nothing(tiny_model, bertui_home):
    proc = subprocess.run(
        [sys.executable, "-c", MISSING, "train", "--model", str(tiny_model), "--dataset", "demo",
         "--arms", ARMS, "--quiet"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "setfit" in lines[0] and "pip install 'bertui[setfit]'" in lines[0]
    assert "Traceback" not in proc.stderr
    runs = bertui_home / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_validate_options_names_the_missing_extra(monkeypatch):
    from bertui.core import schema

    validate_options(RunOptions(arms=("pretrained", "finetuned", "setfit")))  # installed here
    monkeypatch.setattr(schema, "module_available", lambda name: name != "setfit")
    with pytest.raises(schema.FieldError) as info:
        validate_options(RunOptions(arms=("pretrained", "finetuned", "setfit")))
    assert info.value.field == "arms"
    assert "pip install 'bertui[setfit]'" in str(info.value)
    validate_options(RunOptions())  # the default arms need no extra


@pytest.mark.slow
def test_setfit_16_examples_per_class_of_reviews(shared_data, bertui_home):
    pytest.importorskip("setfit")
    proc = run_bertui(
        "train", "--model", "default",
        "--dataset", str(shared_data / "reviews" / "train.csv"),
        "--eval-dataset", str(shared_data / "reviews" / "test.csv"),
        "--max-train-samples", "32", "--arms", ARMS, "--json", "--quiet",
        home=bertui_home, timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert metrics["eval_rows"] == 600
    assert metrics["setfit"]["train_rows"] == 32
    assert metrics["setfit"]["accuracy"] >= 0.80
