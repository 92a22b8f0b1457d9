"""Fine-tuning with the transformers ``Trainer``, the baselines, and the events a run writes.

One run measures three models on the same eval split:

1. **pre-trained** — the encoder as loaded plus a freshly initialised, seeded classification
   head (saved to ``pretrained_head.safetensors`` so the very same model can be reloaded);
2. **linear probe** — the frozen encoder's mean-pooled features, a scikit-learn logistic
   regression on top (weights kept as plain arrays in ``probe.safetensors``);
3. **fine-tuned** — every weight trained with ``Trainer``.

The defaults are chosen to learn on small data: dynamic padding, length-grouped batches,
warmup as a fraction of the steps, a learning rate that suits the model size, eval each epoch.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertui.core.errors import BadInput

CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 64
BASE_EVAL_BATCH = 64


class Cancelled(Exception):
    """The user asked the run to stop (SIGTERM) before training began."""


@dataclass
class Hyper:
    """Hyper-parameters of a run as stored in config.toml's [train] table."""

    epochs: float = 3.0
    learning_rate: float | None = None
    batch_size: int | None = None
    max_length: int = 128
    seed: int = 0
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    probe: bool = True
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    auto_batch_size: bool = False
    checkpoint_minutes: float = 2.0
    group_by_length: bool = True
    compact_vocab: bool = True
    fast_dropout: bool = False
    torch_compile: bool = False
    eval_batch_size: int | None = None
    logging_points: int = 200

    @classmethod
    def from_config(cls, table: dict[str, Any]) -> Hyper:
        known = {k: v for k, v in table.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Device:
    kind: str  # "cuda" | "mps" | "cpu"
    name: str
    precision: str  # "bf16" | "fp16" | "fp32"
    count: int = 1
    notes: list[str] = field(default_factory=list)


def pick_device(precision: str = "auto") -> Device:
    """The accelerator and the precision to train in: bf16 where the GPU supports it (else
    fp16 with loss scaling) with TF32 matmuls; fp32 on CPU."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Device("cuda", name, precision, torch.cuda.device_count())
    if precision == "fp16":
        raise BadInput(
            "fp16 training needs a CUDA GPU; use --precision fp32 or bf16 on CPU", field="precision"
        )
    if precision == "auto":
        precision = "fp32"
    return Device("cpu", "CPU", precision, 1)


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
) -> tuple[Any, Any | None]:
    """Class probabilities (and, with ``features``, mean-pooled last hidden states) for every
    row, in the original order. Rows are batched by length so little is padded."""
    import numpy as np
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded.input_ids[i]))
    collate = PadCollator(pad_id)
    probs_out: list[Any] = [None] * len(encoded)
    feats_out: list[Any] = [None] * len(encoded)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            if check is not None:
                check()
            idx = order[start : start + batch_size]
            batch = collate([{"input_ids": encoded.input_ids[i]} for i in idx])
            batch = {k: v.to(device) for k, v in batch.items()}
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
    path on GPU (bf16/fp16, TF32, fused AdamW, pinned memory, loader workers)."""
    from transformers import TrainingArguments

    batch = hyper.batch_size or (GPU_BATCH_SIZE if device.kind == "cuda" else CPU_BATCH_SIZE)
    steps_per_epoch = max(1, math.ceil(n_train / (batch * device.count)))
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
        remove_unused_columns=False,
        save_only_model=False,
    )


