"""The GPU check's measurements (run by bench/gpu_check.sh; see bench/gpu_prepare.sh).

Writes ``gpu_check.json`` into ``--out`` after every step, so a run cut short still reports:

1. GPU telemetry as bertui reads it (``bertui.core.telemetry.sample``);
2. training samples/s of bertui vs the reference recipes (tuned, seed) at the same batch and
   learning rate, and bertui with its GPU defaults (batch 64, bf16, padded to ×8), on the
   MiniLM and on a bert-base-sized model with random weights, at SST-2-like lengths (the
   reviews sentences, repeated to ~20k rows so that the timed part is long enough);
   bert-base also with ``--torch-compile``, to see whether it helps;
3. accuracy of the MiniLM fine-tuned on reviews with bertui's defaults on the GPU;
4. model FLOP utilisation: 6 × parameters × real tokens/s (+ attention), over the bf16 peak;
5. the estimate for bert-base-uncased on the full SST-2 (67,349 rows), 3 epochs.

``--smoke`` runs every step on a tiny subset (for a CPU check of the script itself).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPU_DIR = REPO / ".gpu"
PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


class Check:
    def __init__(self, out: Path, budget: float) -> None:
        self.out = out
        self.t0 = time.time()
        self.budget = budget
        self.results: dict = {"steps": {}, "skipped": []}

    def left(self) -> float:
        return self.budget - (time.time() - self.t0)

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.time() - self.t0, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2))

    def step(self, name: str, fn, need: float = 20.0):
        if self.left() < need:
            self.results["skipped"].append(name)
            print(f"skip {name}: {self.left():.0f}s left", flush=True)
            self.save()
            return None
        t = time.time()
        try:
            value = fn()
        except Exception as exc:  # one failing step must not lose the others
            value = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        self.results["steps"][name] = value
        print(f"{name} ({time.time() - t:.0f}s): {json.dumps(value)[:400]}", flush=True)
        self.save()
        return value


def sh(cmd: list[str], env: dict | None = None, timeout: float = 300) -> str:
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}… exited {out.returncode}: {out.stderr[-1500:]}")
    return out.stdout


def restore_fp32(src: Path, dst: Path) -> Path:
    """The carried MiniLM is fp16 (to fit the carry limit): train from fp32 weights, as here."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    state = load_file(str(src / "model.safetensors"))
    save_file(
        {k: v.float().contiguous() for k, v in state.items()},
        str(dst / "model.safetensors"),
        metadata={"format": "pt"},
    )
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    assert torch is not None
    return dst


def make_bert_base(tokenizer_dir: Path, dst: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(str(dst))  # 768 hidden, 12 layers: 110M, random
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(dst))
    return dst


