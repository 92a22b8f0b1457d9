"""The pieces the arms are built from: device, tokenisation, batched inference, the linear
probe's logistic regression, and the transformers ``Trainer`` of a run (its arguments,
datasets, collator and compute_metrics).

The defaults are chosen to learn on small data: dynamic padding, length-grouped batches,
warmup as a fraction of the steps, a learning rate that suits the model size, eval each epoch.
The arms themselves (pre-trained, probe, fine-tuned) are in ``bertui.core.arms``; the Trainer
subclass and its callbacks in ``bertui.core.trainer_hooks``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertui.core.errors import BadInput
from bertui.core.schema import DEFAULT_ARMS, RunOptions, read_table

CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 64
BASE_EVAL_BATCH = 64
# A model is measured (and shown in the classifier pane) in bf16/fp16 only where that keeps its
# answers: every class probability within this of fp32's on the rows checked (the first
# CHECK_ROWS eval rows). A label can then change only where fp32's top two are within 0.02.
LOW_PRECISION_TOLERANCE = 0.01
CHECK_ROWS = 64


class Cancelled(Exception):
    """The user asked the run to stop (SIGTERM) before training began."""


@dataclass
class Hyper:
    """Hyper-parameters of a run as stored in config.toml's [train] table. The options are
    the run schema's ``[train]`` fields (defaults there); the last four are the recipe's own
    (not options, read from the table when it has them)."""

    epochs: float = RunOptions.epochs
    learning_rate: float | None = RunOptions.learning_rate
    batch_size: int | None = RunOptions.batch_size
    max_length: int = RunOptions.max_length
    seed: int = RunOptions.seed
    precision: str = RunOptions.precision  # auto | bf16 | fp16 | fp32
    group_by_length: bool = RunOptions.group_by_length
    compact_vocab: bool = RunOptions.compact_vocab
    fast_dropout: bool = RunOptions.fast_dropout
    torch_compile: bool = RunOptions.torch_compile
    auto_batch_size: bool = RunOptions.auto_batch_size
    checkpoint_minutes: float = RunOptions.checkpoint_minutes
    epoch_eval: bool = RunOptions.epoch_eval
    tapt_steps: int | None = RunOptions.tapt_steps
    probe: bool = "probe" in DEFAULT_ARMS  # [train] probe: derived from the arms
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_batch_size: int | None = None
    logging_points: int = 200

    @classmethod
    def from_config(cls, table: dict[str, Any]) -> Hyper:
        """Read through the schema: a missing option takes its default."""
        own = {k: table[k] for k in ("probe", *RECIPE_KEYS) if k in table}
        return cls(**read_table("train", table), **own)


RECIPE_KEYS = ("warmup_ratio", "weight_decay", "eval_batch_size", "logging_points")


@dataclass
class Device:
    kind: str  # "cuda" | "mps" | "cpu"
    name: str
    precision: str  # "bf16" | "fp16" | "fp32"
    count: int = 1
    notes: list[str] = field(default_factory=list)
    reason: str = ""  # why this precision, as people read it ("bf16: the CPU has AMX")

    def autocast(self) -> Any:
        """The autocast context of this precision for inference outside the Trainer (the
        probe's features, the eval predictions): bf16/fp16 autocast, or a no-op in fp32."""
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.kind, dtype=dtype)


