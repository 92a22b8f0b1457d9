"""Dropout whose random numbers are cheap on a CPU ("fast dropout").

On a CPU, torch draws a dropout mask with ``bernoulli_``: one Mersenne-Twister draw and a
double comparison per element, on one thread. On MiniLM with short sentences a step with
every dropout off runs ~15 % faster, and the attention dropout also keeps SDPA off its fused
kernel. Fast dropout draws 64 random bits per four elements (``random_`` on int64: one draw,
no floating point) and keeps an element when its 15-bit share is at least
``round(p · 2¹⁵)``: a drop probability within 2⁻¹⁶ of ``p``, the same ``1/(1−p)`` scaling,
the same seeded generator (runs stay reproducible). Only the random stream differs from
torch's dropout, so results match it in distribution, not bit for bit: hence opt-in
(``--fast-dropout``); on 18 seeds of the reviews data its runs also ended slightly worse
(README, *Performance*). Drawing torch's own masks from ``random_`` (one 64-bit word per
element, its low 53 bits against ``(1−p)·2⁵³``, which reproduces ``bernoulli_`` exactly)
saves nothing: the generator is the cost.

``FastDropout.install(model)`` swaps every ``nn.Dropout`` for the fast one and, where the
model dispatches attention through transformers' attention interface with SDPA, routes it to
:func:`attention`: SDPA as before when nothing is dropped (evaluation), and the attention
arithmetic with fast dropout on the probabilities in training. ``undo()`` puts it all back.
On a GPU nothing is swapped: torch's fused dropout kernels are already fast there.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

ATTENTION = "bertui_sdpa"
BITS = 15
_ONE = 1 << BITS


def fast_dropout(x: Any, p: float, training: bool = True) -> Any:
    """``x`` with each element zeroed with probability ``p`` (to 2⁻¹⁶) and the rest scaled
    by ``1/(1−p)``; differentiable in ``x``."""
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
    lanes = bits.view(torch.int16)[:n].view(x.shape)
    # 1.0 where kept, straight into x's dtype (a bool mask would cost a slow cast), × 1/(1−p)
    mask = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    torch.ge(torch.bitwise_and(lanes, _ONE - 1), round(p * _ONE), out=mask)
    return x * mask.mul_(1.0 / (1.0 - p))


class FastDropoutModule(torch.nn.Dropout):
    """``nn.Dropout`` drawing its mask with :func:`fast_dropout` (on CPU)."""

    def forward(self, x: Any) -> Any:
        if self.inplace or x.device.type != "cpu":
            return super().forward(x)
        return fast_dropout(x, self.p, self.training)


def attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Transformers' SDPA attention, except that in training on a CPU the probabilities are
    dropped with :func:`fast_dropout` (SDPA would draw them with ``bernoulli_``)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (
        dropout <= 0.0
        or query.device.type != "cpu"
        or kwargs.get("position_bias") is not None
        or getattr(module, "num_key_value_groups", 1) > 1  # no grouped heads in BERT encoders
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


class FastDropout:
    """The swap of a model's dropout for fast dropout (``install``), and back (``undo``)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.swapped: list[tuple[Any, str, Any]] = []
        self.attention_was: str | None = None

    @classmethod
    def install(cls, model: Any) -> FastDropout:
        swap = cls(model)
        for parent in model.modules():
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.Dropout and not child.inplace:
                    replacement = FastDropoutModule(child.p)
                    replacement.train(child.training)
                    setattr(parent, name, replacement)
                    swap.swapped.append((parent, name, child))
        config = getattr(model, "config", None)
        if (
            config is not None
            and getattr(config, "_attn_implementation", None) == "sdpa"
            and _uses_attention_interface(model)
        ):
            _register()
            swap.attention_was = "sdpa"
            config._attn_implementation = ATTENTION
        return swap

    @property
    def active(self) -> bool:
        return bool(self.swapped) or self.attention_was is not None

    def describe(self) -> str:
        parts = [f"{len(self.swapped)} dropout layers"]
        if self.attention_was is not None:
            parts.append("attention probabilities")
        return " and ".join(parts)

    def undo(self) -> None:
        for parent, name, original in reversed(self.swapped):
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)
        self.swapped.clear()
        if self.attention_was is not None:
            self.model.config._attn_implementation = self.attention_was
            self.attention_was = None


def _uses_attention_interface(model: Any) -> bool:
    """True when the model's modeling code looks its attention up in transformers'
    ``ALL_ATTENTION_FUNCTIONS`` (so a registered implementation is honoured)."""
    module = sys.modules.get(type(model).__module__)
    return module is not None and hasattr(module, "ALL_ATTENTION_FUNCTIONS")
