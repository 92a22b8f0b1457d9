"""Studies: the grid, the nested label budgets, and the summary of a study's runs.

A study (DESIGN.md, "Studies: the answer is a curve") is label budgets × seeds × arms on one
model and one dataset, with one eval split for every run. This module is pure (numpy and scipy,
imported where used; no Textual, no torch): the study's directory and its runner live in
``bertui.core.studies`` and ``bertui.study_runner``.

- **The grid**: ``parse_budgets`` ("32,128,512,all"), ``check_budgets`` (against the train
  pool's size and number of classes), ``seeds_of``, ``Grid`` (its cells, seed by seed).
- **The subsets**: ``budget_subset`` gives the train-pool rows of one budget and seed:
  stratified (each class its share of the budget, Sainte-Laguë rounding, at least one row per
  class), seeded, and nested (a larger budget's rows contain a smaller one's, for any budgets).
  ``bertui.core.data`` applies it to a run whose ``[data] budget`` is set.
- **The summary** (``summarize``): per budget and arm the mean, min, max and per-seed accuracy
  and macro-F1 and the cost; the **crossover** (``crossover``), what pre-training buys where the
  ``scratch`` arm ran, the **forecast** (``forecast``: a saturating power law fitted to each
  arm's mean error) and the **verdict** (``verdict``), all computed from those numbers.

Paired intervals are **pooled over seeds**: for one budget, the seeds' eval rows are stacked
(seeds × eval rows pairs of predictions, the eval rows being the same in every run) and
``bertui.core.stats.compare`` gives the difference of the mean accuracy, its paired bootstrap
interval and McNemar's test over them. The **seed spread** of a difference is the larger of the
two arms' ranges (max − min) of accuracy over the seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bertui.core.errors import BadInput

ALL = "all"  # the budget of the whole train pool
Budget = int | None  # None: all of the train pool
FIT_MIN_POINTS = 4  # a three-parameter power law needs at least four budgets
FORECAST_FACTORS = (2, 10)  # the forecast's budgets: these times the largest one
TITLES = {"pretrained": "the pre-trained model", "probe": "the linear probe",
          "finetuned": "the fine-tune", "scratch": "training from scratch"}


def budget_label(budget: Budget) -> str:
    """A budget as people (and summary.json) write it: "128", "all"."""
    return ALL if budget is None else str(budget)


def budget_value(value: Any) -> Budget:
    """A budget read back from study.toml or summary.json ("all" or a number)."""
    return None if value in (None, ALL) else int(value)


# --- the grid ---------------------------------------------------------------------------------


def parse_budgets(text: str) -> list[Budget]:
    """The budgets "32,128,all" names, smallest first ("all" last); BadInput (one line) for a
    part that is not a positive whole number or "all", or one given twice."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise BadInput("--budgets is empty: give label budgets like 32,128,512,all",
                       field="budgets")
    seen: list[Budget] = []
    for part in parts:
        value = _one_budget(part)
        if value in seen:
            raise BadInput(f"--budgets: {budget_label(value)} is given twice", field="budgets")
        seen.append(value)
    numbers = sorted(b for b in seen if b is not None)
    return [*numbers, *([None] if None in seen else [])]


