"""What bertui hangs on the transformers ``Trainer``: a Trainer that times its pauses, the
callback that turns its progress into bertui events, and the one that keeps a resumed run's
batch order.

This module imports transformers at import: the engine imports it lazily, once a run starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from bertui.core.distributed import any_rank

EPOCH_RNG_FILE = "bertui_epoch_rng.safetensors"


def at_epoch_end(state: Any) -> bool:
    """Whether a TrainerState stands at an epoch's end (its epoch count is whole)."""
    return state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-6


class TimedTrainer(Trainer):
    """A Trainer that keeps the time spent evaluating and checkpointing, so that training
    throughput counts training alone.

    With ``replay_evaluations`` the evaluations during training (after each epoch) are not
    run: their data loader is only drawn from, which takes from torch's generator exactly what
    the evaluation would have taken (each pass seeds its loader; a length-grouped eval sampler
    draws its order), so the training that follows, and the model it ends with, are those of
    a run that evaluates (the tests check it to the last bit). Evaluations outside training
    (``predict``, the final report) run as usual."""

    paused_seconds = 0.0
    replay_evaluations = False

    @contextmanager
    def _paused(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.paused_seconds += time.perf_counter() - t0

    def evaluate(self, *a: Any, **k: Any) -> Any:
        with self._paused():
            if self.replay_evaluations and self.is_in_train:
                for _ in self.get_eval_dataloader(k.get("eval_dataset")):
                    pass
                return {}
            return super().evaluate(*a, **k)

    def _save_checkpoint(self, *a: Any, **k: Any) -> Any:
        with self._paused():
            return super()._save_checkpoint(*a, **k)


# --- the batch order of a resumed epoch -------------------------------------------------------


def _capture_rng() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(list(cuda))
        except (RuntimeError, IndexError):  # saved on more GPUs than this machine has
            pass


class EpochOrder(TrainerCallback):
    """Gives a resumed run the batch order of the run it continues.

    The Trainer's samplers (random and length-grouped) draw each epoch's order from torch's
    global generator when the epoch starts. On resume the Trainer skips the batches already
    done, and only then restores the checkpoint's generator state; so the order of the
    resumed epoch came from the resumed process's own history (no baseline measurement, no
    epochs before it): some rows were trained twice and others never. This records the
    generator state at each epoch's start, stores it with every checkpoint, and on resume
    (``resume_from``) puts it back at the resumed epoch's start. An uninterrupted run draws
    exactly as a plain Trainer does.
    """

    def __init__(self) -> None:
        self.resume_from: Path | None = None
        self.epoch_start: dict[str, Any] | None = None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.resume_from is not None:
            checkpoint, self.resume_from = Path(self.resume_from), None  # this epoch only
            try:
                from safetensors.torch import load_file

                _restore_rng(load_file(str(checkpoint / EPOCH_RNG_FILE)))
            except Exception:  # noqa: BLE001 - no file (an older checkpoint) or a torn one
                pass  # the Trainer's own order, as before
        self.epoch_start = _capture_rng()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # The state a resume from this checkpoint starts its epoch with: mid-epoch, this
        # epoch's start; at an epoch's end (after its evaluation), the state now, which is
        # where the next epoch starts.
        rng = _capture_rng() if at_epoch_end(state) else self.epoch_start
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        # Under torchrun the world's process zero writes it (the ranks drew alike: one seed).
        if rng is not None and folder.is_dir() and state.is_world_process_zero:
            from safetensors.torch import save_file

            tmp = folder / f".{EPOCH_RNG_FILE}.tmp"
            save_file(rng, str(tmp))
            os.replace(tmp, folder / EPOCH_RNG_FILE)


# --- events -----------------------------------------------------------------------------------


class EventsCallback(TrainerCallback):
    """Turns the Trainer's progress into bertui events.

    ``live`` is shared with the worker (step, total steps, samples/s) for its heartbeat; its
    step is the Trainer's at every step's end. ``ctl`` is the run's control (``stop_requested``
    ends training with a checkpoint); where it has an ``at_step(step, saved=...)`` hook, that is
    called at every step's end (``saved=False``, before the stop is looked at) and after every
    checkpoint (``saved=True``).
    """

    def __init__(
        self,
        emit: Callable[..., None],
        live: dict[str, Any],
        ctl: Any,
        *,
        samples_per_step: int,
        tokens_per_sample: float,
        checkpoint_seconds: float,
    ) -> None:
        self.emit, self.live, self.ctl = emit, live, ctl
        self.at_step: Callable[..., None] | None = getattr(ctl, "at_step", None)
        self.samples_per_step = samples_per_step
        self.tokens_per_sample = tokens_per_sample
        self.checkpoint_seconds = checkpoint_seconds
        self.trainer: Any = None  # set once the Trainer exists (for its paused seconds)
        self.t_start = self.last_progress = self.last_save = 0.0
        self.step_start = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.t_start = self.last_save = time.perf_counter()
        self.step_start = state.global_step
        self.live.update(step=state.global_step, total_steps=state.max_steps)
        self.emit("phase", state.global_step, name="training", total_steps=state.max_steps)

    def _progress(self, state: Any, now: float) -> None:
        paused = getattr(self.trainer, "paused_seconds", 0.0)
        elapsed = max(1e-9, now - self.t_start - paused)
        done = state.global_step - self.step_start
        sps = done * self.samples_per_step / elapsed
        eta = max(0, state.max_steps - state.global_step) * elapsed / done if done else None
        self.live.update(total_steps=state.max_steps, samples_per_s=round(sps, 2), eta_s=eta)
        self.emit(
            "progress",
            state.global_step,
            total_steps=state.max_steps,
            epoch=state.epoch,
            samples_per_s=round(sps, 2),
            tokens_per_s=round(sps * self.tokens_per_sample, 1),
            eta_s=None if eta is None else round(eta, 1),
            elapsed_s=round(now - self.t_start, 1),
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        now = time.perf_counter()
        self.live["step"] = state.global_step
        if now - self.last_progress >= 1.0 or state.global_step == state.max_steps:
            self.last_progress = now
            self._progress(state, now)
        if self.at_step is not None:
            self.at_step(state.global_step, saved=False)
        # Under torchrun the stop is the ranks' common decision (an all-reduced flag, every
        # step): a cancel that reached one rank stops them all at this step, where they save
        # the checkpoint together (a flag on one rank alone would leave the others waiting).
        # So is a checkpoint that is due by the clock, which each rank reads for itself.
        due = bool(self.checkpoint_seconds) and now - self.last_save >= self.checkpoint_seconds
        if args.world_size > 1:
            stop, due = any_rank(self.ctl.stop_requested, due)
            self.ctl.stop_requested = self.ctl.stop_requested or stop
        if self.ctl.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        elif due:
            control.should_save = True
        return control

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # A cancel ends the epoch early; the Trainer would then evaluate (for the epoch
        # strategy) and save again. That evaluation draws from torch's generator (each
        # DataLoader pass takes a seed), so the checkpoint would hold a generator state the
        # uninterrupted run never had, and the resumed run's dropout would differ. The
        # checkpoint saved at the step's end is the one to keep.
        if self.ctl.stop_requested and not at_epoch_end(state):
            control.should_evaluate = False
            control.should_save = False
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last_save = time.perf_counter()
        self.emit(
            "checkpoint",
            state.global_step,
            path=os.path.join(args.output_dir, f"checkpoint-{state.global_step}"),
        )
        if self.at_step is not None:
            self.at_step(state.global_step, saved=True)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "eval_loss" in logs:
            self.emit(
                "eval",
                state.global_step,
                epoch=logs.get("epoch", state.epoch),
                eval_loss=logs.get("eval_loss"),
                accuracy=logs.get("eval_accuracy"),
                macro_f1=logs.get("eval_macro_f1"),
            )
        elif "loss" in logs:
            self.emit(
                "train",
                state.global_step,
                loss=logs.get("loss"),
                learning_rate=logs.get("learning_rate"),
                epoch=logs.get("epoch", state.epoch),
                grad_norm=logs.get("grad_norm"),
            )
