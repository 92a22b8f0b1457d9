"""Statistics for comparing arms on the same eval rows: a difference is a number with an
interval.

- each arm's accuracy gets a 95 % **Wilson** score interval (statsmodels), which stays inside
  [0, 1] and behaves at 0 % and 100 % where the normal approximation does not;
- two arms on the same rows get the difference in accuracy and in macro-F1 with a **paired
  percentile bootstrap** interval (``scipy.stats.bootstrap``: the eval rows resampled with
  replacement, the same rows for both arms, seeded, 10,000 resamples by default) and
  **McNemar's exact test** (the two-sided binomial test of the discordant rows, the rows one
  arm gets right and the other wrong, against 1/2);
- ``describe`` puts one comparison in words, and never calls a difference real when its
  interval contains zero (``bertui.core.verdict`` builds a run's verdict from them).

Every pair of arms is bootstrapped in one pass (``compare_all``): each resample is a vector of
row counts, and every arm's accuracy and macro-F1 on it come from one matrix product of those
counts with per-row indicators (right or wrong; true and predicted class). The resampled rows
depend only on the seed and the number of rows, so a pair gets the same interval whichever
other arms ran beside it, and the same as ``scipy.stats.bootstrap(..., paired=True)`` on that
pair alone.

Macro-F1 here is the mean F1 over the classes present in the eval rows (true or predicted), as
``bertui.core.metrics.classification_report`` computes it; each bootstrap resample takes the
classes present in that resample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
METRICS = ("accuracy", "macro_f1")
# Resamples computed at once: BATCH, or fewer on many rows (memory: a few arrays of
# resamples × rows, about ROWS_AT_ONCE × 8 bytes each).
BATCH = 500
ROWS_AT_ONCE = 2_000_000


@dataclass(frozen=True)
class Comparison:
    """Arm ``a`` against arm ``b`` on one metric: ``delta`` = a − b, its interval, McNemar's
    p-value (the same for both metrics: it compares right and wrong) and the eval rows."""

    a: str
    b: str
    metric: str
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes zero. (McNemar's test can disagree near the edge; the
        verdict goes by the interval and quotes the p-value beside it.)"""
        return self.ci_low > 0 or self.ci_high < 0

    def flipped(self) -> Comparison:
        """The same comparison the other way round: ``b`` − ``a``."""
        return replace(self, a=self.b, b=self.a, delta=-self.delta, ci_low=-self.ci_high,
                       ci_high=-self.ci_low)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> Comparison:
        """One entry of metrics.json's ``comparisons``."""
        return cls(str(entry["a"]), str(entry["b"]), str(entry["metric"]),
                   float(entry["delta"]), float(entry["ci_low"]), float(entry["ci_high"]),
                   float(entry["p_value"]), int(entry["n"]))