def _one_budget(part: str) -> Budget:
    if part.lower() == ALL:
        return None
    try:
        value = int(part.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        shown = f"'{part}'" if part else "an empty part"
        raise BadInput(f"--budgets: {shown} is not a positive whole number or 'all'",
                       field="budgets")
    return value


def check_budgets(budgets: Sequence[Budget], pool_rows: int, classes: int,
                  flag: str = "--budgets") -> None:
    """BadInput (one line) for a budget larger than the train pool (its size said), equal to
    it beside "all", or smaller than the number of classes (each class needs a row)."""
    for b in budgets:
        if b is None:
            continue
        if b > pool_rows:
            raise BadInput(f"{flag}: {b} is larger than the training set ({pool_rows} rows)",
                           field="budgets")
        if b == pool_rows and None in budgets:
            raise BadInput(f"{flag}: {b} is the whole training set, the same as 'all'",
                           field="budgets")
        if b < classes:
            raise BadInput(f"{flag}: {b} is smaller than the number of classes ({classes}): "
                           "every class needs a row in every budget", field="budgets")


def seeds_of(count: int, first: int = 0) -> list[int]:
    """The seeds of a study of ``count`` seeds: ``first``, ``first + 1``, …"""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise BadInput(f"--seeds must be a whole number ≥ 1 (got {count})", field="seeds")
    return list(range(first, first + count))


@dataclass(frozen=True)
class Grid:
    """The cells of a study: every budget for every seed, each one run of ``arms``."""

    budgets: tuple[Budget, ...]
    seeds: tuple[int, ...]
    arms: tuple[str, ...]

    def cells(self) -> Iterator[tuple[int, Budget]]:
        """(seed, budget), seed by seed, each seed's budgets smallest first: a whole curve
        early, then its spread."""
        for seed in self.seeds:
            for budget in self.budgets:
                yield seed, budget

    def __len__(self) -> int:
        return len(self.budgets) * len(self.seeds)


# --- the subsets ------------------------------------------------------------------------------


def class_counts(sizes: Sequence[int], budget: int) -> list[int]:
    """How many rows of each class (of ``sizes`` rows each) a budget takes: one per class,
    then each next row to the class whose share is most behind (the largest
    ``size / (taken + 0.5)``, Sainte-Laguë; ties to the lower class). The sequence of picks
    does not depend on the budget, so a larger budget never takes fewer of a class."""
    import heapq

    if budget < len(sizes) or budget > sum(sizes):
        raise ValueError(f"a budget of {budget} does not fit classes of sizes {list(sizes)}")
    counts = [1] * len(sizes)
    heap = [(-size / 1.5, c) for c, size in enumerate(sizes) if size > 1]
    heapq.heapify(heap)
    for _ in range(budget - len(sizes)):
        _, c = heapq.heappop(heap)
        counts[c] += 1
        if counts[c] < sizes[c]:
            heapq.heappush(heap, (-sizes[c] / (counts[c] + 0.5), c))
    return counts


def budget_subset(labels: Sequence[int], budget: Budget, seed: int) -> Any:
    """The sorted train-pool row indices (int64) of one budget and seed: each class's rows in a
    seeded order (the same for every budget), the first ``class_counts`` of each taken. All
    rows for the budget None."""
    import numpy as np

    y = np.asarray(labels)
    if budget is None:
        return np.arange(len(y), dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows = [np.flatnonzero(y == c) for c in np.unique(y)]
    orders = [r[rng.permutation(len(r))] for r in rows]
    counts = class_counts([len(r) for r in rows], budget)
    taken = [order[:n] for order, n in zip(orders, counts)]
    return np.sort(np.concatenate(taken)).astype(np.int64)


# --- the summary ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One run of a study as the summary reads it: its cell, state, metrics.json and
    predictions.npz (the eval label ids and each arm's predicted ids)."""

    seed: int
    budget: Budget
    run: str
    state: str
    metrics: dict[str, Any] = field(default_factory=dict)
    labels: Any = None
    preds: dict[str, Any] = field(default_factory=dict)

    def report(self, arm: str) -> dict[str, Any] | None:
        """The arm's report, where the run finished and the arm reported."""
        if self.state != "finished":
            return None
        value = self.metrics.get(arm)
        return value if isinstance(value, dict) and "accuracy" in value else None


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def point(outcomes: Sequence[Outcome], arm: str, budget: Budget, rows: int) -> dict[str, Any]:
    """One budget's figures for one arm over the seeds that have reported it: per seed, and
    the mean, min and max of accuracy and macro-F1; the mean of each figure of its cost."""
    seeds = []
    costs: dict[str, list[float]] = {}
    for o in outcomes:
        report = o.report(arm) if o.budget == budget else None
        if report is None:
            continue
        seeds.append({"seed": o.seed, "run": o.run, "accuracy": report["accuracy"],
                      "macro_f1": report["macro_f1"]})
        for key, value in (report.get("cost") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                costs.setdefault(key, []).append(float(value))
    out: dict[str, Any] = {"budget": budget_label(budget), "rows": rows, "arm": arm,
                           "seeds": sorted(seeds, key=lambda s: s["seed"])}
    if seeds:
        for metric in ("accuracy", "macro_f1"):
            out[metric] = spread([s[metric] for s in seeds])
        out["cost"] = {k: sum(v) / len(v) for k, v in costs.items()}
    return out


def paired(outcomes: Sequence[Outcome], a: str, b: str, budget: Budget, rows: int,
           resamples: int) -> dict[str, Any] | None:
    """Arm ``a`` against ``b`` at one budget, over the seeds where both reported: the mean
    difference of accuracy, the seed spread, and the paired interval pooled over seeds (the
    seeds' eval rows stacked). None where no seed has both."""
    import numpy as np

    from bertui.core.stats import compare

    both = [o for o in outcomes if o.budget == budget and o.report(a) and o.report(b)
            and a in o.preds and b in o.preds and o.labels is not None]
    if not both:
        return None
    y = np.concatenate([o.labels for o in both])
    pa = np.concatenate([o.preds[a] for o in both])
    pb = np.concatenate([o.preds[b] for o in both])
    acc = next(c for c in compare(y, pa, pb, (a, b), resamples=resamples)
               if c.metric == "accuracy")
    ranges = [_range([_accuracy(o, arm) for o in both]) for arm in (a, b)]
    return {"budget": budget_label(budget), "rows": rows, "seeds": len(both),
            "delta": acc.delta, "ci_low": acc.ci_low, "ci_high": acc.ci_high,
            "p_value": acc.p_value, "significant": acc.significant,
            "seed_spread": max(ranges),
            "beats": acc.significant and acc.delta > max(ranges) and acc.delta > 0}


def _range(values: Sequence[float]) -> float:
    return max(values) - min(values)


def _accuracy(outcome: Outcome, arm: str) -> float:
    report = outcome.report(arm)
    return float(report["accuracy"]) if report else math.nan


def crossover(pairs: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """The smallest budget from which on (it and every larger budget measured) the first arm
    beats the second by more than the seed spread and with a paired interval above zero."""
    measured = [p for p in pairs if p is not None]
    budget = None
    for i, p in enumerate(measured):
        if all(q["beats"] for q in measured[i:]):
            budget = p["budget"]
            break
    if not measured:
        text = "not measured yet"
    elif budget is None:
        text = "not within these budgets"
    else:
        text = f"from {budget} labelled examples"
    return {"budget": budget, "text": text, "pairs": measured}


# --- the forecast -----------------------------------------------------------------------------


def power_law(n: Any, a: float, b: float, c: float) -> Any:
    """The saturating power law of error against labelled examples: ``a·n^−b + c``."""
    import numpy as np

    return a * np.power(np.asarray(n, dtype=float), -b) + c


@dataclass(frozen=True)
class PowerFit:
    """``error ≈ a·n^−b + c`` fitted to (n, error) points, with the fit's covariance."""

    a: float
    b: float
    c: float
    cov: Any  # 3×3 covariance of (a, b, c); inf where it cannot be estimated
    r2: float
    rmse: float

    def predict(self, n: float) -> float:
        return float(power_law(n, self.a, self.b, self.c))

    def interval(self, n: float, z: float = 1.959964) -> tuple[float, float] | None:
        """A 95 % interval of the fitted error at ``n`` from the fit's covariance (the delta
        method), or None where the covariance is not finite."""
        import numpy as np

        grad = np.array([n ** -self.b, -self.a * n ** -self.b * math.log(n), 1.0])
        cov = np.asarray(self.cov, dtype=float)
        if not np.all(np.isfinite(cov)):
            return None
        se = math.sqrt(max(0.0, float(grad @ cov @ grad)))
        mid = self.predict(n)
        return mid - z * se, mid + z * se


def fit_power_law(ns: Sequence[float], errors: Sequence[float]) -> PowerFit:
    """scipy's ``curve_fit`` of ``a·n^−b + c`` with a ≥ 0, 0 ≤ b ≤ 3, 0 ≤ c ≤ 1; RuntimeError
    when it does not converge. It fits on n over the largest n (a better-scaled problem) and
    reports ``a`` in plain n."""
    import numpy as np
    from scipy.optimize import curve_fit

    n = np.asarray(ns, dtype=float)
    e = np.asarray(errors, dtype=float)
    scale = float(n.max())
    p0 = (max(e[0] - e[-1], 1e-3), 0.5, max(0.0, min(float(e.min()) * 0.5, 1.0)))
    params, cov = curve_fit(power_law, n / scale, e, p0=p0, bounds=([0, 0, 0], [np.inf, 3, 1]),
                            maxfev=20000)
    a, b, c = (float(v) for v in params)
    jac = np.diag([scale ** b, 1.0, 1.0])  # a_plain = a_scaled · scale^b (first order in a)
    jac[0, 1] = a * scale ** b * math.log(scale)
    residuals = e - power_law(n / scale, a, b, c)
    total = float(((e - e.mean()) ** 2).sum())
    r2 = 1.0 - float((residuals ** 2).sum()) / total if total > 0 else 1.0
    rmse = float(np.sqrt((residuals ** 2).mean()))
    return PowerFit(a * scale ** b, b, c, jac @ cov @ jac.T, r2, rmse)


def forecast(point_list: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the next labels would buy, for one arm's points (smallest budget first): the power
    law fitted to the mean error (1 − mean accuracy) over the budgets, its R² and RMSE, and the
    accuracy it gives at 2× and 10× the largest budget, with a 95 % interval from the fit's
    covariance. "not enough points" below ``FIT_MIN_POINTS`` budgets."""
    measured = [p for p in point_list if "accuracy" in p]
    if len(measured) < FIT_MIN_POINTS:
        return {"note": f"not enough points ({len(measured)} budgets; the fit needs "
                        f"{FIT_MIN_POINTS})"}
    ns = [p["rows"] for p in measured]
    errors = [1.0 - p["accuracy"]["mean"] for p in measured]
    try:
        fit = fit_power_law(ns, errors)
    except (RuntimeError, ValueError) as exc:
        return {"note": f"the power law did not fit ({str(exc).splitlines()[0]})"}
    at = []
    for factor in FORECAST_FACTORS:
        n = factor * max(ns)
        interval = fit.interval(n)
        low, high = (None, None) if interval is None else (1 - interval[1], 1 - interval[0])
        at.append({"rows": n, "accuracy": _clip(1 - fit.predict(n)),
                   "low": None if low is None else _clip(low),
                   "high": None if high is None else _clip(high)})
    return {"a": fit.a, "b": fit.b, "c": fit.c, "r2": fit.r2, "rmse": fit.rmse,
            "ceiling": 1 - fit.c, "interval": "95 %, from the fit's covariance (delta method)",
            "at": at}


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


# --- the summary and its verdict --------------------------------------------------------------


def summarize(grid: Grid, outcomes: Sequence[Outcome], pool_rows: int,
              resamples: int = 10_000) -> dict[str, Any]:
    """summary.json's figures from the study's runs so far (finished runs only)."""
    rows = {b: pool_rows if b is None else b for b in grid.budgets}
    points = {arm: [point(outcomes, arm, b, rows[b]) for b in grid.budgets] for arm in grid.arms}
    out: dict[str, Any] = {
        "budgets": [budget_label(b) for b in grid.budgets],
        "rows": [rows[b] for b in grid.budgets],
        "seeds": list(grid.seeds),
        "arms": list(grid.arms),
        "runs": {"finished": sum(o.state == "finished" for o in outcomes), "total": len(grid)},
        "interval": "95 % paired bootstrap, pooled over seeds (their eval rows stacked)",
        "points": [p for arm in grid.arms for p in points[arm]],
    }
    for key, (a, b) in (("crossover", ("finetuned", "probe")),
                        ("pretraining", ("finetuned", "scratch"))):
        if a in grid.arms and b in grid.arms:
            out[key] = crossover([paired(outcomes, a, b, bud, rows[bud], resamples)
                                  for bud in grid.budgets])
        else:
            out[key] = None
    out["forecast"] = {arm: forecast(points[arm]) for arm in grid.arms}
    out["verdict"] = verdict(out, points)
    return out


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _pts(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "−")


def verdict(summary: dict[str, Any], points: dict[str, list[dict[str, Any]]]) -> str:
    """Two or three sentences from the summary's numbers: where fine-tuning starts to pay off
    (never claiming a difference whose interval contains zero), where the arms stand at the
    largest budget measured, and what the next labels would buy."""
    return " ".join(s for s in (_crossover_sentence(summary.get("crossover")),
                                _standing_sentence(points),
                                _forecast_sentence(summary.get("forecast") or {})) if s)


def _crossover_sentence(cross: dict[str, Any] | None) -> str:
    if not cross or not cross["pairs"]:
        return ""
    if cross["budget"] is not None:
        p = next(q for q in cross["pairs"] if q["budget"] == cross["budget"])
        return (f"Fine-tuning beats the linear probe from {p['budget']} labelled examples on "
                f"({_pts(p['delta'])} points of accuracy at {p['rows']}, 95 % CI "
                f"{_pts(p['ci_low'])} to {_pts(p['ci_high'])} over {p['seeds']} seed(s), "
                f"more than the seed spread of {100 * p['seed_spread']:.1f}).")
    last = cross["pairs"][-1]
    if last["significant"] and last["delta"] < 0:
        how = f"the probe is ahead by {100 * -last['delta']:.1f} points"
    elif last["significant"]:
        how = (f"{_pts(last['delta'])} points, but within the seed spread of "
               f"{100 * last['seed_spread']:.1f}")
    else:
        how = (f"within noise: {_pts(last['delta'])} points, 95 % CI {_pts(last['ci_low'])} "
               f"to {_pts(last['ci_high'])}")
    return (f"Within these budgets fine-tuning does not clearly beat the linear probe (at "
            f"{last['rows']} examples {how}).")


def _standing_sentence(points: dict[str, list[dict[str, Any]]]) -> str:
    measured = {arm: [p for p in ps if "accuracy" in p] for arm, ps in points.items()}
    measured = {arm: ps for arm, ps in measured.items() if ps}
    if not measured:
        return ""
    rows = max(ps[-1]["rows"] for ps in measured.values())
    at = {arm: ps[-1] for arm, ps in measured.items() if ps[-1]["rows"] == rows}
    parts = [f"{TITLES.get(arm, arm)} {_pct(p['accuracy']['mean'])} ("
             + (f"seeds {_pct(p['accuracy']['min'])} to {_pct(p['accuracy']['max'])})"
                if len(p["seeds"]) > 1 else "one seed)")
             for arm, p in at.items()]
    return f"At {rows} examples: {', '.join(parts)}."


def _forecast_sentence(forecasts: dict[str, dict[str, Any]]) -> str:
    arm = next((a for a in ("finetuned", *forecasts) if a in forecasts), None)
    if arm is None:
        return ""
    f = forecasts[arm]
    if "at" not in f:
        return f"No forecast for {TITLES.get(arm, arm)}: {f['note']}."
    first = f["at"][0]
    interval = ("" if first["low"] is None else
                f", 95 % interval {_pct(first['low'])} to {_pct(first['high'])}")
    return (f"Twice the labels ({first['rows']}) would bring {TITLES.get(arm, arm)} to about "
            f"{_pct(first['accuracy'])}{interval} (power-law fit, R² {f['r2']:.2f}).")
