"""The embedded MiniLM on real data with default settings: the accuracy bertui promises.

Slow (minutes on a 2-core CPU); skipped where ../shared/data is absent.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_bertui

pytestmark = pytest.mark.slow


def test_reviews_pretrained_is_near_chance_and_finetuning_pays_off(shared_data, bertui_home):
    proc = run_bertui(
        "train",
        "--model",
        "default",
        "--dataset",
        str(shared_data / "reviews" / "train.csv"),
        "--eval-dataset",
        str(shared_data / "reviews" / "test.csv"),
        "--json",
        "--quiet",
        home=bertui_home,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert metrics["eval_rows"] == 600
    assert metrics["pretrained"]["accuracy"] <= 0.65
    assert metrics["pretrained"]["note"] == "untrained classification head"
    assert metrics["finetuned"]["accuracy"] >= 0.88
    assert metrics["probe"]["accuracy"] > metrics["pretrained"]["accuracy"]


def test_trec_string_labels_six_classes(shared_data, bertui_home):
    proc = run_bertui(
        "train",
        "--model",
        "default",
        "--dataset",
        str(shared_data / "trec" / "train.csv"),
        "--eval-dataset",
        str(shared_data / "trec" / "test.csv"),
        "--text-column",
        "question",
        "--label-column",
        "coarse_label",
        "--max-train-samples",
        "1000",
        "--no-probe",
        "--json",
        "--quiet",
        home=bertui_home,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert metrics["labels"] == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert metrics["finetuned"]["accuracy"] >= 0.80
    assert len(metrics["finetuned"]["confusion_matrix"]) == 6
