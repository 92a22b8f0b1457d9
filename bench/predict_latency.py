"""The classifier pane's path, warm: milliseconds per sentence for the three models on CPU.

Makes a small real run of the embedded default model (a few training steps: the weights'
values do not change the latency), loads it the way the pane does (``RunPredictor``), warms
up, then times single sentences of several lengths, one call per sentence as the pane makes.

    python bench/predict_latency.py [--model default] [--repeats 50] [--json]
Target: ≤ 30 ms per sentence for the embedded model (all three models together).
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

SENTENCES = [
    "Great.",
    "The delivery was late and the box was crushed.",
    "I expected very little from this tiny café, but the soup was wonderful and the staff "
    "remembered my name on the second visit.",
    "After three weeks with this laptop I can say the keyboard is lovely, the battery lasts a "
    "full day, but the fan noise under load is hard to ignore and the webcam is poor.",
]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="default")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="bertui-latency-") as home:
        env["BERTUI_HOME"] = home
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bertui",
                "train",
                "--model",
                a.model,
                "--dataset",
                "demo",
                "--max-train-samples",
                "32",
                "--max-eval-samples",
                "16",
                "--epochs",
                "1",
                "--quiet",
                "--name",
                "latency",
            ],
            env=env,
            check=True,
            stdin=subprocess.DEVNULL,
        )
        os.environ.update(env)
        import torch

        from bertui.core.predict import RunPredictor
        from bertui.core.runs import find_run

        predictor = RunPredictor(find_run("latency")).load()
        for s in SENTENCES * 3:
            predictor.predict([s])  # warm-up
        rows = []
        for s in SENTENCES:
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                predictor.predict([s])
                times.append((time.perf_counter() - t0) * 1000)
            tokens = len(predictor.tokenizer(s)["input_ids"])
            rows.append(
                {
                    "tokens": tokens,
                    "median_ms": round(statistics.median(times), 2),
                    "p90_ms": round(sorted(times)[int(0.9 * len(times))], 2),
                }
            )
        # Per model, one after the other (the pre-trained and the probe share one forward
        # pass): the eager forward (batches, the CLI) and the traced one (one text, the pane).
        from bertui.core.training import Encoded, batched_forward

        enc = Encoded(predictor.tokenizer([SENTENCES[1]])["input_ids"], [0])
        per_model = {}
        for name, key, model, feats in (
            ("pretrained+probe", "base", predictor.base, True),
            ("finetuned", "finetuned", predictor.finetuned, False),
        ):
            for how, call in (
                ("eager", lambda m=model, f=feats: batched_forward(
                    m, enc, predictor.tokenizer.pad_token_id, features=f)),
                ("traced", lambda k=key: predictor._fast[k](enc.input_ids[0])),
            ):
                if how == "traced" and predictor._fast.get(key) is None:
                    continue
                times = []
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    call()
                    times.append((time.perf_counter() - t0) * 1000)
                per_model[f"{name} ({how})"] = round(statistics.median(times), 2)
    report = {
        "model": a.model,
        "torch_threads": torch.get_num_threads(),
        "sentences": rows,
        "per_model_ms_12_tokens": per_model,
        "median_ms_all_three": round(statistics.median(r["median_ms"] for r in rows), 2),
    }
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'tokens':>6} {'median ms':>10} {'p90 ms':>8}   (all three models, one sentence)")
        for r in rows:
            print(f"{r['tokens']:>6} {r['median_ms']:>10} {r['p90_ms']:>8}")
        for name, ms in per_model.items():
            print(f"{name}: {ms} ms")
        print(f"median over lengths: {report['median_ms_all_three']} ms per sentence (target ≤ 30)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
