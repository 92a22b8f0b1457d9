"""bertui.core.stats against values computed by hand (binomial sums, Wilson's formula, the
normal approximation of a paired bootstrap) and against scikit-learn's macro-F1."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from bertui.core import stats


def test_mcnemar_exact_is_the_two_sided_binomial_test_of_the_discordant_rows():
    # 10 rows: both right on 3, only a right on 1, only b right on 6.
    y = [0] * 10
    a = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    b = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    only_a, only_b, p = stats.mcnemar_exact(y, a, b)
    assert (only_a, only_b) == (1, 6)
    # P(X <= 1) for X ~ Binomial(7, 1/2) is (1 + 7) / 128; two-sided doubles it.
    assert p == pytest.approx(2 * 8 / 128)
    from scipy.stats import binomtest

    assert p == binomtest(1, 7, 0.5, alternative="two-sided").pvalue


def test_mcnemar_without_discordant_rows_is_one():
    assert stats.mcnemar_exact([0, 1], [0, 1], [0, 1])[2] == 1.0


def test_wilson_interval_matches_the_formula():
    k, n, z = 8, 10, 1.959963984540054
    phat = k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    low, high = stats.wilson_interval(k, n)
    assert low == pytest.approx(centre - half, abs=1e-9)
    assert high == pytest.approx(centre + half, abs=1e-9)
    assert stats.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_macro_f1_agrees_with_scikit_learn_and_is_vectorised():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, size=200))
    assert stats.macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"))
    batch = np.stack([y, y])
    preds = np.stack([p, y])
    assert stats.macro_f1(batch, preds) == pytest.approx([f1_score(y, p, average="macro"), 1.0])


def test_paired_bootstrap_interval_matches_the_normal_approximation():
    # Paired correctness: a right and b wrong on 60 rows, the reverse on 30, equal on 310.
    n = 400
    y = np.zeros(n, dtype=int)
    a = np.zeros(n, dtype=int)
    b = np.zeros(n, dtype=int)
    b[:60] = 1
    a[60:90] = 1
    delta, low, high = stats.paired_bootstrap(y, a, b, "accuracy", seed=3)
    d = np.zeros(n)
    d[:60], d[60:90] = 1, -1
    assert delta == pytest.approx(d.mean())
    se = d.std(ddof=0) / math.sqrt(n)
    assert low == pytest.approx(d.mean() - 1.96 * se, abs=0.006)
    assert high == pytest.approx(d.mean() + 1.96 * se, abs=0.006)
    # Seeded: the same interval again.
    assert stats.paired_bootstrap(y, a, b, "accuracy", seed=3) == (delta, low, high)


def test_identical_predictions_have_a_zero_interval():
    assert stats.paired_bootstrap([0, 1, 1], [0, 1, 0], [0, 1, 0]) == (0.0, 0.0, 0.0)


def test_the_verdict_never_claims_a_difference_whose_interval_contains_zero():
    # 100 rows, a 3-point gain (5 rows only a gets right, 2 only b): noise.
    y = np.zeros(100, dtype=int)
    a = np.zeros(100, dtype=int)
    b = np.zeros(100, dtype=int)
    b[:5] = 1
    a[5:7] = 1
    (acc, _f1) = stats.compare(y, a, b, ("finetuned", "probe"), resamples=2000)
    assert acc.delta == pytest.approx(0.03)
    assert acc.ci_low < 0 < acc.ci_high and not acc.significant
    sentence = stats.describe(acc, {"finetuned": "Fine-tuning", "probe": "the linear probe"})
    assert "within noise on 100 eval rows" in sentence and "beats" not in sentence
    # 30 rows only a gets right, none the other way: real.
    b[:30] = 1
    a[:] = 0
    (acc, _f1) = stats.compare(y, a, b, ("finetuned", "probe"), resamples=2000)
    assert acc.ci_low > 0 and acc.significant
    assert stats.describe(acc).startswith("finetuned beats probe by 30.0 points of accuracy")


def test_compare_all_puts_each_later_arm_against_each_earlier_one():
    y = [0, 1, 0, 1]
    out = stats.compare_all(y, {"pretrained": [1, 1, 1, 1], "probe": [0, 1, 1, 1],
                                "finetuned": [0, 1, 0, 1]}, resamples=200)
    pairs = [(c.a, c.b, c.metric) for c in out]
    assert pairs == [("probe", "pretrained", "accuracy"), ("probe", "pretrained", "macro_f1"),
                     ("finetuned", "pretrained", "accuracy"),
                     ("finetuned", "pretrained", "macro_f1"),
                     ("finetuned", "probe", "accuracy"), ("finetuned", "probe", "macro_f1")]
    assert out[-2].delta == pytest.approx(0.25)
    assert set(out[0].as_dict()) == {"a", "b", "metric", "delta", "ci_low", "ci_high",
                                     "p_value", "n"}


def test_all_pairs_at_once_are_scipys_paired_bootstrap_of_each_pair():
    """compare_all bootstraps every pair in one pass over row counts: each pair's interval is
    exactly scipy.stats.bootstrap(paired=True) on that pair alone, with the same seed."""
    from scipy.stats import bootstrap

    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, size=300)
    arms = {name: np.where(rng.random(300) < q, y, rng.integers(0, 3, size=300))
            for name, q in (("pretrained", 0.2), ("probe", 0.6), ("finetuned", 0.7))}
    out = stats.compare_all(y, arms, resamples=2000, seed=11)
    assert len(out) == 6
    for c in out:
        score = stats.accuracy if c.metric == "accuracy" else stats.macro_f1

        def statistic(yy, aa, bb, axis=-1, score=score):
            return score(yy, aa) - score(yy, bb)

        alone = bootstrap((y, arms[c.a], arms[c.b]), statistic, paired=True, vectorized=True,
                          n_resamples=2000, batch=500, method="percentile",
                          rng=np.random.default_rng(11))
        assert (c.ci_low, c.ci_high) == pytest.approx(tuple(alone.confidence_interval),
                                                      abs=1e-12), c
        assert c.delta == pytest.approx(float(statistic(y, arms[c.a], arms[c.b])), abs=1e-12)


def test_thousands_of_rows_agree_with_an_independent_bootstrap():
    """The check this issue is judged by: bounds within 0.5 points of another 10,000-resample
    bootstrap (its own generator), on a few thousand rows."""
    rng = np.random.default_rng(3)
    n = 3000
    y = rng.integers(0, 2, size=n)
    a = np.where(rng.random(n) < 0.88, y, 1 - y)
    b = np.where(rng.random(n) < 0.85, y, 1 - y)
    (acc, f1) = stats.compare(y, a, b, ("finetuned", "probe"), seed=0)
    idx = np.random.default_rng(99).integers(0, n, size=(10_000, n))
    diffs = (a[idx] == y[idx]).mean(1) - (b[idx] == y[idx]).mean(1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert abs(acc.ci_low - low) < 0.005 and abs(acc.ci_high - high) < 0.005
    f1s = [f1_score(y[i], a[i], average="macro") - f1_score(y[i], b[i], average="macro")
           for i in idx[:400]]  # scikit-learn on a few hundred: the same distribution
    assert np.percentile(f1s, 2.5) == pytest.approx(f1.ci_low, abs=0.01)


def test_significance_is_the_interval_and_a_comparison_turns_around():
    c = stats.Comparison("a", "b", "accuracy", 0.03, 0.001, 0.06, 0.07, 100)
    assert c.significant  # the interval excludes 0 even where McNemar's p is above 0.05
    flipped = c.flipped()
    assert (flipped.a, flipped.b, flipped.delta, flipped.ci_low, flipped.ci_high) == \
        ("b", "a", -0.03, -0.06, -0.001)
    assert stats.Comparison.from_dict(c.as_dict()) == c
    assert not stats.Comparison("a", "b", "accuracy", 0.0, 0.0, 0.05, 0.2, 100).significant
    assert [stats.p_text(p) for p in (0.45, 0.0123, 0.0004)] == \
        ["p = 0.45", "p = 0.012", "p < 0.001"]