def wilson_interval(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n``."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return (0.0, 1.0)
    low, high = proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


def mcnemar_exact(y_true: Any, pred_a: Any, pred_b: Any) -> tuple[int, int, float]:
    """McNemar's exact test: (rows only ``a`` gets right, rows only ``b`` gets right, the
    two-sided p-value of the binomial test of those discordant counts against 1/2)."""
    from scipy.stats import binomtest

    y, a, b = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    only_a = int(((a == y) & (b != y)).sum())
    only_b = int(((a != y) & (b == y)).sum())
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    p = binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    return only_a, only_b, float(min(1.0, p))


def accuracy(y_true: Any, pred: Any) -> Any:
    """Accuracy along the last axis (vectorised: a batch of resamples at once)."""
    return (np.asarray(y_true) == np.asarray(pred)).mean(axis=-1)


def macro_f1(y_true: Any, pred: Any) -> Any:
    """Macro-F1 along the last axis over the classes present (true or predicted) in each row
    of the batch."""
    y, p = np.asarray(y_true), np.asarray(pred)
    classes = np.union1d(np.unique(y), np.unique(p))
    total = np.zeros(y.shape[:-1])
    present = np.zeros(y.shape[:-1])
    for c in classes:
        tp = ((p == c) & (y == c)).sum(axis=-1)
        fp = ((p == c) & (y != c)).sum(axis=-1)
        fn = ((p != c) & (y == c)).sum(axis=-1)
        seen = (tp + fp + fn) > 0
        denom = np.where(seen, 2 * tp + fp + fn, 1)
        total = total + np.where(seen, 2 * tp / denom, 0.0)
        present = present + seen
    return total / np.maximum(present, 1)


class Indicators:
    """Per-row 0/1 indicators of several arms' predictions on the same rows, so that the
    accuracy and macro-F1 of every arm on a weighted set of rows (a bootstrap resample's row
    counts) is one matrix product: per arm the rows it gets right, per class the rows of that
    class, per arm and class the rows it predicts as that class and those it gets right."""

    def __init__(self, y_true: Any, preds: list[Any]) -> None:
        y = np.asarray(y_true)
        p = np.stack([np.asarray(v) for v in preds])  # arms × rows
        classes = np.union1d(np.unique(y), np.unique(p))
        self.arms, self.classes = len(preds), len(classes)
        true = y[None, :] == classes[:, None]  # classes × rows
        predicted = p[:, None, :] == classes[None, :, None]  # arms × classes × rows
        hit = predicted & true[None]
        columns = [p == y[None, :], true, predicted.reshape(-1, len(y)), hit.reshape(-1, len(y))]
        self.matrix = np.concatenate(columns).T.astype(np.float64)  # rows × indicators

    def scores(self, counts: Any) -> tuple[Any, Any]:
        """(accuracy, macro-F1), each resamples × arms, for row counts of shape resamples ×
        rows (each resample's rows: how often each eval row was drawn)."""
        a, k = self.arms, self.classes
        sums = np.asarray(counts, dtype=np.float64) @ self.matrix
        rows = sums[:, a:a + k].sum(axis=1, keepdims=True)
        acc = sums[:, :a] / np.maximum(rows, 1)
        true = sums[:, a:a + k][:, None, :]
        predicted = sums[:, a + k:a + k + a * k].reshape(-1, a, k)
        hit = sums[:, a + k + a * k:].reshape(-1, a, k)
        seen = (true + predicted) > 0
        f1 = np.where(seen, 2 * hit / np.maximum(true + predicted, 1), 0.0)
        macro = f1.sum(axis=2) / np.maximum(seen.sum(axis=2), 1)
        return acc, macro


def row_counts(indices: Any, n: int) -> Any:
    """How often each of ``n`` rows occurs in each resample (``indices``: resamples × n)."""
    idx = np.atleast_2d(np.asarray(indices))
    flat = idx + n * np.arange(len(idx))[:, None]
    return np.bincount(flat.ravel(), minlength=len(idx) * n).reshape(len(idx), n)


def pair_order(names: list[str]) -> list[tuple[int, int]]:
    """Every pair of arms (``later``, ``earlier``) by position: each later arm against each
    earlier one (``finetuned`` − ``probe``, not the other way)."""
    return [(j, i) for j in range(len(names)) for i in range(j)]


def bootstrap_deltas(
    y_true: Any, preds: list[Any], pairs: list[tuple[int, int]], *,
    resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE,
) -> tuple[Any, Any, Any]:
    """(delta, low, high), each pairs × metrics: the difference arm j − arm i of each pair
    (j, i) on the rows, and its paired percentile bootstrap interval (one
    ``scipy.stats.bootstrap`` over the row indices for every pair)."""
    from scipy.stats import bootstrap

    n = len(y_true)
    table = Indicators(y_true, preds)
    later, earlier = [j for j, _ in pairs], [i for _, i in pairs]

    def statistic(indices: Any, axis: int = -1) -> Any:
        acc, f1 = table.scores(row_counts(indices, n))
        stacked = np.stack([acc[:, later] - acc[:, earlier], f1[:, later] - f1[:, earlier]])
        out = np.moveaxis(stacked, 0, -1)  # resamples × pairs × metrics
        return np.moveaxis(out, 0, -1) if np.ndim(indices) > 1 else out[0]

    observed = statistic(np.arange(n))
    if n < 2 or not pairs:
        return observed, observed, observed  # nothing to resample
    result = bootstrap(
        (np.arange(n),), statistic, vectorized=True, n_resamples=resamples,
        batch=max(1, min(BATCH, ROWS_AT_ONCE // n)),
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval  # arms that agree on every row: exactly [0, 0]
    return observed, low, high


def paired_bootstrap(
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    metric: str = "accuracy",
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """(metric(a) − metric(b), low, high): the difference on the eval rows and its paired
    percentile bootstrap interval."""
    delta, low, high = bootstrap_deltas(y_true, [pred_b, pred_a], [(1, 0)], resamples=resamples,
                                        seed=seed, confidence=confidence)
    m = METRICS.index(metric)
    return float(delta[0, m]), float(low[0, m]), float(high[0, m])


def compare(
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    names: tuple[str, str],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[Comparison]:
    """Arm ``names[0]`` against ``names[1]`` on every metric of ``METRICS``."""
    return compare_all(y_true, {names[1]: pred_b, names[0]: pred_a}, resamples=resamples,
                       seed=seed)


def compare_all(
    y_true: Any, predictions: dict[str, Any], *, resamples: int = RESAMPLES, seed: int = 0
) -> list[Comparison]:
    """Every pair of arms, in the order given (each later arm against each earlier one:
    ``finetuned`` − ``probe``, not the other way), on every metric of ``METRICS``."""
    names = list(predictions)
    preds = [np.asarray(predictions[name]) for name in names]
    pairs = pair_order(names)
    if not pairs:
        return []
    delta, low, high = bootstrap_deltas(y_true, preds, pairs, resamples=resamples, seed=seed)
    out: list[Comparison] = []
    for k, (j, i) in enumerate(pairs):
        _, _, p_value = mcnemar_exact(y_true, preds[j], preds[i])
        for m, metric in enumerate(METRICS):
            out.append(Comparison(names[j], names[i], metric, float(delta[k, m]),
                                  float(low[k, m]), float(high[k, m]), p_value, len(y_true)))
    return out


def points(value: float) -> str:
    """A difference of proportions in percentage points, signed: "+3.0", "−2.0"."""
    text = f"{100 * value:+.1f}"
    if text in ("+0.0", "-0.0"):
        text = "0.0"
    return text.replace("-", "−")


def size(c: Comparison) -> str:
    """How large a difference is, unsigned: "15.0 points"."""
    return f"{abs(100 * c.delta):.1f} points"


def p_text(p: float) -> str:
    """A p-value as people read it: "p = 0.45", "p = 0.0012", "p < 0.001"."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def interval_text(c: Comparison) -> str:
    """ "95 % CI −2.0 to +8.0, p = 0.45" """
    return f"95 % CI {points(c.ci_low)} to {points(c.ci_high)}, {p_text(c.p_value)}"


def describe(c: Comparison, titles: dict[str, str] | None = None) -> str:
    """One sentence about one comparison, claiming a difference only where the interval
    excludes zero ("within noise" exactly where it contains zero)."""
    titles = titles or {}
    a, b = titles.get(c.a, c.a), titles.get(c.b, c.b)
    what = "accuracy" if c.metric == "accuracy" else "macro-F1"
    if c.significant:
        verb = "beats" if c.delta > 0 else "trails"
        return (f"{a} {verb} {b} by {size(c)} of {what} "
                f"({interval_text(c)}).")
    return (f"{a} and {b} are within noise on {c.n} eval rows: "
            f"{points(c.delta)} points of {what} ({interval_text(c)}).")
