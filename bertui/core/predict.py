"""Classify texts with the models a run's arms keep: pre-trained, linear probe, fine-tuned.

Each model is loaded from what its arm keeps on disk (``bertui.core.arms``), for runs made
before arms existed too: the fine-tuned one from ``model/``; the pre-trained one rebuilt exactly
as it was measured, the base encoder from the run's model spec plus the seeded head saved in
``pretrained_head.safetensors``; the probe's regression from ``probe.safetensors``. The
pre-trained model and the probe share one forward pass (the probe reads its mean-pooled
features). A run whose config left an arm out has no model for it, and it is not shown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bertui.core.arms import ARMS
from bertui.core.errors import BadInput
from bertui.core.runs import HEAD_FILE, PROBE_FILE, Run

MODEL_NAMES = tuple(ARMS)  # the order the models are shown in


class RunPredictor:
    """Load a run's models once (``load()``, slow: call it off the UI thread), then
    ``predict(texts)`` in batches."""

    def __init__(self, run: Run | Path | str, max_length: int | None = None) -> None:
        self.run = run if isinstance(run, Run) else Run.load(Path(run))
        self.max_length = max_length or int(self.run.config.get("train", {}).get("max_length", 128))
        self.base: Any = None
        self.finetuned: Any = None
        self.probe: dict[str, Any] | None = None
        self.tokenizer: Any = None
        self.labels: list[str] = []
        self._executor: Any = None
        self._fast: dict[str, Any] = {}  # traced forwards for one text (see _traced_forward)

    @property
    def model_names(self) -> list[str]:
        names = []
        if self.base is not None:
            names.append("pretrained")
        if self.probe is not None:
            names.append("probe")
        if self.finetuned is not None:
            names.append("finetuned")
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
        mcfg = run.config.get("model", {})
        trust = bool(mcfg.get("trust_remote_code", False))
        allow_pickle = bool(mcfg.get("allow_pickle", False))
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
                mcfg.get("spec", "default"),
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
        if self.tokenizer is None:
            raise BadInput(f"run {run.id} has no model to predict with yet")
        self._fast = {
            name: _traced_forward(model, self.tokenizer, features=name == "base")
            for name, model in (("base", self.base), ("finetuned", self.finetuned))
            if model is not None
        }
        return self

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
