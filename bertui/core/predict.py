"""Classify texts with the models a run's arms keep: pre-trained, linear probe, fine-tuned.

Each model is loaded from what its arm keeps on disk (``bertui.core.arms``), for runs made
before arms existed too: the fine-tuned one from ``model/``; the pre-trained one rebuilt exactly
as it was measured, the base encoder from the run's model spec plus the seeded head saved in
``pretrained_head.safetensors``; the probe's regression from ``probe.safetensors``. The
pre-trained model and the probe share one forward pass (the probe reads its mean-pooled
features). The scratch and tapt arms' classifiers are ``save_pretrained`` folders in
``arms/<name>/``. SetFit's tuned sentence encoder and its head come from ``arms/setfit/``
(``bertui.core.arms.setfit.load_setfit``; fp32). A run whose config left an arm out has no model
for it, and it is not shown.

Precision: where the run's precision is ``auto`` or ``bf16`` and the CPU computes bf16
natively (``bertui.core.cpu``), each model runs as a bf16 copy (weights and activations in bf16:
1.4-2x faster on one sentence), but only where its class probabilities (and the probe's, on its
features) on ``PRECISION_TEXTS`` are within ``BF16_TOLERANCE`` of the fp32 model's; a model that
differs more stays fp32. ``precisions`` says which each model got.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bertui.core.arms import ARMS
from bertui.core.arms.retrained import Retrained
from bertui.core.errors import BadInput
from bertui.core.runs import HEAD_FILE, PROBE_FILE, Run
from bertui.core.schema import from_config
from bertui.core.training import LOW_PRECISION_TOLERANCE

MODEL_NAMES = tuple(ARMS)  # the order the models are shown in
# The arms whose classifier is a save_pretrained folder of their own (arms/<name>/).
OWN_MODEL_ARMS = tuple(name for name, arm in ARMS.items() if issubclass(arm, Retrained))


class RunPredictor:
    """Load a run's models once (``load()``, slow: call it off the UI thread), then
    ``predict(texts)`` in batches."""

    def __init__(self, run: Run | Path | str, max_length: int | None = None) -> None:
        self.run = run if isinstance(run, Run) else Run.load(Path(run))
        self.max_length = max_length or from_config(self.run.config).max_length
        self.base: Any = None
        self.finetuned: Any = None
        self.probe: dict[str, Any] | None = None
        self.setfit: Any = None  # arms/setfit/: SetFit's sentence encoder and head
        self.own: dict[str, Any] = {}  # arms/<name>/: the scratch and tapt arms' classifiers
        self.tokenizer: Any = None
        self.labels: list[str] = []
        self._executor: Any = None
        self._fast: dict[str, Any] = {}  # traced forwards for one text (see _traced_forward)
        self.precisions: dict[str, str] = {}  # model name → "bf16" | "fp32" (and why)

    @property
    def model_names(self) -> list[str]:
        names = []
        if self.base is not None:
            names.append("pretrained")
        if self.probe is not None:
            names.append("probe")
        if self.finetuned is not None:
            names.append("finetuned")
        names.extend(self.own)
        if self.setfit is not None:
            names.append("setfit")
        return names

    def load(self) -> RunPredictor:
        import torch
        from safetensors.numpy import load_file as load_numpy
        from safetensors.torch import load_file

        from bertui.core import models

        torch.set_grad_enabled(False)
        # The fine-tuned model runs beside the pre-trained one (two threads, see predict):
        # split the cores between them rather than oversubscribe.
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
        run = self.run.refresh()
        options = from_config(run.config)
        trust, allow_pickle = options.trust_remote_code, options.allow_pickle
        id2label = {int(k): v for k, v in run.config.get("labels", {}).get("id2label", {}).items()}
        if not id2label:
            raise BadInput(f"run {run.id} has no label map in its config.toml")
        self.labels = [id2label[i] for i in sorted(id2label)]
        if (run.model_dir / "config.json").exists():
            self.finetuned = models.load_classifier(run.model_dir, trust_remote_code=trust).eval()
            self.tokenizer = models.load_tokenizer(run.model_dir, trust_remote_code=trust)
        head_path = run.path / HEAD_FILE
        if head_path.exists():
            source = models.resolve_model(
                options.model,
                allow_pickle=allow_pickle,
                trust_remote_code=trust,
                download=False,
            )
            if source.path is None:
                raise BadInput(f"the base model {source.spec} is not on this machine")
            base = models.load_classifier(
                source.path, id2label=id2label, allow_pickle=allow_pickle, trust_remote_code=trust
            )
            base.load_state_dict(load_file(str(head_path)), strict=False)
            self.base = base.eval()
            if self.tokenizer is None:
                self.tokenizer = models.load_tokenizer(source.path, trust_remote_code=trust)
            probe_path = run.path / PROBE_FILE
            if probe_path.exists():
                self.probe = load_numpy(str(probe_path))
        for name in OWN_MODEL_ARMS:
            if (run.arms_dir / name / "config.json").exists():
                self.own[name] = models.load_classifier(
                    run.arms_dir / name, trust_remote_code=trust).eval()
        from bertui.core.arms.setfit import load_setfit

        self.setfit = load_setfit(run.arms_dir / "setfit", max_length=self.max_length,
                                  trust_remote_code=trust)
        if self.tokenizer is None:
            raise BadInput(f"run {run.id} has no model to predict with yet")
        self._choose_precision(run.config)
        self._fast = {
            name: _traced_forward(model, self.tokenizer, features=name == "base")
            for name, model in (("base", self.base), ("finetuned", self.finetuned),
                                *self.own.items())
            if model is not None
        }
        return self

    def _choose_precision(self, config: dict[str, Any]) -> None:
        """Each model as a bf16 copy where the run's choice is bf16 and the copy agrees with
        fp32 (see the module docstring); ``precisions`` records the outcome."""
        wanted = pane_precision(config)
        models = (("pretrained", "base", self.probe), ("finetuned", "finetuned", None))
        for name, attr, probe in models:
            model = getattr(self, attr)
            if model is None:
                continue
            if wanted != "bf16":
                self.precisions[name] = "fp32"
                continue
            copy, diff = bf16_copy(model, self.tokenizer, probe)
            if copy is None:
                self.precisions[name] = f"fp32 (bf16 differed by {diff:.3f})"
            else:
                setattr(self, attr, copy)
                self.precisions[name] = "bf16"

    def _pool(self):
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(1, thread_name_prefix="bertui-predict")
        return self._executor

    def predict(self, texts: list[str]) -> list[dict[str, dict[str, Any]]]:
        """For each text: {model name: {"label": str, "probs": {label: p}}}."""
        from bertui.core.training import Encoded, batched_forward, probe_probs

        texts = [t if isinstance(t, str) else str(t) for t in texts]
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        encoded = Encoded(enc["input_ids"], [0] * len(texts))
        pad = self.tokenizer.pad_token_id or 0

        def forward(name: str, model: Any, features: bool = False) -> tuple[Any, Any]:
            fast = self._fast.get(name)
            if fast is not None and len(texts) == 1:  # the pane: one text, nothing padded
                return fast(encoded.input_ids[0])
            return batched_forward(model, encoded, pad, features=features)

        out: dict[str, Any] = {}
        pending = None
        if self.finetuned is not None and self.base is not None:
            # Two forward passes of a small model are mostly Python and kernel-launch overhead:
            # running them side by side (torch releases the GIL in its kernels) nearly halves
            # the pane's latency.
            pending = self._pool().submit(forward, "finetuned", self.finetuned)
        if self.base is not None:
            probs, feats = forward("base", self.base, features=self.probe is not None)
            out["pretrained"] = probs
            if self.probe is not None:
                out["probe"] = probe_probs(self.probe, feats)
        if pending is not None:
            out["finetuned"] = pending.result()[0]
        elif self.finetuned is not None:
            out["finetuned"] = forward("finetuned", self.finetuned)[0]
        for name, model in self.own.items():
            out[name] = forward(name, model)[0]
        if self.setfit is not None:
            out["setfit"] = self.setfit.predict_proba(texts)
        results = []
        for i in range(len(texts)):
            row = {}
            for name in MODEL_NAMES:
                if name in out:
                    p = out[name][i]
                    row[name] = {
                        "label": self.labels[int(p.argmax())],
                        "probs": {lab: round(float(p[j]), 4) for j, lab in enumerate(self.labels)},
                    }
            results.append(row)
        return results


CHECK_TEXTS = ("A short one.", "A somewhat longer sentence, to check that another length works.")
# What a bf16 copy of a model is checked on: lengths from 1 to ~60 tokens, plain and odd texts.
PRECISION_TEXTS = (
    *CHECK_TEXTS,
    "ok",
    "Not what I expected at all, sadly.",
    "What is the capital of Australia?",
    "I loved the first half of it, but the ending made no sense and I left early.",
    "The delivery was late, the box was crushed, yet everything inside worked perfectly well and "
    "the support team replied within an hour, which I did not expect from such a small shop.",
    "!!! ??? 12345 :-)",
)
# The most a class probability of a bf16 copy may differ from the fp32 model's on those texts:
# the runs' own (a label can then only change where fp32's top two are within 0.02).
BF16_TOLERANCE = LOW_PRECISION_TOLERANCE


def pane_precision(config: dict[str, Any]) -> str:
    """"bf16" where the run's precision is auto or bf16 and this CPU computes bf16 natively,
    else "fp32" (the pane and ``bertui predict`` run on the CPU)."""
    from bertui.core.cpu import cpu_precision

    asked = str(config.get("train", {}).get("precision", "auto"))
    return "bf16" if asked in ("auto", "bf16") and cpu_precision()[0] == "bf16" else "fp32"


def bf16_copy(model: Any, tokenizer: Any, probe: dict[str, Any] | None = None) -> tuple[Any, float]:
    """(a bf16 copy of ``model``, the largest class-probability difference from it) when that
    difference on ``PRECISION_TEXTS`` (for the model, and for ``probe`` on its pooled features)
    is at most ``BF16_TOLERANCE``; (None, the difference) otherwise."""
    import copy

    import numpy as np
    import torch

    from bertui.core.training import Encoded, batched_forward, probe_probs

    ids = tokenizer(list(PRECISION_TEXTS), truncation=True, max_length=512)["input_ids"]
    encoded, pad = Encoded(ids, [0] * len(ids)), tokenizer.pad_token_id or 0
    features = probe is not None
    want, want_x = batched_forward(model, encoded, pad, features=features)
    fast = copy.deepcopy(model).to(torch.bfloat16).eval()
    got, got_x = batched_forward(fast, encoded, pad, features=features)
    diff = float(np.abs(want - got).max())
    if probe is not None:
        probe_diff = np.abs(probe_probs(probe, want_x) - probe_probs(probe, got_x)).max()
        diff = max(diff, float(probe_diff))
    return (fast if diff <= BF16_TOLERANCE else None), diff


def _traced_forward(model: Any, tokenizer: Any, *, features: bool) -> Any:
    """``f(input_ids) -> (probs, pooled features or None)`` for one unpadded text, through a
    TorchScript trace of ``model``: a small BERT's forward on a sentence is mostly Python
    overhead, which the trace removes (MiniLM: ~1.5× faster here). The trace is checked against
    the eager forward on two texts of different lengths; None (use the eager forward) when it
    cannot be traced or disagrees."""
    import warnings

    import torch

    class Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any) -> Any:
            out = self.model(input_ids=input_ids, output_hidden_states=features, return_dict=True)
            return (out.logits, out.hidden_states[-1]) if features else (out.logits,)

    device = next(model.parameters()).device
    checks = [torch.tensor([tokenizer(t)["input_ids"]], device=device) for t in CHECK_TEXTS]
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            eager = Forward().eval()
            traced = torch.jit.freeze(torch.jit.trace(eager, (checks[0],), check_trace=False))
            for ids in checks:
                for want, got in zip(eager(ids), traced(ids), strict=True):
                    if not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
                        return None
    except Exception:  # a model TorchScript cannot trace: the eager forward serves
        return None

    def run(input_ids: list[int]) -> tuple[Any, Any]:
        with torch.no_grad():
            outs = traced(torch.tensor([input_ids], device=device))
        probs = torch.softmax(outs[0].float(), dim=-1).cpu().numpy()
        pooled = outs[1].float().mean(1).cpu().numpy() if features else None
        return probs, pooled

    return run
