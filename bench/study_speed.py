"""A study against the same runs started one by one, side by side, on the same machine.

Runs, on the same model, data and options:

* ``study``    — ``bertui study --budgets B --seeds S --arms A`` as users run it (the runner,
  one worker per run, the study's shared work: the data read and tokenised once, the probe's
  frozen features computed once per row, the pre-trained arm once per seed);
* ``separate`` — the grid's runs as ``bertui train --budget b --seed s --data-seed d --arms A``,
  one after another, each on its own;

and prints the wall time of each, the ratio study/separate (issue 13's target: at most 0.8),
and every run's accuracies side by side (they must be identical: the shared work is the same
arithmetic). Every process is a child of this one, so the two share the machine as equals;
nothing else should run meanwhile. ``--rounds N`` repeats both, alternating which goes first
(this VM's speed drifts: compare within a round), and prints each round's ratio and the
ratio of the totals; each side's seconds before training (start-up, data, baselines) and in
it show where the difference comes from. ``--keep DIR`` keeps the run folders.

    python bench/study_speed.py                                  # reviews, 64,256,1024 × 2 seeds
    python bench/study_speed.py --train T.tsv --eval D.tsv --text-col sentence \\
        --budgets 64,256,1024 --seeds 2 --arms probe,finetuned
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--train", default=str(SHARED / "data" / "reviews" / "train.csv"))
    p.add_argument("--eval", default=str(SHARED / "data" / "reviews" / "test.csv"))
    p.add_argument("--text-col", help="text column (default: bertui's detection)")
    p.add_argument("--label-col", help="label column (default: bertui's detection)")
    p.add_argument("--budgets", default="64,256,1024")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--arms", default="probe,finetuned")
    p.add_argument("--epochs", type=float, help="default: bertui's")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--keep", type=Path, help="keep the runs' folders here")
    p.add_argument("--extra", default="", help="more `bertui train` flags, for both sides")
    return p.parse_args(argv)


def common_flags(a: argparse.Namespace) -> list[str]:
    flags = ["--model", a.model, "--dataset", a.train, "--eval-dataset", a.eval,
             "--arms", a.arms, "--quiet"]
    if a.text_col:
        flags += ["--text-column", a.text_col]
    if a.label_col:
        flags += ["--label-column", a.label_col]
    if a.epochs is not None:
        flags += ["--epochs", str(a.epochs)]
    return flags + a.extra.split()


def bertui(args: list[str], home: Path) -> None:
    env = {**os.environ, "BERTUI_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "bertui", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"study_speed: `bertui {' '.join(args)}` failed: {done.stderr.strip()[-400:]}")


def accuracies(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {arm: round(float(metrics[arm]["accuracy"]), 6) for arm in metrics.get("arms", [])
            if isinstance(metrics.get(arm), dict) and "accuracy" in metrics[arm]}


def cell_of(run_dir: Path) -> tuple[int, str]:
    import tomllib

    config = tomllib.loads((run_dir / "config.toml").read_text())
    data = config.get("data", {})
    budget = data.get("budget")
    return int(config["train"]["seed"]), "all" if budget is None else str(budget)


def results(home: Path) -> dict[tuple[int, str], dict[str, float]]:
    return {cell_of(d): accuracies(d) for d in sorted((home / "runs").iterdir())}


def run_study(a: argparse.Namespace, home: Path) -> float:
    t0 = time.perf_counter()
    bertui(["study", *common_flags(a), "--budgets", a.budgets, "--seeds", str(a.seeds)], home)
    return time.perf_counter() - t0


def run_separate(a: argparse.Namespace, home: Path) -> float:
    budgets = [b.strip() for b in a.budgets.split(",")]
    t0 = time.perf_counter()
    for seed in range(a.seeds):
        for budget in budgets:
            budget_flag = [] if budget == "all" else ["--budget", budget]
            bertui(["train", *common_flags(a), *budget_flag, "--seed", str(seed),
                    "--data-seed", "0"], home)
    return time.perf_counter() - t0


def split_seconds(home: Path) -> tuple[float, float]:
    """(seconds before training, seconds from training on) summed over the side's runs, from
    their status.json and the run_start event."""
    before = after = 0.0
    for run_dir in (home / "runs").iterdir():
        status = json.loads((run_dir / "status.json").read_text())
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()
                  if line.strip()]
        start = next(e["time"] for e in events if e["type"] == "run_start")
        before += start - status["started"]
        after += status["ended"] - start
    return before, after


def one_round(a: argparse.Namespace, root: Path, index: int) -> dict:
    homes = {side: root / f"round{index}" / side for side in ("study", "separate")}
    sides = {"study": run_study, "separate": run_separate}
    order = ("separate", "study") if index % 2 == 0 else ("study", "separate")
    wall = {}
    for side in order:
        wall[side] = sides[side](a, homes[side])
        before, after = split_seconds(homes[side])
        print(f"round {index + 1}, {side}: {wall[side]:.1f} s (runs: {before:.1f} s before "
              f"training, {after:.1f} s from training on)", file=sys.stderr, flush=True)
    got = {side: results(homes[side]) for side in sides}
    cells = sorted(set(got["study"]) | set(got["separate"]))
    rows = [{"seed": s, "budget": b, "study": got["study"].get((s, b)),
             "separate": got["separate"].get((s, b))} for s, b in cells]
    return {"wall": wall, "rows": rows, "ratio": wall["study"] / wall["separate"]}


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bertui-study-speed-") as tmp:
        root = a.keep or Path(tmp)
        rounds = [one_round(a, root, i) for i in range(a.rounds)]
    rows = rounds[-1]["rows"]
    identical = all(r["study"] == r["separate"] for rnd in rounds for r in rnd["rows"])
    for r in rows:
        mark = "same" if r["study"] == r["separate"] else "DIFFERENT"
        print(f"seed {r['seed']} budget {r['budget']:>5}: study {r['study']}  "
              f"separate {r['separate']}  {mark}", file=sys.stderr)
    study = sum(r["wall"]["study"] for r in rounds)
    separate = sum(r["wall"]["separate"] for r in rounds)
    ratio = study / separate
    per_round = ", ".join(f"{r['ratio']:.2f}" for r in rounds)
    print(f"study {study:.1f} s / separate {separate:.1f} s = {ratio:.2f}x over {len(rounds)} "
          f"round(s) (each: {per_round}; target <= 0.80); accuracies "
          f"{'identical' if identical else 'DIFFER'} run for run", file=sys.stderr)
    print(json.dumps({"study_seconds": round(study, 1), "separate_seconds": round(separate, 1),
                      "ratio": round(ratio, 3), "round_ratios": [round(r["ratio"], 3)
                                                                 for r in rounds],
                      "identical_accuracies": identical, "runs": rows, "budgets": a.budgets,
                      "seeds": a.seeds, "arms": a.arms}))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
