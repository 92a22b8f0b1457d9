"""Classification metrics: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix.

``classification_report`` is the one code path: the final report of every arm and the
Trainer's ``compute_metrics`` during training (``training.accuracy_f1``, with
``use_evaluate=False``: the cheap path) both come from it. Accuracy and macro-F1 come from the
``evaluate`` library's metric modules where they can be loaded (hub or local cache); otherwise,
and for everything else, from scikit-learn. Which one was used is recorded; a missing metric
module never fails a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from numpy.typing import NDArray

_evaluate_modules: tuple[Any, Any] | None | bool = False  # False = not tried yet


def _evaluate_cached() -> bool:
    """Are evaluate's accuracy and f1 modules in the local modules cache? (Checked without
    importing evaluate, whose import alone takes seconds.)"""
    import os
    from pathlib import Path

    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    cache = Path(os.environ.get("HF_MODULES_CACHE", home / "modules")) / "evaluate_modules"
    metrics = cache / "metrics"
    return all(any(metrics.glob(f"*--{name}")) for name in ("accuracy", "f1"))


def _load_evaluate() -> tuple[Any, Any] | None:
    global _evaluate_modules
    if _evaluate_modules is False:
        try:
            from bertui.core.hub import go_offline_if_unreachable

            if not go_offline_if_unreachable() and not _evaluate_cached():
                _evaluate_modules = None  # offline and not cached: scikit-learn it is
                return None
            import evaluate

            _evaluate_modules = (evaluate.load("accuracy"), evaluate.load("f1"))
        except Exception:  # offline and not cached, or any loader problem
            _evaluate_modules = None
    return _evaluate_modules  # type: ignore[return-value]


def classification_report(
    y_true: Sequence[int] | NDArray[Any],
    y_pred: Sequence[int] | NDArray[Any],
    labels: list[str],
    *,
    use_evaluate: bool = True,
) -> dict[str, Any]:
    """The metrics bertui stores for one model on one eval split: accuracy, macro-F1 (over
    the classes present in the true or predicted labels, as scikit-learn and evaluate count
    it), per-class precision/recall/F1/support for every label, and the confusion matrix
    (rows: true label, columns: predicted). ``backend`` says which library gave accuracy and
    macro-F1."""
    import numpy as np
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    ids = list(range(len(labels)))
    y_true_a, y_pred_a = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true_a, y_pred_a, labels=ids, zero_division=0
    )
    accuracy, macro_f1 = 0.0, 0.0
    if len(y_true_a):
        accuracy = float(accuracy_score(y_true_a, y_pred_a))
        macro_f1 = float(f1_score(y_true_a, y_pred_a, average="macro", zero_division=0))
    backend = "scikit-learn"
    modules = _load_evaluate() if use_evaluate and len(y_true_a) else None
    if modules is not None:
        try:
            acc_mod, f1_mod = modules
            pred, ref = y_pred_a.tolist(), y_true_a.tolist()
            accuracy = float(acc_mod.compute(predictions=pred, references=ref)["accuracy"])
            macro_f1 = float(
                f1_mod.compute(predictions=pred, references=ref, average="macro")["f1"]
            )
            backend = "evaluate"
        except Exception:
            backend = "scikit-learn"
    return {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true_a, y_pred_a, labels=ids).tolist(),
        "backend": backend,
    }


def misclassified(
    texts: list[str],
    y_true: list[int],
    probs: Any,
    labels: list[str],
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Eval examples a model gets wrong, most confident mistakes first."""
    import numpy as np

    probs = np.asarray(probs)
    pred = probs.argmax(-1)
    wrong = [i for i in range(len(texts)) if pred[i] != y_true[i]]
    wrong.sort(key=lambda i: -float(probs[i, pred[i]]))
    return [
        {
            "text": texts[i],
            "label": labels[y_true[i]],
            "predicted": labels[int(pred[i])],
            "confidence": round(float(probs[i, pred[i]]), 4),
        }
        for i in wrong[:limit]
    ]
