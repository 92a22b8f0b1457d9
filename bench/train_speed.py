"""Race bertui's engine against the reference recipes, side by side, on the same machine.

Runs, alternately for several rounds, on the same model, data, epochs, learning rate and batch:

* ``bertui``  — ``bertui train`` as users run it, with its defaults (headless, detached
  worker, events and telemetry on, ``--precision auto``: bf16 autocast on a CPU with native
  bf16, fp32 elsewhere), training samples/s read from the run's metrics.json;
* ``bertui-fp32`` / ``bertui-bf16`` — the same with ``--precision fp32`` / ``bf16``;
* ``tuned``   — ``reference_trainer.py --recipe tuned`` (a careful hand-written Trainer);
* ``seed``    — ``reference_trainer.py --recipe seed`` (the seed article's recipe);
* ``bertui-quiet`` (with ``--overhead``) — bertui with events and telemetry off;
* ``bertui-torch-dropout`` — bertui with torch's own ``bernoulli_`` for the dropout masks
  (``BERTUI_TORCH_DROPOUT=1``) instead of bertui's kernel that draws the same masks: what the
  kernel buys (the accuracy and eval loss must be equal);
* ``bertui-fast-dropout`` (on request) — bertui with ``--fast-dropout`` (another random stream
  than the references' dropout, so another accuracy).

and prints, for each: training samples/s (median, min, max), accuracy, and the ratios
bertui/tuned and bertui/seed (and the monitoring overhead), with the precision bertui's
``auto`` picked and why. Every process is a child of this one, so they share the machine as
equals; nothing else should run meanwhile.

    python bench/train_speed.py                       # reviews, MiniLM, 1 epoch, 3 rounds
    python bench/train_speed.py --data trec           # TREC questions, 2000 rows
    python bench/train_speed.py --train T.tsv --eval D.tsv --text-col sentence --n-train 8000 \
        --epochs 1 --lr 1e-4 --batch 16 --rounds 3 --recipes bertui,tuned
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "bench" / "reference_trainer.py"
# --data NAME: the shared data sets (train, eval, text column, label column, rows; 0 = all)
DATA = {
    "reviews": ("reviews/train.csv", "reviews/test.csv", "text", "label", 0),
    "trec": ("trec/train.csv", "trec/test.csv", "question", "coarse_label", 2000),
}


def data_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that say what is trained, and how (this script's and precision_accuracy's)."""
    p.add_argument(
        "--model", default="default", help="bertui model spec (default: embedded MiniLM)"
    )
    p.add_argument("--data", choices=tuple(DATA), default="reviews",
                   help="a shared data set (sets --train, --eval, the columns and --n-train; "
                        "those flags override it)")
    p.add_argument("--train")
    p.add_argument("--eval")
    p.add_argument("--text-col")
    p.add_argument("--label-col")
    p.add_argument("--n-train", type=int, help="0 = all rows")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=16)


def resolve_data(a: argparse.Namespace) -> None:
    """Fill the data flags left unset from ``--data``."""
    train, evaluation, text, label, rows = DATA[a.data]
    a.train = a.train or str(SHARED / "data" / train)
    a.eval = a.eval or str(SHARED / "data" / evaluation)
    a.text_col = a.text_col or text
    a.label_col = a.label_col or label
    a.n_train = rows if a.n_train is None else a.n_train