def pick_device(precision: str = "auto", cpu_flags: frozenset[str] | None = None) -> Device:
    """The accelerator and the precision to train in: on a GPU bf16 where it supports it (else
    fp16 with loss scaling) with TF32 matmuls; on a CPU bf16 autocast where the processor
    computes bf16 natively (``bertui.core.cpu``: AVX512-BF16, AMX, Arm BF16), fp32 elsewhere.
    ``cpu_flags`` stands in for this CPU's feature flags (tests)."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if precision == "auto":
            bf16 = torch.cuda.is_bf16_supported()
            precision = "bf16" if bf16 else "fp16"
            reason = "bf16: the GPU supports it" if bf16 else "fp16: the GPU has no bf16"
        else:
            reason = f"{precision}: asked for"
        from bertui.core.distributed import world_size

        # Under torchrun a process trains on its own GPU, and the run on world-size GPUs.
        count = world_size() if world_size() > 1 else torch.cuda.device_count()
        return Device("cuda", name, precision, count, reason=reason)
    if precision == "fp16":
        raise BadInput(
            "fp16 training needs a CUDA GPU; use --precision fp32 or bf16 on CPU", field="precision"
        )
    from bertui.core.cpu import cpu_precision

    auto, why = cpu_precision(cpu_flags)
    if precision == "auto":
        precision, reason = auto, why
    elif precision == "bf16":
        has = why.removeprefix("bf16: ") if auto == "bf16" else (
            "the CPU has no native bf16: slower than fp32")
        reason = f"bf16: asked for ({has})"
    else:
        reason = f"{precision}: asked for"
    return Device("cpu", "CPU", precision, 1, reason=reason)


# --- tokenisation -----------------------------------------------------------------------------


@dataclass
class Encoded:
    """Token ids of a list of texts (no padding), their labels, and truncation counts."""

    input_ids: list[list[int]]
    labels: list[int]
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    @property
    def mean_length(self) -> float:
        return sum(self.lengths) / max(1, len(self))


TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt",  # WordPiece, byte-level BPE (RoBERTa, GPT-2)
    "spiece.model", "sentencepiece.bpe.model", "spm.model", "tokenizer.model",  # SentencePiece
)


def tokenizer_fingerprint(model_path: Path) -> str:
    """What the token cache is keyed on: every tokenizer file of the model folder (two models
    whose tokenizers differ only in, say, merges.txt must not share cached ids)."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        p = Path(model_path) / name
        if p.exists():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def encode(
    tokenizer: Any,
    texts: list[str],
    labels: list[int],
    max_length: int,
    cache_dir: Path | None = None,
    fingerprint: str = "",
) -> Encoded:
    """Tokenise once (truncating to ``max_length``, counting how many were cut); cached as a
    flat ``.npz`` (no pickle) per (tokenizer, texts, max length) when ``cache_dir`` is given."""
    import numpy as np

    key = None
    if cache_dir is not None:
        h = hashlib.sha256(f"{fingerprint}|{max_length}|{len(texts)}".encode())
        for text in texts:
            h.update(text.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        key = Path(cache_dir) / f"{h.hexdigest()[:24]}.npz"
        if key.exists():
            try:
                with np.load(key, allow_pickle=False) as data:
                    flat, offsets = data["flat"], data["offsets"]
                    truncated = int(data["truncated"])
                ids = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(texts))]
                return Encoded(ids, list(labels), truncated)
            except (OSError, KeyError, ValueError):
                pass
    full = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=False,
        return_overflowing_tokens=False,
        return_length=False,
    )
    ids = full["input_ids"]
    truncated = sum(1 for row in ids if len(row) >= max_length)
    if truncated:
        # Only texts that reached the cap may have been cut: count the ones really longer.
        long = [t for t, row in zip(texts, ids) if len(row) >= max_length]
        untruncated = tokenizer(
            long, truncation=False, return_attention_mask=False, return_token_type_ids=False
        )["input_ids"]
        truncated = sum(1 for row in untruncated if len(row) > max_length)
    if key is not None:
        try:
            key.parent.mkdir(parents=True, exist_ok=True)
            offsets = np.zeros(len(ids) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(r) for r in ids])
            flat = np.fromiter((t for r in ids for t in r), dtype=np.int32, count=int(offsets[-1]))
            tmp = key.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, flat=flat, offsets=offsets, truncated=np.int64(truncated))
            os.replace(tmp, key)
        except OSError:
            pass  # a cache that cannot be written is no error
    return Encoded(ids, list(labels), truncated)


class TorchDataset:
    """A map-style dataset of token-id lists for ``Trainer`` (no tensors until collation)."""

    def __init__(self, encoded: Encoded) -> None:
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.encoded.input_ids[i], "labels": self.encoded.labels[i]}


