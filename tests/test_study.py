"""The study's grid, its nested stratified subsets, and its summary (bertui.core.study), against
hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from bertui.core.errors import BadInput
from bertui.core.study import (
    Grid,
    Outcome,
    budget_subset,
    check_budgets,
    class_counts,
    crossover,
    fit_power_law,
    forecast,
    parse_budgets,
    power_law,
    seeds_of,
    summarize,
)

# --- the grid ---------------------------------------------------------------------------------


def test_budgets_are_sorted_with_all_last():
    assert parse_budgets("512, 32,all,128") == [32, 128, 512, None]
    assert parse_budgets("ALL") == [None]
    assert parse_budgets("2_048") == [2048]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0,32", "'0' is not a positive whole number or 'all'"),
        ("-3", "'-3' is not a positive"),
        ("32,x", "'x' is not a positive"),
        ("32,,64", "an empty part is not"),
        ("32,64,32", "32 is given twice"),
        ("all,ALL", "all is given twice"),
        ("1.5", "'1.5' is not"),
        ("", "--budgets is empty"),
    ],
)
def test_a_bad_budget_is_one_line(text, says):
    with pytest.raises(BadInput, match="budgets") as info:
        parse_budgets(text)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_budgets_are_checked_against_the_train_pool():
    check_budgets([6, 100, None], pool_rows=2000, classes=6)  # fine
    with pytest.raises(BadInput, match=r"4096 is larger than the training set \(2000 rows\)"):
        check_budgets([32, 4096], pool_rows=2000, classes=2)
    with pytest.raises(BadInput, match=r"5 is smaller than the number of classes \(6\)"):
        check_budgets([5, 64], pool_rows=2000, classes=6)
    with pytest.raises(BadInput, match="2000 is the whole training set, the same as 'all'"):
        check_budgets([2000, None], pool_rows=2000, classes=2)
    check_budgets([2000], pool_rows=2000, classes=2)  # the whole set, given as a number: fine


def test_seeds():
    assert seeds_of(3) == [0, 1, 2]
    assert seeds_of(2, first=5) == [5, 6]
    for bad in (0, -1):
        with pytest.raises(BadInput, match=f"--seeds must be a whole number ≥ 1 \\(got {bad}\\)"):
            seeds_of(bad)


def test_the_grid_runs_a_whole_curve_per_seed_first():
    grid = Grid((32, None), (0, 1), ("probe", "finetuned"))
    assert list(grid.cells()) == [(0, 32), (0, None), (1, 32), (1, None)]
    assert len(grid) == 4


# --- the subsets ------------------------------------------------------------------------------


def test_class_counts_by_hand():
    # one per class first: [1, 1, 1]; then 6/1.5 = 4 beats 3/1.5 = 2 (a class of one is full)
    assert class_counts([6, 3, 1], 3) == [1, 1, 1]
    assert class_counts([6, 3, 1], 4) == [2, 1, 1]
    assert class_counts([6, 3, 1], 5) == [3, 1, 1]  # 6/2.5 = 2.4 > 2
    assert class_counts([6, 3, 1], 6) == [3, 2, 1]  # 6/3.5 = 1.71 < 2
    assert class_counts([6, 3, 1], 10) == [6, 3, 1]
    assert class_counts([500, 500], 10) == [5, 5]
    assert class_counts([900, 100], 10) == [9, 1]  # proportional
    assert class_counts([900, 100], 100) == [90, 10]


def test_class_counts_never_shrink_as_the_budget_grows():
    sizes = [37, 5, 120, 2, 61]
    previous = class_counts(sizes, len(sizes))
    for budget in range(len(sizes) + 1, sum(sizes) + 1):
        counts = class_counts(sizes, budget)
        assert sum(counts) == budget
        assert all(c >= p for c, p in zip(counts, previous))
        assert all(c <= s for c, s in zip(counts, sizes))
        previous = counts


def test_subsets_are_nested_stratified_and_seeded():
    rng = np.random.default_rng(7)
    labels = rng.choice(3, size=400, p=[0.6, 0.3, 0.1])
    budgets = [3, 10, 40, 160, None]
    for seed in (0, 1, 2):
        subsets = [budget_subset(labels, b, seed) for b in budgets]
        for b, rows in zip(budgets, subsets):
            assert len(rows) == (400 if b is None else b)
            assert len(set(rows.tolist())) == len(rows)
            assert set(labels[rows].tolist()) == {0, 1, 2}  # every class in every budget
        for small, large in zip(subsets, subsets[1:]):
            assert set(small.tolist()) <= set(large.tolist())  # nested
        share = np.bincount(labels[subsets[3]], minlength=3) / 160
        assert np.allclose(share, np.bincount(labels, minlength=3) / 400, atol=0.01)
    assert np.array_equal(budget_subset(labels, 40, 1), budget_subset(labels, 40, 1))
    assert not np.array_equal(budget_subset(labels, 40, 1), budget_subset(labels, 40, 2))
    assert np.array_equal(budget_subset(labels, None, 3), np.arange(400))


def test_nested_whatever_the_budgets_asked():
    # the rows of a budget do not depend on which other budgets the study has
    labels = np.repeat([0, 1], [70, 30])
    assert set(budget_subset(labels, 17, 4)) <= set(budget_subset(labels, 18, 4))
    assert set(budget_subset(labels, 5, 4)) <= set(budget_subset(labels, 99, 4))


# --- the forecast -----------------------------------------------------------------------------


def test_the_power_law_fit_recovers_known_parameters():
    ns = [32, 128, 512, 2048, 8192]
    errors = power_law(ns, 2.0, 0.5, 0.05)
    fit = fit_power_law(ns, errors)
    assert fit.a == pytest.approx(2.0, rel=1e-4)
    assert fit.b == pytest.approx(0.5, rel=1e-4)
    assert fit.c == pytest.approx(0.05, abs=1e-5)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9) and fit.rmse < 1e-6
    low, high = fit.interval(16384)
    assert low <= fit.predict(16384) <= high and high - low < 1e-3  # exact points: a tight fit


def test_the_forecast_extrapolates_with_an_interval():
    rows = [50, 200, 800, 3200]
    errors = power_law(rows, 3.0, 0.4, 0.08) + np.array([0.004, -0.003, 0.002, -0.001])
    points = [{"rows": n, "accuracy": {"mean": 1 - e}} for n, e in zip(rows, errors)]
    f = forecast(points)
    assert [a["rows"] for a in f["at"]] == [6400, 32000]
    truth = 1 - power_law(6400, 3.0, 0.4, 0.08)
    first = f["at"][0]
    assert first["low"] < first["accuracy"] < first["high"]
    assert abs(first["accuracy"] - truth) < 0.02
    assert 0.9 < f["r2"] <= 1.0 and f["rmse"] < 0.01
    assert f["at"][1]["accuracy"] >= first["accuracy"]  # more labels, less error


def test_no_forecast_below_four_budgets():
    points = [{"rows": n, "accuracy": {"mean": a}} for n, a in ((32, 0.6), (128, 0.7), (512, 0.8))]
    assert forecast(points) == {"note": "not enough points (3 budgets; the fit needs 4)"}
    assert "not enough points" in forecast([*points, {"rows": 2048}])["note"]  # not measured


# --- the crossover and the summary ------------------------------------------------------------

N_EVAL = 200


def outcome(seed, budget, probe_right, ft_right, cost=1.0, ft_from=0):
    """A finished run whose probe gets the first ``probe_right`` eval rows right and the
    fine-tune ``ft_right`` rows from row ``ft_from`` on (with ``ft_from`` 0 every discordant
    row goes the same way)."""
    y = np.arange(N_EVAL) % 2
    preds = {}
    for arm, k, start in (("probe", probe_right, 0), ("finetuned", ft_right, ft_from)):
        p = 1 - y
        p[start:start + k] = y[start:start + k]
        preds[arm] = p
    metrics = {arm: {"accuracy": k / N_EVAL, "macro_f1": k / N_EVAL, "cost": {"seconds": cost}}
               for arm, k in (("probe", probe_right), ("finetuned", ft_right))}
    return Outcome(seed, budget, f"run-{seed}-{budget}", "finished", metrics, y, preds)


GRID = Grid((32, 128, None), (0, 1), ("probe", "finetuned"))


def test_the_crossover_on_constructed_numbers():
    outcomes = [
        outcome(0, 32, 120, 120), outcome(1, 32, 121, 119),  # the same: no difference
        outcome(0, 128, 130, 170), outcome(1, 128, 140, 172),  # +18 points, spread 5
        outcome(0, None, 140, 190), outcome(1, None, 141, 190),
    ]
    summary = summarize(GRID, outcomes, pool_rows=1000, resamples=2000)
    cross = summary["crossover"]
    assert cross["budget"] == "128" and cross["text"] == "from 128 labelled examples"
    at128 = cross["pairs"][1]
    assert at128["delta"] == pytest.approx((40 + 32) / 2 / N_EVAL)
    assert at128["seed_spread"] == pytest.approx(10 / N_EVAL)  # the probe's 130..140
    assert at128["ci_low"] > 0 and at128["beats"]
    assert not cross["pairs"][0]["beats"]
    assert summary["rows"] == [32, 128, 1000]
    assert "Fine-tuning beats the linear probe from 128 labelled examples" in summary["verdict"]
    assert "At 1000 examples" in summary["verdict"]
    assert "not enough points (3 budgets" in summary["verdict"]


def test_no_crossover_where_the_seed_spread_is_larger_than_the_difference():
    outcomes = [
        outcome(0, 32, 120, 120), outcome(1, 32, 120, 120),
        outcome(0, 128, 140, 150), outcome(1, 128, 140, 190),  # +15 points, spread 20
        outcome(0, None, 140, 150), outcome(1, None, 140, 190),
    ]
    summary = summarize(GRID, outcomes, pool_rows=1000, resamples=2000)
    pair = summary["crossover"]["pairs"][-1]
    assert pair["significant"] and pair["delta"] < pair["seed_spread"]
    assert summary["crossover"]["budget"] is None
    assert summary["crossover"]["text"] == "not within these budgets"
    assert "within the seed spread" in summary["verdict"]


def test_the_crossover_holds_from_its_budget_on():
    pairs = [{"budget": "32", "beats": True}, {"budget": "128", "beats": False},
             {"budget": "512", "beats": True}, {"budget": "all", "beats": True}]
    assert crossover(pairs)["budget"] == "512"
    assert crossover(pairs[:2])["budget"] is None


def test_a_difference_within_noise_is_not_claimed():
    # 10 rows only the probe gets right, 12 only the fine-tune: +1 point, within noise
    outcomes = [outcome(s, b, 120, 122, ft_from=10) for s in (0, 1) for b in (32, 128, None)]
    summary = summarize(GRID, outcomes, pool_rows=1000, resamples=2000)
    assert summary["crossover"]["budget"] is None
    assert "within noise" in summary["verdict"] and "beats" not in summary["verdict"]


def test_the_points_per_budget_and_arm():
    outcomes = [outcome(0, 32, 120, 130, cost=2.0), outcome(1, 32, 110, 150, cost=4.0),
                Outcome(0, 128, "run-x", "running")]
    summary = summarize(GRID, outcomes, pool_rows=1000, resamples=200)
    ft32 = next(p for p in summary["points"] if p["arm"] == "finetuned" and p["budget"] == "32")
    assert ft32["accuracy"] == pytest.approx({"mean": 0.7, "min": 0.65, "max": 0.75})
    assert [s["seed"] for s in ft32["seeds"]] == [0, 1]
    assert ft32["cost"] == {"seconds": 3.0}
    assert "the fine-tune 70.0 % (seeds 65.0 % to 75.0 %)" in summary["verdict"]
    one = summarize(GRID, outcomes[:1], pool_rows=1000, resamples=200)
    assert "the fine-tune 65.0 % (one seed)" in one["verdict"]
    ft128 = next(p for p in summary["points"] if p["arm"] == "finetuned" and p["budget"] == "128")
    assert ft128["seeds"] == [] and "accuracy" not in ft128  # a run that has not ended
    assert summary["runs"] == {"finished": 2, "total": 6}
    assert summary["pretraining"] is None  # no scratch arm