def repeated_csv(src: Path, dst: Path, times: int, limit: int | None) -> Path:
    with open(src, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:] * times
    random.Random(0).shuffle(body)
    if limit:
        body = body[:limit]
    with open(dst, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(body)
    return dst


def bertui_train(model: Path, train: Path, evalf: Path, home: Path, *extra: str) -> dict:
    out = sh(
        [
            sys.executable,
            "-m",
            "bertui",
            "train",
            "--model",
            str(model),
            "--dataset",
            str(train),
            "--eval-dataset",
            str(evalf),
            "--no-probe",
            "--json",
            "--quiet",
            "--checkpoint-minutes",
            "0",
            *extra,
        ],
        env={"BERTUI_HOME": str(home)},
    )
    m = json.loads(out)
    t = m["train"]
    return {
        "samples_per_s": t["train_samples_per_s"],
        "tokens_per_s": t["tokens_per_s"],
        "accuracy": m["finetuned"]["accuracy"],
        "pretrained_accuracy": m["pretrained"]["accuracy"],
        "train_seconds": t["train_seconds"],
        "batch_size": t["batch_size"],
        "learning_rate": t["learning_rate"],
        "precision": t["precision"],
        "device": t["device"],
    }


def reference(
    recipe: str, model: Path, train: Path, evalf: Path, epochs: float, lr: float, batch: int
) -> dict:
    out = sh(
        [
            sys.executable,
            str(GPU_DIR / "data" / "reference_trainer.py"),
            "--recipe",
            recipe,
            "--model",
            str(model),
            "--train",
            str(train),
            "--eval",
            str(evalf),
            "--text-col",
            "text",
            "--label-col",
            "label",
            "--epochs",
            str(epochs),
            "--lr",
            str(lr),
            "--batch",
            str(batch),
        ]
    )
    row = json.loads(out.strip().splitlines()[-1])
    return {
        "samples_per_s": row["train_samples_per_s"],
        "accuracy": row["finetuned_accuracy"],
        "train_seconds": row["train_seconds"],
    }


def mfu(
    result: dict, params: int, layers: int, hidden: int, mean_tokens: float, device: str
) -> dict:
    peak = next((v for k, v in PEAK_BF16.items() if k in device), None)
    tokens_per_s = result.get("tokens_per_s") or 0
    flops_per_token = 6 * params + 12 * layers * hidden * mean_tokens  # matmuls + attention
    achieved = tokens_per_s * flops_per_token
    return {
        "achieved_tflops": round(achieved / 1e12, 2),
        "peak_tflops": peak and round(peak / 1e12, 1),
        "mfu": peak and round(achieved / peak, 4),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu-check-out"))
    p.add_argument("--budget", type=float, default=450)
    p.add_argument("--repeat", type=int, default=8, help="reviews rows repeated this many times")
    p.add_argument("--smoke", action="store_true", help="tiny subset: check the script on CPU")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    c = Check(out, a.budget)
    import torch

    c.results["torch"] = torch.__version__
    c.results["cuda"] = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    c.results["device"] = device

    def telemetry():
        from bertui.core.telemetry import sample

        return sample()

    c.step("telemetry", telemetry, need=1)

    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    data = GPU_DIR / "data"
    limit = 64 if a.smoke else None
    train_big = repeated_csv(data / "train.csv", tmp / "train_big.csv", a.repeat, limit)
    test = repeated_csv(data / "test.csv", tmp / "test.csv", 1, 32 if a.smoke else None)
    minilm = restore_fp32(GPU_DIR / "minilm", tmp / "minilm")
    base = make_bert_base(minilm, tmp / "bert-base")
    epochs, batch = 1.0, 16
    home = tmp / "home"

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm))
    with open(train_big, newline="", encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    mean_tokens = sum(len(x) for x in tok(texts[:2000])["input_ids"]) / min(2000, len(texts))
    c.results["data"] = {"train_rows": len(texts), "mean_tokens": round(mean_tokens, 1)}

    models = {
        "minilm": (minilm, 1e-4, 22_713_728, 6, 384),
        "bert-base": (base, 3e-5, 109_482_240, 12, 768),
    }
    for name, (path, lr, params, layers, hidden) in models.items():
        same = c.step(
            f"{name}/bertui-batch16",
            lambda: bertui_train(
                path,
                train_big,
                test,
                home,
                "--epochs",
                str(epochs),
                "--lr",
                str(lr),
                "--batch-size",
                str(batch),
            ),
        )
        fast = c.step(
            f"{name}/bertui-gpu-defaults",
            lambda: bertui_train(path, train_big, test, home, "--epochs", str(epochs)),
        )
        tuned = c.step(
            f"{name}/reference-tuned",
            lambda: reference("tuned", path, train_big, test, epochs, lr, batch),
        )
        seed = c.step(
            f"{name}/reference-seed",
            lambda: reference("seed", path, train_big, test, epochs, lr, batch),
            need=60,
        )
        ratios = {}
        for label, ours in (("batch16", same), ("gpu-defaults", fast)):
            for ref_name, ref in (("tuned", tuned), ("seed", seed)):
                if ours and ref and "samples_per_s" in ours and "samples_per_s" in ref:
                    ratios[f"bertui-{label}/{ref_name}"] = round(
                        ours["samples_per_s"] / ref["samples_per_s"], 2
                    )
        c.results["steps"][f"{name}/ratios"] = ratios
        if fast and "tokens_per_s" in fast:
            c.results["steps"][f"{name}/mfu"] = mfu(
                fast, params, layers, hidden, mean_tokens, device
            )
            if name == "bert-base":
                c.results["steps"]["bert-base/sst2-3-epochs-estimate-s"] = round(
                    67349 * 3 / fast["samples_per_s"], 1
                )
        c.save()

    c.step(
        "minilm/accuracy-reviews-defaults",
        lambda: bertui_train(minilm, data / "train.csv" if not a.smoke else train_big, test, home),
        need=60,
    )
    # Last, as compiling may take the longest: does torch.compile pay off for bert-base?
    c.step(
        "bert-base/bertui-gpu-defaults-compile",
        lambda: bertui_train(
            base, train_big, test, home, "--epochs", str(epochs), "--torch-compile"
        ),
        need=90,
    )
    c.save()
    print(json.dumps(c.results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
