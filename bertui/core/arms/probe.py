"""The ``probe`` arm: what the pre-trained features alone are worth.

The frozen encoder's mean-pooled last hidden states, a scikit-learn logistic regression on
top. It keeps the regression as plain arrays (``W``: K×H, ``b``: K) in ``probe.safetensors``,
with the pooling in its metadata, so ``bertui predict`` reads it with no pickle.
"""

from __future__ import annotations

import time
from typing import Any

from bertui.core.arms.base import Arm
from bertui.core.predictions import Prediction
from bertui.core.runs import PROBE_FILE

NOTE = "frozen encoder, mean-pooled features, logistic regression"


class Probe(Arm):
    name = "probe"
    title = "linear probe"
    keeps = (PROBE_FILE,)

    def prepare(self) -> None:
        super().prepare()
        self.t0 = time.perf_counter()
        self.weights: dict[str, Any] = {}
        self.eval_features: Any = None
        self.train_seconds = 0.0

    def train(self) -> bool:
        from bertui.core.shared import probe_features
        from bertui.core.training import batched_forward, fit_probe

        ctx = self.ctx
        t0 = time.perf_counter()

        def forward(split: Any) -> Any:
            return batched_forward(
                ctx.model, split, ctx.pad_id, ctx.eval_batch_size,
                features=True, check=ctx.ctl.check_cancel, device=ctx.baseline_device(),
            )[1]

        # In a study, the features of rows an earlier run computed are looked up (shared.py).
        self.eval_features, train_features = probe_features(ctx, forward)
        self.weights = fit_probe(train_features, ctx.train.labels, len(ctx.labels), ctx.hyper.seed)
        self.train_seconds = time.perf_counter() - t0
        return True

    def predict(self) -> Prediction:
        from bertui.core.training import probe_probs

        return Prediction.of_probs(probe_probs(self.weights, self.eval_features))

    def fields(self) -> dict[str, Any]:
        device = self.ctx.baseline_device()
        return {"note": NOTE, "seconds": round(time.perf_counter() - self.t0, 2),
                "precision": device.reason or device.precision}

    def cost(self, seconds: float) -> dict[str, Any]:
        samples = len(self.ctx.train) / max(1e-9, self.train_seconds)
        return {**super().cost(seconds), "train_samples_per_s": round(samples, 2)}

    def save(self, prediction: Prediction) -> None:
        import numpy as np
        import torch
        from safetensors.torch import save_file

        save_file(
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.weights.items()},
            str(self.ctx.run.path / PROBE_FILE),
            metadata={"pooling": "mean"},
        )
