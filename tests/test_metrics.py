"""Metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bertui.core.metrics import classification_report, misclassified
from bertui.core.training import accuracy_f1, fit_probe, probe_probs


def test_report_matches_hand_computed_values():
    # true:  0 0 0 1 1 2
    # pred:  0 0 1 1 2 2
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    r = classification_report(y_true, y_pred, ["a", "b", "c"], use_evaluate=False)
    assert r["accuracy"] == pytest.approx(4 / 6)
    # class a: tp 2, fp 0, fn 1 -> p 1, r 2/3, f1 0.8
    # class b: tp 1, fp 1, fn 1 -> p 1/2, r 1/2, f1 0.5
    # class c: tp 1, fp 1, fn 0 -> p 1/2, r 1, f1 2/3
    assert r["per_class"]["a"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert r["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert r["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert r["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r["backend"] == "scikit-learn"


def test_trainer_metrics_agree_with_the_report():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    labels = rng.integers(0, 3, size=50)

    class Pred:
        predictions = logits
        label_ids = labels

    quick = accuracy_f1(Pred())
    full = classification_report(
        labels.tolist(), logits.argmax(-1).tolist(), ["x", "y", "z"], use_evaluate=False
    )
    assert quick["accuracy"] == pytest.approx(full["accuracy"])
    assert quick["macro_f1"] == pytest.approx(full["macro_f1"])


def test_misclassified_lists_confident_mistakes_first():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    wrong = misclassified(["a", "b", "c", "d"], [0, 0, 0, 1], probs, ["neg", "pos"])
    assert [w["text"] for w in wrong] == ["c", "d", "b"]
    assert wrong[0] == {"text": "c", "label": "neg", "predicted": "pos", "confidence": 0.8}


@pytest.mark.parametrize("k", [2, 3])
def test_probe_weights_reproduce_sklearn(k):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] * 2 + x[:, 1] > 0).astype(int) if k == 2 else rng.integers(0, 3, size=120)
    probe = fit_probe(x, y.tolist(), k, seed=0)
    ours = probe_probs(probe, x)
    theirs = LogisticRegression(max_iter=2000, C=1.0, random_state=0).fit(x, y).predict_proba(x)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("present", [(1, 2), (0, 2), (0, 1, 3)])
def test_a_class_absent_from_training_is_never_predicted_by_the_probe(present):
    """Training rows of only some of the classes (a cap that drops a rare class): the probe
    gives the others no probability, also when two classes are present (sklearn's binary
    case), where they tied with the first present class and won on a lower id."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    y = [present[int(i)] for i in rng.integers(0, len(present), size=90)]
    probe = fit_probe(x, y, 4, seed=0)
    probs = probe_probs(probe, x)
    absent = [c for c in range(4) if c not in present]
    assert probs[:, absent].max() < 1e-6
    assert set(probs.argmax(-1).tolist()) <= set(present)


def test_the_token_cache_key_covers_every_tokenizer_file(tiny_model, tmp_path):
    """Two BPE models that differ only in merges.txt (their tokenizer_config.json alike)
    must not share cached token ids."""
    import shutil

    from bertui.core.training import tokenizer_fingerprint

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, merges in ((a, "#version: 0.2\nh e\n"), (b, "#version: 0.2\nl o\n")):
        shutil.copytree(tiny_model, folder)
        (folder / "merges.txt").write_text(merges)
        (folder / "vocab.json").write_text('{"h": 0, "e": 1}')
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
    (b / "merges.txt").write_text("#version: 0.2\nh e\n")
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)


def test_training_and_the_arms_get_one_report():
    """compute_metrics during training is ``classification_report``'s numbers (one code path,
    not a copy): a class in neither the labels nor the predictions does not count in macro-F1,
    and still has its row and column in the confusion matrix."""
    y_true = [0, 0, 1, 1, 1]
    y_pred = [0, 1, 1, 1, 0]  # label "c" (2) occurs nowhere
    r = classification_report(y_true, y_pred, ["a", "b", "c"], use_evaluate=False)
    # a: tp 1, fp 1, fn 1 -> f1 1/2;  b: tp 2, fp 1, fn 1 -> f1 2/3
    assert r["accuracy"] == pytest.approx(3 / 5)
    assert r["macro_f1"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 0, 0]]
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}

    class Pred:
        predictions = (np.eye(3)[y_pred] * 4.0, None)  # logits (and another output), as a model
        label_ids = np.asarray(y_true)

    assert accuracy_f1(Pred()) == {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