def accuracy_f1(eval_pred: Any) -> dict[str, float]:
    """compute_metrics for evaluations during training (numpy only: cheap)."""
    import numpy as np

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    pred = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    f1s = []
    for c in sorted(set(labels.tolist()) | set(pred.tolist())):
        tp = int(((pred == c) & (labels == c)).sum())
        fp = int(((pred == c) & (labels != c)).sum())
        fn = int(((pred != c) & (labels == c)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float((pred == labels).mean()), "macro_f1": float(np.mean(f1s))}


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
    from transformers import Trainer

    class TimedTrainer(Trainer):
        """A Trainer that keeps the time spent evaluating and checkpointing, so that training
        throughput counts training alone."""

        paused_seconds = 0.0

        def evaluate(self, *a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return super().evaluate(*a, **k)
            finally:
                self.paused_seconds += time.perf_counter() - t0

        def _save_checkpoint(self, *a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return super()._save_checkpoint(*a, **k)
            finally:
                self.paused_seconds += time.perf_counter() - t0

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


EPOCH_RNG_FILE = "bertui_epoch_rng.safetensors"


def at_epoch_end(st: Any) -> bool:
    """Whether a TrainerState stands at an epoch's end (its epoch count is whole)."""
    return st.epoch is not None and abs(st.epoch - round(st.epoch)) < 1e-6


def make_epoch_order_callback() -> Any:
    """A TrainerCallback that gives a resumed run the batch order of the run it continues.

    The Trainer's samplers (random and length-grouped) draw each epoch's order from torch's
    global generator when the epoch starts. On resume the Trainer skips the batches already
    done, and only then restores the checkpoint's generator state; so the order of the
    resumed epoch came from the resumed process's own history (no baseline measurement, no
    epochs before it): some rows were trained twice and others never. This records the
    generator state at each epoch's start, stores it with every checkpoint, and on resume
    (``resume_from``) puts it back at the resumed epoch's start. An uninterrupted run draws
    exactly as a plain Trainer does.
    """
    import torch
    from transformers import TrainerCallback

    def capture() -> dict[str, Any]:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        return state

    def restore(state: dict[str, Any]) -> None:
        torch.set_rng_state(state["cpu"])
        cuda = state.get("cuda")
        if cuda is not None and torch.cuda.is_available():
            try:
                torch.cuda.set_rng_state_all(list(cuda))
            except (RuntimeError, IndexError):  # saved on more GPUs than this machine has
                pass

    class EpochOrder(TrainerCallback):
        def __init__(self) -> None:
            self.resume_from: Path | None = None
            self.epoch_start: dict[str, Any] | None = None

        def on_epoch_begin(self, args, st, control, **kw):
            if self.resume_from is not None:
                checkpoint, self.resume_from = Path(self.resume_from), None  # this epoch only
                try:
                    from safetensors.torch import load_file

                    restore(load_file(str(checkpoint / EPOCH_RNG_FILE)))
                except Exception:  # noqa: BLE001 - no file (an older checkpoint) or a torn one
                    pass  # the Trainer's own order, as before
            self.epoch_start = capture()

        def on_save(self, args, st, control, **kw):
            # The state a resume from this checkpoint starts its epoch with: mid-epoch, this
            # epoch's start; at an epoch's end (after its evaluation), the state now, which is
            # where the next epoch starts.
            state = capture() if at_epoch_end(st) else self.epoch_start
            folder = Path(args.output_dir) / f"checkpoint-{st.global_step}"
            if state is not None and folder.is_dir():
                from safetensors.torch import save_file

                tmp = folder / f".{EPOCH_RNG_FILE}.tmp"
                save_file(state, str(tmp))
                os.replace(tmp, folder / EPOCH_RNG_FILE)

    return EpochOrder()


def make_events_callback(
    emit: Callable[..., None],
    state: dict[str, Any],
    *,
    samples_per_step: int,
    tokens_per_sample: float,
    checkpoint_seconds: float,
    stop_requested: Callable[[], bool],
) -> Any:
    """A TrainerCallback that turns the Trainer's progress into bertui events.

    ``state`` is shared with the worker (step, total steps, samples/s) for its heartbeat.
    """
    from transformers import TrainerCallback

    class EventsCallback(TrainerCallback):
        def __init__(self) -> None:
            self.trainer: Any = None  # set by the worker once the Trainer exists
            self.t_start = 0.0
            self.step_start = 0
            self.last_progress = 0.0
            self.last_save = 0.0

        def on_train_begin(self, args, st, control, **kw):
            self.t_start = self.last_save = time.perf_counter()
            self.step_start = st.global_step
            state.update(step=st.global_step, total_steps=st.max_steps)
            emit("phase", st.global_step, name="training", total_steps=st.max_steps)

        def _progress(self, st, trainer_paused: float) -> None:
            now = time.perf_counter()
            elapsed = max(1e-9, now - self.t_start - trainer_paused)
            done = st.global_step - self.step_start
            sps = done * samples_per_step / elapsed
            remaining = max(0, st.max_steps - st.global_step)
            eta = remaining * elapsed / done if done else None
            state.update(
                step=st.global_step,
                total_steps=st.max_steps,
                samples_per_s=round(sps, 2),
                eta_s=eta,
            )
            emit(
                "progress",
                st.global_step,
                total_steps=st.max_steps,
                epoch=st.epoch,
                samples_per_s=round(sps, 2),
                tokens_per_s=round(sps * tokens_per_sample, 1),
                eta_s=None if eta is None else round(eta, 1),
                elapsed_s=round(now - self.t_start, 1),
            )

        def on_step_end(self, args, st, control, **kw):
            now = time.perf_counter()
            if now - self.last_progress >= 1.0 or st.global_step == st.max_steps:
                self.last_progress = now
                self._progress(st, getattr(self.trainer, "paused_seconds", 0.0))
            if stop_requested():
                control.should_save = True
                control.should_training_stop = True
            elif checkpoint_seconds and now - self.last_save >= checkpoint_seconds:
                control.should_save = True
            return control

        def on_epoch_end(self, args, st, control, **kw):
            # A cancel ends the epoch early; the Trainer would then evaluate (for the epoch
            # strategy) and save again. That evaluation draws from torch's generator (each
            # DataLoader pass takes a seed), so the checkpoint would hold a generator state the
            # uninterrupted run never had, and the resumed run's dropout would differ. The
            # checkpoint saved at the step's end is the one to keep.
            if stop_requested() and not at_epoch_end(st):
                control.should_evaluate = False
                control.should_save = False
            return control

        def on_save(self, args, st, control, **kw):
            self.last_save = time.perf_counter()
            emit(
                "checkpoint",
                st.global_step,
                path=os.path.join(args.output_dir, f"checkpoint-{st.global_step}"),
            )

        def on_log(self, args, st, control, logs=None, **kw):
            logs = logs or {}
            if "eval_loss" in logs:
                emit(
                    "eval",
                    st.global_step,
                    epoch=logs.get("epoch", st.epoch),
                    eval_loss=logs.get("eval_loss"),
                    accuracy=logs.get("eval_accuracy"),
                    macro_f1=logs.get("eval_macro_f1"),
                )
            elif "loss" in logs:
                emit(
                    "train",
                    st.global_step,
                    loss=logs.get("loss"),
                    learning_rate=logs.get("learning_rate"),
                    epoch=logs.get("epoch", st.epoch),
                    grad_norm=logs.get("grad_norm"),
                )

    return EventsCallback()
