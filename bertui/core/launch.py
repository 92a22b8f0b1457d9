"""Client side of a run: check the options, write config.toml, start / resume / cancel workers.

Used by both the CLI and the TUI, so that a run started from either is the same run.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertui.core.errors import BadInput
from bertui.core.runs import (
    RESUMABLE_STATES,
    Run,
    RunError,
    atomic_write_json,
    claim_run,
    create_run,
)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class RunOptions:
    """Everything a user chooses for a run (the CLI flags and the New run form)."""

    model: str = "default"
    dataset: str = "demo"
    eval_dataset: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    split: str | None = None
    eval_split: str | None = None
    holdout: float = 0.2
    epochs: float = 3.0
    learning_rate: float | None = None  # None: chosen by model size
    batch_size: int | None = None  # None: 16 on CPU, 64 on GPU
    max_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    seed: int = 0
    precision: str = "auto"
    probe: bool = True
    name: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    auto_batch_size: bool = False
    checkpoint_minutes: float = 2.0
    group_by_length: bool = True
    compact_vocab: bool = True
    fast_dropout: bool = False
    torch_compile: bool = False
    monitor_events: bool = True
    monitor_telemetry: bool = True


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def validate_options(o: RunOptions) -> None:
    """Cheap range checks (no model or data is read). Raises BadInput naming the field."""
    if not _finite(o.epochs) or not 0 < o.epochs <= 1000:
        raise BadInput(f"--epochs must be > 0 and ≤ 1000 (got {o.epochs})", field="epochs")
    if o.learning_rate is not None and (
        not _finite(o.learning_rate) or not 0 < o.learning_rate <= 1
    ):
        raise BadInput(f"--lr must be > 0 and ≤ 1 (got {o.learning_rate})", field="learning_rate")
    if o.batch_size is not None and not 1 <= o.batch_size <= 8192:
        raise BadInput(
            f"--batch-size must be between 1 and 8192 (got {o.batch_size})", field="batch_size"
        )
    if not 8 <= o.max_length <= 8192:
        raise BadInput(
            f"--max-length must be between 8 and 8192 tokens (got {o.max_length})",
            field="max_length",
        )
    for value, flag, field in (
        (o.max_train_samples, "--max-train-samples", "max_train_samples"),
        (o.max_eval_samples, "--max-eval-samples", "max_eval_samples"),
    ):
        if value is not None and value <= 0:
            raise BadInput(f"{flag} must be a positive number of rows (got {value})", field=field)
    if o.seed < 0:
        raise BadInput(f"--seed must be ≥ 0 (got {o.seed})", field="seed")
    if o.precision not in PRECISIONS:
        raise BadInput(
            f"--precision must be one of {', '.join(PRECISIONS)} (got {o.precision})",
            field="precision",
        )
    if not 0 < o.holdout < 1:
        raise BadInput(f"--holdout must be between 0 and 1 (got {o.holdout})", field="holdout")
    if not _finite(o.checkpoint_minutes) or o.checkpoint_minutes < 0:
        raise BadInput("--checkpoint-minutes must be ≥ 0", field="checkpoint_minutes")
    if o.name is not None and (len(o.name) > 100 or "/" in o.name or "\n" in o.name):
        raise BadInput("--name must be at most 100 characters, without '/'", field="name")


def build_config(o: RunOptions) -> dict[str, Any]:
    """Check the options, the model and the data (reads them), and return config.toml's
    content. Raises BadInput with a one-line reason."""
    from bertui.core import models
    from bertui.core.engine import prepare_data

    validate_options(o)
    source = models.resolve_model(
        o.model, allow_pickle=o.allow_pickle, trust_remote_code=o.trust_remote_code, download=False
    )
    max_positions = None
    if source.path is not None:
        max_positions = models.read_config(source.path).get("max_position_embeddings")
    if max_positions and o.max_length > max_positions:
        raise BadInput(
            f"--max-length {o.max_length} is longer than the model allows ({max_positions})",
            field="max_length",
        )
    config: dict[str, Any] = {
        "name": o.name,
        "created": time.time(),
        "model": {
            "spec": o.model,
            "allow_pickle": o.allow_pickle,
            "trust_remote_code": o.trust_remote_code,
        },
        "data": {
            "train": _abs_if_path(o.dataset),
            "eval": _abs_if_path(o.eval_dataset),
            "text_column": o.text_column,
            "label_column": o.label_column,
            "split": o.split,
            "eval_split": o.eval_split,
            "holdout": o.holdout,
            "max_train_samples": o.max_train_samples,
            "max_eval_samples": o.max_eval_samples,
        },
        "train": {
            "epochs": o.epochs,
            "learning_rate": o.learning_rate,
            "batch_size": o.batch_size,
            "max_length": o.max_length,
            "seed": o.seed,
            "precision": o.precision,
            "probe": o.probe,
            "auto_batch_size": o.auto_batch_size,
            "checkpoint_minutes": o.checkpoint_minutes,
            "group_by_length": o.group_by_length,
            "compact_vocab": o.compact_vocab,
            "fast_dropout": o.fast_dropout,
            "torch_compile": o.torch_compile,
        },
        "monitor": {"events": o.monitor_events, "telemetry": o.monitor_telemetry},
    }
    if source.path is not None and o.model != models.DEFAULT_SPEC and source.origin == "local":
        config["model"]["spec"] = str(source.path)
    prepared = prepare_data(config)
    config["data"]["text_column"] = prepared.text_column
    config["data"]["label_column"] = prepared.label_column
    config["labels"] = {"id2label": {str(k): v for k, v in prepared.id2label.items()}}
    config["data"]["train_rows"] = len(prepared.train)
    config["data"]["eval_rows"] = len(prepared.eval)
    config["data"]["eval_source"] = prepared.eval_source
    if not o.eval_dataset and not o.eval_split and prepared.eval_source.startswith("split "):
        # The split found now is the one the worker reads: it does not look again (a hub
        # hiccup then would have it hold out part of train instead).
        config["data"]["eval_split"] = prepared.eval_source.removeprefix("split ")
    return config


def _abs_if_path(spec: str | None) -> str | None:
    """Local files are stored as absolute paths: the worker runs in the run directory."""
    if not spec or spec == "demo" or spec.startswith("@"):
        return spec
    from bertui.core.data import is_local_spec

    if is_local_spec(spec):
        return str(Path(spec).expanduser().resolve())
    return spec


def start_run(config: dict[str, Any], home: Path | None = None) -> Run:
    """Create the run directory and start its detached worker."""
    from bertui.worker import spawn

    run = create_run(config, home)
    spawn(run.path)
    return run.refresh()


def resume_run(run: Run) -> Run:
    """Continue a cancelled, lost or failed run from its last checkpoint, in the same folder."""
    from bertui.worker import spawn

    _check_resumable(run)
    # Claim the run: under its worker lock (no live worker, however stale its heartbeat looks)
    # and this process's own lock (a double key press), check again and mark it queued, so
    # that a second client reads "queued" and is refused. The worker owns status.json from
    # its first heartbeat on.
    with claim_run(run, "before resuming"):
        _check_resumable(run)
        status = {
            **run.status,
            "state": "queued",
            "error": None,
            "ended": None,
            "pid": None,
            "heartbeat": time.time(),
        }
        atomic_write_json(run.status_path, status)
    spawn(run.path, resume=True)
    return run.refresh()


def _check_resumable(run: Run) -> None:
    if not run.config_path.exists():
        raise RunError(f"run {run.id} no longer exists")
    state = run.refresh().state
    if state == "finished":
        raise RunError(f"run {run.id} already finished; nothing to resume")
    if state not in RESUMABLE_STATES:
        raise RunError(f"run {run.id} is {state}; only cancelled, lost or failed runs resume")


def cancel_run(run: Run, wait: float = 0.0) -> bool:
    """Ask the worker to stop at its next step (SIGTERM). With ``wait``, wait that many seconds
    for it to record the end. Returns True if the run is no longer active."""
    run.refresh()
    if not run.is_active:
        raise RunError(f"run {run.id} is not running (it is {run.state})")
    if not run.on_this_host:  # a shared runs folder: that pid is some other process here
        raise RunError(f"run {run.id} runs on {run.status.get('host')}; cancel it there")
    pid = run.status.get("pid")
    if pid:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + wait
    while time.time() < deadline:
        if not run.refresh().is_active:
            return True
        time.sleep(0.2)
    return not run.refresh().is_active
