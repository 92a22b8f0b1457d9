"""Does bf16 autocast cost accuracy? The same bertui run in fp32 and in bf16, over several
seeds, paired: the mean accuracy difference (bf16 − fp32) and its standard error.

Each seed runs ``bertui train`` twice (``--precision fp32`` and ``--precision bf16``, in
alternating order), otherwise with bertui's defaults and the data, epochs, learning rate and
batch of ``bench/train_speed.py`` (the same flags). Accuracy does not depend on the machine's
speed, so this can run on a busy machine; the samples/s it also prints do.

    python bench/precision_accuracy.py                         # reviews, seeds 1-5
    python bench/precision_accuracy.py --data trec --seeds 1,2,3,4,5,6,7,8
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import data_arguments, run_bertui  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def paired(diffs: list[float]) -> tuple[float, float]:
    """Mean and standard error of paired differences (0 error for a single pair)."""
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return mean, se


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(p)
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    rows = []
    for i, seed in enumerate(seeds):
        row: dict = {"seed": seed}
        for precision in PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]:
            result = run_bertui(a, ["--precision", precision, "--seed", str(seed)])
            row[precision] = result
            print(f"seed {seed} {precision}: accuracy {result['accuracy']:.4f}  eval loss "
                  f"{result['eval_loss']:.4f}  {result['samples_per_s']:.1f} samples/s "
                  f"({result['precision']})", file=sys.stderr, flush=True)
        rows.append(row)
    acc = paired([100 * (r["bf16"]["accuracy"] - r["fp32"]["accuracy"]) for r in rows])
    loss = paired([r["bf16"]["eval_loss"] - r["fp32"]["eval_loss"] for r in rows])
    speed = [r["bf16"]["samples_per_s"] / r["fp32"]["samples_per_s"] for r in rows]
    report = {
        "config": {k: v for k, v in vars(a).items() if k != "json"},
        "rows": rows,
        "accuracy_diff_points": {"mean": round(acc[0], 3), "se": round(acc[1], 3)},
        "eval_loss_diff": {"mean": round(loss[0], 5), "se": round(loss[1], 5)},
        "mean_accuracy": {pr: round(statistics.fmean(r[pr]["accuracy"] for r in rows), 4)
                          for pr in PRECISIONS},
        "speed_ratio_bf16_fp32_median": round(statistics.median(speed), 3),
    }
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"\n{'seed':>4} {'fp32 acc':>9} {'bf16 acc':>9} {'fp32 loss':>10} {'bf16 loss':>10}")
    for r in rows:
        print(f"{r['seed']:>4} {r['fp32']['accuracy']:9.4f} {r['bf16']['accuracy']:9.4f} "
              f"{r['fp32']['eval_loss']:10.4f} {r['bf16']['eval_loss']:10.4f}")
    m = report["mean_accuracy"]
    print(f"mean accuracy fp32 {m['fp32']:.4f}, bf16 {m['bf16']:.4f}; bf16 − fp32 = "
          f"{acc[0]:+.2f} points (standard error {acc[1]:.2f}, {len(rows)} seeds)")
    print(f"eval loss bf16 − fp32 = {loss[0]:+.4f} (standard error {loss[1]:.4f})")
    print(f"training samples/s bf16 / fp32: median {report['speed_ratio_bf16_fp32_median']} "
          "(a busy machine makes this noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
