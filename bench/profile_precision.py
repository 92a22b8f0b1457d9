"""Where a CPU training step goes, fp32 against bf16 autocast: step-interleaved A/B in one
process, then torch.profiler shares by category.

The step is the Trainer's (bertui's own ``make_training_args`` and ``make_trainer`` build it,
so the optimizer, scheduler, length-grouped batches, compact vocabulary and dropout are what a
run gets): forward (under ``torch.autocast("cpu", bfloat16)`` for a bf16 mode, as accelerate
wraps it), backward, gradient-norm clipping, fused AdamW, scheduler, zero_grad. Each step
index runs in every mode on the same batch, in alternating order, so drift of a shared
machine falls on all modes alike. Shares (percent of a mode's profiled step) are robust to
that drift; absolute times are not.

Modes: ``fp32``, ``bf16``, and either with ``+exact`` (exact dropout: torch's masks from
bertui's kernel, what a run gets by default on a CPU where it applies), ``+fast`` (fast
dropout) or ``+nodrop`` (every dropout off: what dropout costs). A mode without ``+exact``
draws its masks with torch's own ``bernoulli_``.

    python bench/profile_precision.py                      # reviews, 30 timed + 6 profiled
    python bench/profile_precision.py --modes fp32,bf16,bf16+fast,bf16+nodrop --steps 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

# Category of an op: the nearest enclosing op (or the op itself) whose name holds one of these
# (checked in this order, case-insensitive).
CATEGORIES = (
    ("optimizer (AdamW)", ("optimizer",)),
    ("norm clipping", ("clip_grad_norm",)),
    ("zero_grad", ("zero_grad",)),
    ("casts", ("aten::_to_copy", "aten::to", "tocopybackward")),
    ("dropout", ("dropout", "bernoulli", "bertui.fast_dropout")),
    ("GEMM", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear",
              "aten::matmul", "mmbackward", "bmmbackward")),
    ("layer norm", ("layer_norm", "layernorm")),
    ("softmax", ("softmax",)),
    ("GELU", ("gelu",)),
    ("embedding", ("embedding",)),
    ("attention (SDPA)", ("scaled_dot_product", "sdpa", "flash_attention")),
    ("loss", ("cross_entropy", "nll_loss", "nlllossbackward", "logsoftmax")),
)


def category(event: Any) -> str:
    node = event
    while node is not None:
        name = node.name.lower()
        if name.startswith("step "):
            break
        for label, keys in CATEGORIES:
            if any(k in name for k in keys):
                return label
        node = node.cpu_parent
    return "other (elementwise, autograd, Python)"


def step_mode(event: Any) -> str | None:
    node = event
    while node is not None:
        if node.name.startswith("step "):
            return node.name[5:]
        node = node.cpu_parent
    return None


def build(a: argparse.Namespace, tmp: Path) -> tuple[Any, Any, list[dict[str, Any]]]:
    """The model (compact vocabulary as a run has it) and the Trainer's optimizer, scheduler
    and first batches."""
    from bertui.core import data as data_mod
    from bertui.core import models
    from bertui.core.training import (
        Hyper,
        encode,
        make_trainer,
        make_training_args,
        pick_device,
    )
    from bertui.core.vocab import CompactedModel, CompactVocab

    source = models.resolve_model(a.model)
    tokenizer = models.load_tokenizer(source.path)
    prepared = data_mod.prepare(a.train, eval_spec=a.eval, text_column=a.text_col,
                                label_column=a.label_col, max_train_samples=a.n_train or None)
    hyper = Hyper(epochs=1.0, learning_rate=1e-4, batch_size=a.batch, precision="fp32")
    train = encode(tokenizer, prepared.train.texts, prepared.train.labels, 128)
    evaluation = encode(tokenizer, prepared.eval.texts, prepared.eval.labels, 128)
    model = models.load_classifier(source.path, id2label=prepared.id2label, seed=0)
    pad_id = tokenizer.pad_token_id or 0
    if not a.no_compact_vocab:
        vocab = CompactVocab.of([*train.input_ids, *evaluation.input_ids],
                                [pad_id, *tokenizer.all_special_ids])
        size = model.get_input_embeddings().num_embeddings
        train.input_ids = vocab.remap(train.input_ids, size)
        pad_id = int(vocab.table(size)[pad_id])
        CompactedModel(model, vocab).shrink()
    device = pick_device("fp32")
    args = make_training_args(hyper, device, tmp, len(train))
    trainer = make_trainer(model, args, train, evaluation, tokenizer, [], None, pad_id)
    trainer.create_optimizer_and_scheduler(num_training_steps=10_000)
    batches = []
    for batch in trainer.get_train_dataloader():
        batches.append(batch)
        if len(batches) >= a.steps + a.profile_steps + a.warmup:
            break
    return model, trainer, batches


class Modes:
    """Puts the model into a mode before a step (precision and dropout kind)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.swap: Any = None
        self.kind: str | None = None

    def enter(self, mode: str) -> Any:
        from bertui.core.dropout import FastDropout

        kind = "+fast" if "+fast" in mode else "+exact" if "+exact" in mode else None
        if kind != self.kind:
            if self.swap is not None:
                self.swap.undo()
            self.swap = None if kind is None else FastDropout.install(
                self.model, exact=kind == "+exact")
            self.kind = kind
        self.model.train("+nodrop" not in mode)
        return mode.startswith("bf16")


