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
nothing else should run meanwhile. ``--order`` chooses which goes first (default: separate,
so that the study does not profit from a warmer page cache).

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
    p.add_argument("--order", choices=("separate-first", "study-first"), default="separate-first")
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


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bertui-study-speed-") as tmp:
        homes = {"study": Path(tmp) / "study", "separate": Path(tmp) / "separate"}
        sides = {"study": run_study, "separate": run_separate}
        order = ("separate", "study") if a.order == "separate-first" else ("study", "separate")
        wall = {}
        for side in order:
            wall[side] = sides[side](a, homes[side])
            print(f"{side}: {wall[side]:.1f} s", file=sys.stderr, flush=True)
        got = {side: results(homes[side]) for side in sides}
    cells = sorted(set(got["study"]) | set(got["separate"]), key=lambda c: (c[0], c[1]))
    rows = [{"seed": s, "budget": b, "study": got["study"].get((s, b)),
             "separate": got["separate"].get((s, b))} for s, b in cells]
    identical = all(r["study"] == r["separate"] for r in rows)
    for r in rows:
        mark = "same" if r["study"] == r["separate"] else "DIFFERENT"
        print(f"seed {r['seed']} budget {r['budget']:>5}: study {r['study']}  "
              f"separate {r['separate']}  {mark}", file=sys.stderr)
    ratio = wall["study"] / wall["separate"]
    print(f"study {wall['study']:.1f} s / separate {wall['separate']:.1f} s = {ratio:.2f}x "
          f"(target <= 0.80); accuracies {'identical' if identical else 'DIFFER'} run for run",
          file=sys.stderr)
    print(json.dumps({"study_seconds": round(wall["study"], 1),
                      "separate_seconds": round(wall["separate"], 1), "ratio": round(ratio, 3),
                      "identical_accuracies": identical, "runs": rows, "budgets": a.budgets,
                      "seeds": a.seeds, "arms": a.arms}))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
