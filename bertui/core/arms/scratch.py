"""The ``scratch`` arm: the run's architecture and tokenizer from random weights, trained with
the fine-tune's recipe (same epochs, learning rate by size, batch and schedule).

Its gap to ``finetuned`` is what pre-training buys on this data: "custom training" in the
literal sense. The weights are drawn from the model's own initialiser (``from_config``), seeded
by the run's seed; nothing of the checkpoint's weights is read. Its model and tokenizer are kept
in ``arms/scratch/`` (see ``bertui.core.arms.retrained``).
"""

from __future__ import annotations

from typing import Any

from bertui.core.arms.retrained import Retrained
from bertui.core.runs import ARMS_DIR

NOTE = "trained from scratch (no pre-training)"


class Scratch(Retrained):
    name = "scratch"
    title = "from scratch"
    keeps = (f"{ARMS_DIR}/scratch",)

    def build_model(self) -> Any:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification

        from bertui.core.models import quiet_transformers

        ctx = self.ctx
        assert ctx.source.path is not None
        quiet_transformers()
        trust = ctx.options.trust_remote_code
        config = AutoConfig.from_pretrained(
            str(ctx.source.path), num_labels=len(ctx.id2label), trust_remote_code=trust
        )
        torch.manual_seed(ctx.hyper.seed)
        model = AutoModelForSequenceClassification.from_config(
            config, trust_remote_code=trust, dtype=torch.float32
        )
        self.note = NOTE
        return model