def run_reference(recipe: str, a: argparse.Namespace, model_dir: str) -> dict:
    cmd = [
        sys.executable,
        str(REFERENCE),
        "--recipe",
        recipe,
        "--model",
        model_dir,
        "--train",
        a.train,
        "--eval",
        a.eval,
        "--text-col",
        a.text_col,
        "--label-col",
        a.label_col,
        "--n-train",
        str(a.n_train),
        "--epochs",
        str(a.epochs),
        "--lr",
        str(a.lr),
        "--batch",
        str(a.batch),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
    if out.returncode != 0:
        raise SystemExit(f"reference {recipe} failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "samples_per_s": row["train_samples_per_s"],
        "accuracy": row["finetuned_accuracy"],
        "seconds": row["train_seconds"],
    }


# bertui variants: recipe name → extra ``bertui train`` flags
BERTUI_VARIANTS = {
    "bertui": [],
    "bertui-fp32": ["--precision", "fp32"],
    "bertui-bf16": ["--precision", "bf16"],
    "bertui-quiet": ["--no-events", "--no-telemetry"],
    "bertui-fast-dropout": ["--fast-dropout"],
    "bertui-torch-dropout": [],
}
# ... and the environment they run with
BERTUI_VARIANT_ENV = {"bertui-torch-dropout": {"BERTUI_TORCH_DROPOUT": "1"}}


def run_bertui(a: argparse.Namespace, extra: list[str], env: dict | None = None) -> dict:
    """One ``bertui train`` in a fresh BERTUI_HOME; ``extra`` flags override the defaults."""
    resolve_data(a)
    with tempfile.TemporaryDirectory(prefix="bertui-bench-") as home:
        cmd = [
            sys.executable,
            "-m",
            "bertui",
            "train",
            "--model",
            a.model,
            "--dataset",
            a.train,
            "--eval-dataset",
            a.eval,
            "--text-column",
            a.text_col,
            "--label-column",
            a.label_col,
            "--epochs",
            str(a.epochs),
            "--lr",
            str(a.lr),
            "--batch-size",
            str(a.batch),
            "--no-probe",
            "--json",
            "--quiet",
            "--checkpoint-minutes",
            "0",
        ]
        if a.n_train:
            cmd += ["--max-train-samples", str(a.n_train)]
        cmd += extra
        out = subprocess.run(
            cmd, capture_output=True, text=True,
            env={**_env(), "BERTUI_HOME": home, **(env or {})}, check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"bertui failed:\n{out.stderr[-3000:]}")
        metrics = json.loads(out.stdout)
        train = metrics["train"]
        return {
            "samples_per_s": train["train_samples_per_s"],
            "accuracy": metrics["finetuned"]["accuracy"],
            "eval_loss": metrics["finetuned"].get("eval_loss"),
            "seconds": train["train_seconds"],
            "precision": train.get("precision_reason") or train.get("precision"),
        }


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def summarise(rows: list[dict]) -> dict:
    sps = [r["samples_per_s"] for r in rows]
    out = {
        "median": statistics.median(sps),
        "min": min(sps),
        "max": max(sps),
        "accuracy": statistics.median(r["accuracy"] for r in rows),
        "runs": len(rows),
    }
    if rows[0].get("precision"):
        out["precision"] = rows[0]["precision"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(p)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--recipes",
        default="bertui,tuned,seed",
        help=f"comma list of tuned, seed, {', '.join(BERTUI_VARIANTS)}",
    )
    p.add_argument("--overhead", action="store_true", help="also run bertui-quiet (events off)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    resolve_data(a)

    sys.path.insert(0, str(REPO))
    from bertui.core.models import resolve_model

    model_dir = str(resolve_model(a.model).path)
    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in BERTUI_VARIANTS and r not in ("tuned", "seed")]
    if unknown:
        p.error(f"unknown recipe {unknown[0]!r}")
    if a.overhead and "bertui-quiet" not in recipes:
        recipes.append("bertui-quiet")
    results: dict[str, list[dict]] = {r: [] for r in recipes}
    t0 = time.time()
    for round_ in range(a.rounds):
        order = recipes if round_ % 2 == 0 else list(reversed(recipes))
        for recipe in order:
            if recipe in BERTUI_VARIANTS:
                row = run_bertui(a, BERTUI_VARIANTS[recipe], BERTUI_VARIANT_ENV.get(recipe))
            else:
                row = run_reference(recipe, a, model_dir)
            results[recipe].append(row)
            print(
                f"round {round_ + 1} {recipe:<13} {row['samples_per_s']:8.2f} samples/s  "
                f"accuracy {row['accuracy']:.4f}  {row.get('precision') or ''}",
                file=sys.stderr,
                flush=True,
            )
    summary = {name: summarise(rows) for name, rows in results.items()}
    ratios = {}
    if "bertui" in summary:
        for other in ("tuned", "seed", *(v for v in BERTUI_VARIANTS if v != "bertui")):
            if other in summary:
                ratios[f"bertui/{other}"] = round(
                    summary["bertui"]["median"] / summary[other]["median"], 3
                )
        if "tuned" in summary:
            ratios["accuracy bertui-tuned (points)"] = round(
                100 * (summary["bertui"]["accuracy"] - summary["tuned"]["accuracy"]), 2
            )
    import torch

    report = {
        "config": {k: v for k, v in vars(a).items() if k != "json"},
        "torch_threads": torch.get_num_threads(),
        "minutes": round((time.time() - t0) / 60, 1),
        "summary": summary,
        "ratios": ratios,
    }
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"\n{'recipe':<13} {'median':>8} {'min':>8} {'max':>8}  accuracy   (training samples/s)")
    for name, s in summary.items():
        print(f"{name:<13} {s['median']:8.2f} {s['min']:8.2f} {s['max']:8.2f}  {s['accuracy']:.4f}"
              f"  {s.get('precision', '')}".rstrip())
    for name, value in ratios.items():
        print(f"{name}: {value}")
    if "bertui/bertui-quiet" in ratios:
        print(f"monitoring overhead: {100 * (1 - ratios['bertui/bertui-quiet']):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
