"""The statistics of a real run: metrics.json's comparisons and intervals recomputed
independently from predictions.npz (statsmodels' McNemar, a bootstrap of our own, scikit-learn's
scores), the cost of each arm, the verdict in the CLI's final output and in ``bertui runs
--json``, and an arm that fails at run time failing alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertui.core.runs import Run, create_run
from conftest import run_bertui, train_tiny

RESAMPLES = 10_000


def independent_bootstrap(y, a, b, metric: str, seed: int = 12345) -> tuple[float, float]:
    """A 95 % paired percentile bootstrap of metric(a) − metric(b) written from scratch: numpy
    draws the rows, scikit-learn-free scores, np.percentile takes the bounds."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(RESAMPLES, len(y)))
    yy, aa, bb = y[idx], a[idx], b[idx]

    def score(p):
        if metric == "accuracy":
            return (p == yy).mean(axis=1)
        f1s, present = [], []
        for c in np.union1d(y, np.union1d(a, b)):
            tp = ((p == c) & (yy == c)).sum(1)
            both = (p == c).sum(1) + (yy == c).sum(1)
            f1s.append(np.where(both > 0, 2 * tp / np.maximum(both, 1), 0.0))
            present.append(both > 0)
        return np.sum(f1s, axis=0) / np.maximum(np.sum(present, axis=0), 1)

    low, high = np.percentile(score(aa) - score(bb), [2.5, 97.5])
    return float(low), float(high)


def check_comparisons(run: Run, tolerance: float = 0.005) -> dict:
    """Every comparison in metrics.json against a recomputation from predictions.npz: the
    deltas exactly, McNemar's p to 1e-6, the bounds within ``tolerance`` (0.5 points) of an
    independent bootstrap's. On 100 rows a bound can differ by a step of the statistic
    (1/100) between two bootstraps: the tests of small runs allow that much more."""
    from sklearn.metrics import accuracy_score, f1_score
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.proportion import proportion_confint

    metrics = run.metrics()
    with np.load(run.predictions_path, allow_pickle=False) as z:
        y = z["labels"]
        preds = {str(arm): z[f"{arm}.pred"] for arm in z["arms"]}
    arms = metrics["arms"]
    assert list(preds) == arms
    found = metrics["comparisons"]
    pairs = [(arms[j], arms[i]) for j in range(len(arms)) for i in range(j)]
    assert [(c["a"], c["b"], c["metric"]) for c in found] == \
        [(a, b, m) for a, b in pairs for m in ("accuracy", "macro_f1")]
    for c in found:
        a, b = preds[c["a"]], preds[c["b"]]
        assert c["n"] == len(y) == metrics["eval_rows"]
        if c["metric"] == "accuracy":
            delta = accuracy_score(y, a) - accuracy_score(y, b)
        else:
            def f1(p):
                return f1_score(y, p, average="macro", labels=np.union1d(y, p), zero_division=0)
            delta = f1(a) - f1(b)
        assert c["delta"] == pytest.approx(delta, abs=1e-12), c
        table = [[int(((a == y) & (b == y)).sum()), int(((a == y) & (b != y)).sum())],
                 [int(((a != y) & (b == y)).sum()), int(((a != y) & (b != y)).sum())]]
        expected_p = mcnemar(table, exact=True).pvalue if table[0][1] + table[1][0] else 1.0
        assert abs(c["p_value"] - expected_p) < 1e-6, c
        low, high = independent_bootstrap(y, a, b, c["metric"])
        assert abs(c["ci_low"] - low) <= tolerance and abs(c["ci_high"] - high) <= tolerance, \
            (c, low, high)
    for arm in arms:
        correct = int((preds[arm] == y).sum())
        expected = proportion_confint(correct, len(y), alpha=0.05, method="wilson")
        assert metrics[arm]["accuracy_ci"] == pytest.approx(list(expected), abs=1e-9)
    return metrics


def test_the_comparisons_agree_with_an_independent_recomputation(tiny_model, bertui_home,
                                                                 tmp_path):
    """As this issue is checked: a few thousand eval rows, bounds within 0.5 points."""
    import csv

    from bertui.core.data import demo_files

    rows = list(csv.DictReader(demo_files()[1].open(encoding="utf-8")))
    eval_file = tmp_path / "eval.csv"
    with eval_file.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        for copy in range(25):
            for row in rows:
                writer.writerow({"text": f"{row['text']} ({copy})", "label": row["label"]})
    metrics, path = train_tiny(tiny_model, bertui_home, "--eval-dataset", str(eval_file))
    assert metrics["eval_rows"] == 25 * len(rows)
    check_comparisons(Run.load(path))