def one_step(model: Any, trainer: Any, batch: dict[str, Any], bf16: bool) -> float:
    import torch
    from torch.profiler import record_function

    t0 = time.perf_counter()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    with ctx:
        loss = model(**batch).loss
    loss.backward()
    with record_function("clip_grad_norm"):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    with record_function("optimizer"):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    with record_function("zero_grad"):
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--train", default=str(SHARED / "data" / "reviews" / "train.csv"))
    p.add_argument("--eval", default=str(SHARED / "data" / "reviews" / "test.csv"))
    p.add_argument("--text-col", default="text")
    p.add_argument("--label-col", default="label")
    p.add_argument("--n-train", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--modes", default="fp32,bf16")
    p.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    p.add_argument("--profile-steps", type=int, default=6, help="profiled steps per mode")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compact-vocab", action="store_true")
    p.add_argument("--top", type=int, default=0, help="also print the N heaviest ops per mode")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: torch's). On a loaded machine use 1: with two "
                        "threads every parallel op waits for the busy other core")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    sys.path.insert(0, str(REPO))
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    if a.threads:
        torch.set_num_threads(a.threads)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="bertui-profile-") as tmp:
        model, trainer, batches = build(a, Path(tmp))
    switch = Modes(model)
    for batch in batches[: a.warmup]:
        for mode in modes:
            one_step(model, trainer, batch, switch.enter(mode))
    times: dict[str, list[float]] = {m: [] for m in modes}
    timed = batches[a.warmup : a.warmup + a.steps]
    for i, batch in enumerate(timed):
        for mode in modes if i % 2 == 0 else modes[::-1]:
            bf16 = switch.enter(mode)
            times[mode].append(one_step(model, trainer, batch, bf16))
    profiled = batches[a.warmup + a.steps :]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i, batch in enumerate(profiled):
            for mode in modes if i % 2 == 0 else modes[::-1]:
                bf16 = switch.enter(mode)
                with record_function(f"step {mode}"):
                    one_step(model, trainer, batch, bf16)
    shares: dict[str, dict[str, float]] = {m: {} for m in modes}
    ops: dict[str, dict[str, float]] = {m: {} for m in modes}
    for event in prof.events():
        mode = step_mode(event)
        if mode is None or event.name.startswith("step "):
            continue
        us = event.self_cpu_time_total
        shares[mode][category(event)] = shares[mode].get(category(event), 0.0) + us
        ops[mode][event.name] = ops[mode].get(event.name, 0.0) + us
    totals = {m: sum(v.values()) for m, v in shares.items()}
    base = modes[0]
    report = {
        "threads": torch.get_num_threads(),
        "median_step_ms": {m: round(1000 * statistics.median(v), 2) for m, v in times.items()},
        "speedup_vs_" + base: {
            m: round(statistics.median(times[base]) / statistics.median(v), 3)
            for m, v in times.items()
        },
        "share_percent": {
            m: {k: round(100 * v / totals[m], 1) for k, v in sorted(
                shares[m].items(), key=lambda kv: -kv[1])} for m in modes
        },
        # each category's profiled time against the first mode's: which parts got faster
        "category_ms_per_step": {
            m: {k: round(v / 1000 / max(1, len(profiled)), 2) for k, v in shares[m].items()}
            for m in modes
        },
    }
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"threads {report['threads']}; median step (ms) over {len(timed)} interleaved steps:")
    for m in modes:
        print(f"  {m:<14} {report['median_step_ms'][m]:8.2f}   ×{report['speedup_vs_' + base][m]}")
    names = sorted({k for m in modes for k in shares[m]},
                   key=lambda k: -shares[base].get(k, 0.0))
    print(f"\nshare of a profiled step (%), {len(profiled)} steps per mode; ms/step in brackets")
    print(f"{'category':<38}" + "".join(f"{m:>22}" for m in modes))
    for k in names:
        cells = "".join(
            f"{report['share_percent'][m].get(k, 0.0):>12.1f} "
            f"({report['category_ms_per_step'][m].get(k, 0.0):6.1f})"
            for m in modes
        )
        print(f"{k:<38}{cells}")
    for m in modes[: len(modes) if a.top else 0]:
        print(f"\nheaviest ops, {m}:")
        for name, us in sorted(ops[m].items(), key=lambda kv: -kv[1])[: a.top]:
            print(f"  {100 * us / totals[m]:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
