"""bertui.core.verdict: sentences computed from metrics.json's numbers alone, that say "within
noise" exactly where the interval contains zero and name a winner only where it does not."""

from __future__ import annotations

import numpy as np
import pytest

from bertui.core import stats
from bertui.core.verdict import find, headline_rival, seconds, verdict

N = 200


def preds_right_on(y: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """Predictions (two classes) right on ``rows`` of ``y`` and wrong elsewhere."""
    pred = 1 - y
    pred[rows] = y[rows]
    return pred


def metrics_of(y: np.ndarray, preds: dict[str, np.ndarray], **extra) -> dict:
    """metrics.json as the engine writes it: each arm's report and cost, the comparisons."""
    metrics: dict = {"arms": list(preds), "eval_rows": len(y)}
    for i, (name, pred) in enumerate(preds.items()):
        metrics[name] = {"accuracy": float((pred == y).mean()), "title": name,
                         "cost": {"seconds": 2.0 + 10 * i, "energy_wh": None}}
    metrics["comparisons"] = [c.as_dict() for c in stats.compare_all(y, preds, resamples=2000)]
    metrics.update(extra)
    return metrics


@pytest.mark.parametrize("extra_right", [0, 3, 6, 12, 30, -6, -30])
def test_within_noise_exactly_when_the_interval_contains_zero(extra_right):
    y = np.arange(N) % 2
    probe = preds_right_on(y, slice(0, 140))  # 70 %
    tuned = preds_right_on(y, slice(0, 140 + extra_right))
    metrics = metrics_of(y, {"pretrained": 1 - y, "probe": probe, "finetuned": tuned})
    c = find(stats.compare_all(y, {"probe": probe, "finetuned": tuned}, resamples=2000),
             "finetuned", "probe")
    assert c is not None and c.delta == pytest.approx(extra_right / N)
    text = verdict(metrics)
    contains_zero = c.ci_low <= 0 <= c.ci_high
    assert ("within noise" in text) == contains_zero, text
    assert ("beats" in text or "trails" in text) == (not contains_zero), text
    if not contains_zero:
        verb = "beats" if extra_right > 0 else "trails"
        assert text.startswith(f"Fine-tuning {verb} the linear probe by "
                               f"{abs(extra_right) / N * 100:.1f} points of accuracy")
    assert "It cost 22 s against the linear probe's 12 s." in text


def test_the_headline_takes_the_best_other_arm_and_states_pretraining_and_tapt():
    y = np.arange(N) % 2
    preds = {"pretrained": preds_right_on(y, slice(0, 100)),
             "probe": preds_right_on(y, slice(0, 150)),
             "finetuned": preds_right_on(y, slice(0, 190)),
             "scratch": preds_right_on(y, slice(0, 110)),
             "tapt": preds_right_on(y, slice(0, 191))}
    metrics = metrics_of(y, preds)
    assert headline_rival(metrics) == "probe"  # not scratch, not tapt: sentences of their own
    text = verdict(metrics)
    assert text.startswith("Fine-tuning beats the linear probe by 20.0 points of accuracy")
    assert "Pre-training is worth 40.0 points (fine-tuned vs from scratch, 95 % CI +" in text
    assert ("Task-adaptive pre-training and the plain fine-tune are within noise on 200 eval "
            "rows: +0.5 points of accuracy") in text


def test_a_failed_arm_is_noted_and_the_rest_stands():
    y = np.arange(N) % 2
    metrics = metrics_of(y, {"pretrained": 1 - y, "finetuned": y.copy()},
                         probe={"error": "out of memory", "cost": {"seconds": 1.0}})
    text = verdict(metrics)
    assert text.startswith("Fine-tuning beats the pre-trained model by 100.0 points")
    assert text.endswith("The linear probe failed (out of memory); the other arms' results stand.")


def test_energy_joins_the_cost_where_both_arms_measured_it():
    y = np.arange(N) % 2
    metrics = metrics_of(y, {"probe": 1 - y, "finetuned": y.copy()})
    metrics["probe"]["cost"]["energy_wh"] = 0.05
    metrics["finetuned"]["cost"].update(seconds=125.0, energy_wh=1.25)
    assert "It cost 2 min 5 s against the linear probe's 2.0 s (1.2 Wh against 0.05 Wh)." \
        in verdict(metrics)


def test_no_verdict_without_comparisons():
    old = {"pretrained": {"accuracy": 0.5}, "probe": {"accuracy": 0.8},
           "finetuned": {"accuracy": 0.9}}  # a run made before comparisons existed
    assert verdict(old) is None
    assert verdict({"arms": ["finetuned"], "finetuned": {"accuracy": 0.9},
                    "comparisons": []}) is None


def test_find_turns_a_comparison_around():
    y = np.arange(N) % 2
    (c, _f1) = stats.compare(y, preds_right_on(y, slice(0, 60)), y, ("scratch", "finetuned"),
                             resamples=500)
    turned = find([c], "finetuned", "scratch")
    assert (turned.a, turned.b, turned.delta) == ("finetuned", "scratch", -c.delta)
    assert (turned.ci_low, turned.ci_high) == (-c.ci_high, -c.ci_low)
    assert turned.p_value == c.p_value


def test_seconds_read_as_people_say_them():
    assert [seconds(s) for s in (0.42, 28.4, 185, 3720)] == \
        ["0.4 s", "28 s", "3 min 5 s", "1 h 02 min"]