def test_a_small_run_has_its_statistics_and_costs(finished_run):
    metrics = check_comparisons(Run.load(finished_run), tolerance=0.005 + 1 / 100)
    assert len(metrics["comparisons"]) == 6  # three arms: three pairs, two metrics each
    assert metrics["statistics"]["resamples"] >= RESAMPLES
    for arm in metrics["arms"]:
        cost = metrics[arm]["cost"]
        assert cost["seconds"] > 0 and cost["devices"] == 1
        assert cost["device_seconds"] == pytest.approx(cost["seconds"], abs=0.01)
        # No RAPL counters readable here (or they are): either way the field says so.
        assert (cost["energy_wh"] is None) == ("energy_reason" in cost), cost
    assert metrics["verdict"].startswith("Fine-tuning ")


def test_the_cli_final_output_and_runs_json_carry_the_verdict(finished_run, capsys):
    from bertui.cli import finish_report

    run = Run.load(finished_run)
    metrics = run.metrics()
    assert finish_report(run, "finished", as_json=False, quiet=False) == 0
    out = capsys.readouterr().err.splitlines()
    for title in ("pre-trained", "linear probe", "fine-tuned"):
        line = next(line for line in out if line.strip().startswith(title))
        low, high = metrics[{"pre-trained": "pretrained", "linear probe": "probe",
                             "fine-tuned": "finetuned"}[title]]["accuracy_ci"]
        assert f"(95 % CI {low:.4f}–{high:.4f})" in line, line
    assert out[-1] == f"verdict: {metrics['verdict']}"
    rows = json.loads(run_bertui("runs", "--json", home=finished_run.parent.parent,
                                 check=True).stdout)
    row = next(r for r in rows if r["id"] == run.id)
    assert row["verdict"] == metrics["verdict"]


BROKEN = """
import sys
from bertui.core.arms import ARMS

class Broken(ARMS[sys.argv[2]]):
    def train(self):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\\nmore detail")

ARMS[sys.argv[2]] = Broken
from bertui.worker import main
sys.exit(main([sys.argv[1]]))
"""


def run_with_broken_arm(finished_run: Path, arm: str) -> tuple[Run, int]:
    """A new run like the shared finished one, whose worker's ``arm`` raises in training."""
    config = dict(Run.load(finished_run).config)
    config.pop("name", None)
    run = create_run(config)
    proc = subprocess.run([sys.executable, "-c", BROKEN, str(run.path), arm],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdin=subprocess.DEVNULL)
    return run.refresh(), proc.returncode


def test_an_arm_that_fails_fails_alone(finished_run, bertui_home, capsys):
    from bertui.cli import summary_text

    run, code = run_with_broken_arm(finished_run, "probe")
    assert code == 0 and run.state == "finished", run.status
    metrics = check_comparisons(run)
    assert metrics["arms"] == ["pretrained", "finetuned"]
    probe = metrics["probe"]
    assert probe["error"].startswith("RuntimeError: CUDA out of memory") and "\n" not in \
        probe["error"]
    assert probe["cost"]["seconds"] >= 0 and "accuracy" not in probe
    assert metrics["verdict"].endswith(
        "The linear probe failed (RuntimeError: CUDA out of memory); the other arms' results "
        "stand.")
    warnings = [e["message"] for e in run.events() if e["type"] == "log"
                and e.get("level") == "warning"]
    assert any("linear probe" in w and "failed" in w for w in warnings), warnings
    assert "linear probe  failed: RuntimeError: CUDA out of memory" in summary_text(metrics)


def test_a_failed_fine_tune_fails_the_run_and_keeps_the_baselines(finished_run, bertui_home):
    run, code = run_with_broken_arm(finished_run, "finetuned")
    assert code == 1 and run.state == "failed"
    assert run.status["error"].startswith("out of GPU memory at batch size")
    metrics = run.metrics()
    assert metrics["arms"] == ["pretrained", "probe"] and metrics["finetuned"] is None
    assert [(c["a"], c["b"]) for c in metrics["comparisons"]] == [("probe", "pretrained")] * 2