class PadCollator:
    """Dynamic padding to the longest sequence of the batch (rounded up to a multiple of
    ``multiple`` on GPU, for tensor cores), built straight into tensors."""

    def __init__(self, pad_id: int, multiple: int | None = None) -> None:
        self.pad_id = pad_id
        self.multiple = multiple

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            longest = int(math.ceil(longest / self.multiple) * self.multiple)
        ids = torch.full((len(features), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            ids[row, :n] = torch.tensor(feature["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch


# --- inference --------------------------------------------------------------------------------


def batched_forward(
    model: Any,
    encoded: Encoded,
    pad_id: int,
    batch_size: int = BASE_EVAL_BATCH,
    *,
    features: bool = False,
    check: Callable[[], None] | None = None,
    device: Device | None = None,
) -> tuple[Any, Any | None]:
    """Class probabilities (and, with ``features``, mean-pooled last hidden states) for every
    row, in the original order. Rows are batched by length so little is padded. With
    ``device``, under its precision's autocast (the run's choice, as the Trainer trains and
    evaluates in it)."""
    import contextlib

    import numpy as np
    import torch

    where = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded.input_ids[i]))
    collate = PadCollator(pad_id)
    probs_out: list[Any] = [None] * len(encoded)
    feats_out: list[Any] = [None] * len(encoded)
    model.eval()
    precision = device.autocast() if device is not None else contextlib.nullcontext()
    with torch.inference_mode(), precision:
        for start in range(0, len(order), batch_size):
            if check is not None:
                check()
            idx = order[start : start + batch_size]
            batch = collate([{"input_ids": encoded.input_ids[i]} for i in idx])
            batch = {k: v.to(where) for k, v in batch.items()}
            out = model(**batch, output_hidden_states=features)
            probs = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
            if features:
                hidden = out.hidden_states[-1].float()
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy()
            for j, i in enumerate(idx):
                probs_out[i] = probs[j]
                if features:
                    feats_out[i] = pooled[j]
    probs_arr = np.stack(probs_out) if len(encoded) else np.zeros((0, model.config.num_labels))
    feats_arr = np.stack(feats_out) if features and len(encoded) else None
    return probs_arr, feats_arr


def inference_device(model: Any, encoded: Encoded, pad_id: int, device: Device) -> Device:
    """``device`` when its precision keeps ``model``'s answers on the first ``CHECK_ROWS`` rows
    of ``encoded`` (class probabilities within ``LOW_PRECISION_TOLERANCE`` of fp32's), else the
    same device in fp32, its reason saying by how much the answers moved. ``model``'s forward
    must not carry an autocast of its own (the Trainer's: ``unwrap_model``)."""
    import numpy as np

    if device.precision == "fp32" or not len(encoded):
        return device
    sample = Encoded(encoded.input_ids[:CHECK_ROWS], encoded.labels[:CHECK_ROWS])
    want, _ = batched_forward(model, sample, pad_id)
    got, _ = batched_forward(model, sample, pad_id, device=device)
    diff = float(np.abs(want - got).max())
    if diff <= LOW_PRECISION_TOLERANCE:
        return device
    reason = f"fp32: {device.precision} changed the model's answers (by up to {diff:.2f})"
    return Device(device.kind, device.name, "fp32", device.count, reason=reason)


# --- linear probe -----------------------------------------------------------------------------


def fit_probe(train_x: Any, train_y: list[int], num_labels: int, seed: int) -> dict[str, Any]:
    """Logistic regression on frozen features, returned as plain arrays (W: K×H, b: K) such
    that softmax(x @ W.T + b) gives the class probabilities."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    clf.fit(train_x, train_y)
    weight = np.zeros((num_labels, train_x.shape[1]), dtype=np.float32)
    bias = np.zeros(num_labels, dtype=np.float32)
    classes = [int(c) for c in clf.classes_]
    if len(classes) == 2:  # sklearn keeps one row for binary problems: softmax([0, z]) = sigmoid
        weight[classes[1]] = clf.coef_[0]
        bias[classes[1]] = clf.intercept_[0]
    else:
        for row, c in enumerate(classes):
            weight[c] = clf.coef_[row]
            bias[c] = clf.intercept_[row]
    missing = [c for c in range(num_labels) if c not in classes]
    bias[missing] = -1e4  # a class never seen in training is never predicted (binary too)
    return {"weight": weight, "bias": bias}


def probe_probs(probe: dict[str, Any], x: Any) -> Any:
    import numpy as np

    logits = x @ probe["weight"].T + probe["bias"]
    logits = logits - logits.max(-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(-1, keepdims=True)


def classifier_head_state(model: Any) -> dict[str, Any]:
    """The weights that ``from_pretrained`` initialised fresh (the classification head)."""
    base = getattr(model, "base_model_prefix", "")
    return {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
        if not name.startswith(base + ".")
    }


# --- Trainer ----------------------------------------------------------------------------------


def make_training_args(hyper: Hyper, device: Device, output_dir: Path, n_train: int) -> Any:
    """``TrainingArguments`` for a run: the defaults that learn on small data, and the fast
    path on GPU (bf16/fp16, TF32, fused AdamW, pinned memory, loader workers). The learning
    rate is set by then (the engine picks one for the model's size when the config has none)."""
    from transformers import TrainingArguments

    if hyper.learning_rate is None:
        raise ValueError("make_training_args needs hyper.learning_rate set")
    from bertui.core.distributed import PROCESS_GROUP_TIMEOUT_SECONDS, world_size

    batch = hyper.batch_size or (GPU_BATCH_SIZE if device.kind == "cuda" else CPU_BATCH_SIZE)
    # Under torchrun each process trains one device's share (device.count is the run's GPUs).
    steps_per_epoch = max(1, math.ceil(n_train / (batch * max(device.count, world_size()))))
    total = max(1, math.ceil(steps_per_epoch * hyper.epochs))
    logging_steps = max(1, total // max(1, hyper.logging_points))
    cuda = device.kind == "cuda"
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=hyper.epochs,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=hyper.eval_batch_size or max(BASE_EVAL_BATCH, batch),
        learning_rate=hyper.learning_rate,
        warmup_steps=hyper.warmup_ratio,  # a float < 1 is a fraction of the steps (v5)
        weight_decay=hyper.weight_decay,
        lr_scheduler_type="linear",
        train_sampling_strategy="group_by_length" if hyper.group_by_length else "random",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=logging_steps,
        report_to="none",
        disable_tqdm=True,
        seed=hyper.seed,
        bf16=device.precision == "bf16",
        fp16=device.precision == "fp16",
        tf32=True if cuda else None,
        optim="adamw_torch_fused",  # fused AdamW: also the fastest on CPU (torch ≥ 2.4)
        dataloader_pin_memory=cuda,
        dataloader_num_workers=2 if cuda else 0,
        dataloader_persistent_workers=cuda,
        auto_find_batch_size=hyper.auto_batch_size,
        torch_compile=hyper.torch_compile,
        use_cpu=device.kind == "cpu",
        # torchrun: DDP over gloo on CPU (without it each process would train alone), NCCL on
        # GPU; a collective waits minutes, not torch's 30, for a peer (core.distributed).
        ddp_backend="gloo" if device.kind == "cpu" and world_size() > 1 else None,
        ddp_timeout=PROCESS_GROUP_TIMEOUT_SECONDS,
        remove_unused_columns=False,
        save_only_model=False,
    )


def accuracy_f1(eval_pred: Any) -> dict[str, float]:
    """compute_metrics for evaluations during training: accuracy and macro-F1 from
    ``metrics.classification_report``, the report every arm gets, on its cheap path
    (scikit-learn, no ``evaluate``)."""
    import numpy as np

    from bertui.core.metrics import classification_report

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    logits = np.asarray(logits)
    names = [str(i) for i in range(logits.shape[-1])]
    report = classification_report(
        np.asarray(labels), logits.argmax(-1), names, use_evaluate=False
    )
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def make_trainer(
    model: Any,
    args: Any,
    train: Encoded,
    evaluation: Encoded,
    tokenizer: Any,
    callbacks: list[Any],
    pad_multiple: int | None,
    pad_id: int,
) -> Any:
    """The Trainer of a run (a ``TimedTrainer``: it keeps its evaluation and checkpoint time
    apart), with bertui's datasets, dynamic padding and compute_metrics."""
    from bertui.core.trainer_hooks import TimedTrainer

    return TimedTrainer(
        model=model,
        args=args,
        train_dataset=TorchDataset(train),
        eval_dataset=TorchDataset(evaluation),
        data_collator=PadCollator(pad_id, pad_multiple),
        processing_class=tokenizer,
        compute_metrics=accuracy_f1,
        callbacks=callbacks,
    )
