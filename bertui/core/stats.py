"""Statistics for comparing arms on the same eval rows: a difference is a number with an
interval.

- each arm's accuracy gets a 95 % **Wilson** score interval (statsmodels), which stays inside
  [0, 1] and behaves at 0 % and 100 % where the normal approximation does not;
- two arms on the same rows get the difference in accuracy and in macro-F1 with a **paired
  percentile bootstrap** interval (scipy, the rows resampled together for both arms, seeded,
  10,000 resamples by default) and **McNemar's exact test** (two-sided binomial test on the
  discordant rows: the rows one arm gets right and the other wrong);
- a **verdict** in words that follows from those numbers only, and never calls a difference
  real when its interval contains zero.

Macro-F1 here is the mean F1 over the classes present in the eval rows (true or predicted), as
``bertui.core.metrics.classification_report`` computes it; each bootstrap resample takes the
classes present in that resample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
METRICS = ("accuracy", "macro_f1")
# Resamples computed at once (memory: BATCH × eval rows per array).
BATCH = 500


@dataclass(frozen=True)
class Comparison:
    """Arm ``a`` against arm ``b`` on one metric: ``delta`` = a − b."""

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
        """The interval excludes zero (and the test agrees at the same level)."""
        excludes_zero = self.ci_low > 0 or self.ci_high < 0
        return excludes_zero and self.p_value < 1 - CONFIDENCE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


_METRIC_FUNCTIONS = {"accuracy": accuracy, "macro_f1": macro_f1}


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
    percentile bootstrap interval (scipy.stats.bootstrap, the rows resampled jointly)."""
    from scipy.stats import bootstrap

    score = _METRIC_FUNCTIONS[metric]
    y, a, b = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    delta = float(score(y, a) - score(y, b))
    if len(y) < 2 or np.array_equal(a, b):
        return delta, delta, delta  # no variation to resample (scipy refuses a constant sample)

    def statistic(yy: Any, aa: Any, bb: Any, axis: int = -1) -> Any:
        return score(yy, aa) - score(yy, bb)

    result = bootstrap(
        (y, a, b),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        batch=BATCH,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return delta, float(low), float(high)


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
    _, _, p_value = mcnemar_exact(y_true, pred_a, pred_b)
    out = []
    for metric in METRICS:
        delta, low, high = paired_bootstrap(
            y_true, pred_a, pred_b, metric, resamples=resamples, seed=seed
        )
        out.append(Comparison(names[0], names[1], metric, delta, low, high, p_value, len(y_true)))
    return out


def compare_all(
    y_true: Any, predictions: dict[str, Any], *, resamples: int = RESAMPLES, seed: int = 0
) -> list[Comparison]:
    """Every pair of arms, in the order given (each later arm against each earlier one:
    ``finetuned`` − ``probe``, not the other way)."""
    names = list(predictions)
    out: list[Comparison] = []
    for j, later in enumerate(names):
        for earlier in names[:j]:
            out += compare(
                y_true, predictions[later], predictions[earlier], (later, earlier),
                resamples=resamples, seed=seed,
            )
    return out


def points(value: float) -> str:
    """A difference of proportions in percentage points, signed: "+3.0", "−2.0"."""
    text = f"{100 * value:+.1f}"
    return text.replace("-", "−")


def describe(c: Comparison, titles: dict[str, str] | None = None) -> str:
    """One sentence about one comparison, claiming a difference only where the interval
    excludes zero."""
    titles = titles or {}
    a, b = titles.get(c.a, c.a), titles.get(c.b, c.b)
    what = "accuracy" if c.metric == "accuracy" else "macro-F1"
    interval = f"95 % CI {points(c.ci_low)} to {points(c.ci_high)}, p = {c.p_value:.2g}"
    size = abs(100 * c.delta)
    if c.significant:
        verb = "beats" if c.delta > 0 else "trails"
        return f"{a} {verb} {b} by {size:.1f} points of {what} ({interval})."
    return (f"{a} and {b} are within noise on {c.n} eval rows: {points(c.delta)} points of "
            f"{what} ({interval}).")
