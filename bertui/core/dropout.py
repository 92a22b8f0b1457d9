"""Dropout whose random numbers are cheap on a CPU: exact dropout (the default) and fast
dropout (opt-in).

**Exact dropout** draws torch's own masks, bit for bit, with ``bertui.core.mt19937``'s
vectorised Mersenne Twister: ``nn.Dropout`` becomes :class:`ExactDropoutModule` (torch's
CPU dropout arithmetic, ``x * (mask / (1 - p))``, with the mask drawn fast) and SDPA's
attention dropout in training goes to :func:`exact_attention` (torch's math SDPA, as it runs
on a CPU when dropout is on, with the same mask). Same numbers, same generator state after:
a run with it equals a run without to the last bit (the tests train both). Where the kernel
is not built, or torch draws its masks another way on this CPU (MKL on Intel), nothing is
swapped.

**Fast dropout** (``--fast-dropout``) draws other, cheaper random numbers:

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

import math
import os
import sys
from typing import Any

import torch

from bertui.core import mt19937

ATTENTION = "bertui_sdpa"
EXACT_ATTENTION = "bertui_exact_sdpa"
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


def exact_dropout(x: Any, p: float, training: bool = True) -> Any:
    """``torch.nn.functional.dropout(x, p, training)`` as torch computes it on a CPU (noise =
    ``bernoulli_(1 − p)``, divided by ``1 − p``, times ``x``), the noise drawn by
    :func:`bertui.core.mt19937.bernoulli_`: the same values, gradients and generator state."""
    if not training or p == 0.0 or x.numel() == 0:
        return x
    if not 0.0 < p < 1.0 or not mt19937.applies(x, 1.0 - p):
        return torch.nn.functional.dropout(x, p, training)
    noise = torch.empty_like(x)
    mt19937.bernoulli_(noise, 1.0 - p)
    noise.div_(1.0 - p)
    return x * noise


class ExactDropoutModule(torch.nn.Dropout):
    """``nn.Dropout`` whose mask :func:`exact_dropout` draws (the same mask, faster)."""

    def forward(self, x: Any) -> Any:
        if self.inplace:
            return super().forward(x)
        return exact_dropout(x, self.p, self.training)


def _math_sdpa(query: Any, key: Any, value: Any, mask: Any, p: float, scale: float | None) -> Any:
    """``scaled_dot_product_attention`` with dropout on a CPU, as torch runs it (its math
    path: under autocast, inputs in the autocast dtype; bf16/fp16 computed in fp32; q and k
    each scaled by √scale; a boolean mask as 0/−inf), the dropout exact."""
    if torch.is_autocast_enabled("cpu"):
        low = torch.get_autocast_dtype("cpu")
        query, key, value = (t.to(low) for t in (query, key, value))
    with torch.autocast("cpu", enabled=False):
        dtype = query.dtype
        if dtype in (torch.bfloat16, torch.float16):
            query, key, value = query.float(), key.float(), value.float()
        factor = math.sqrt(scale if scale is not None else 1.0 / math.sqrt(query.size(-1)))
        scores = torch.matmul(query * factor, key.transpose(-2, -1) * factor)
        if mask is not None:
            bias = torch.zeros_like(mask, dtype=scores.dtype)
            scores = scores + bias.masked_fill_(mask.logical_not(), -math.inf)
        probs = exact_dropout(torch.softmax(scores, dim=-1), p)
        return torch.matmul(probs, value).to(dtype)


def exact_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Transformers' SDPA attention, except that in training on a CPU (where torch's SDPA
    takes its math path) the attention dropout is :func:`exact_dropout`'s: the same output
    and gradients, bit for bit. Anything else (evaluation, a float mask, grouped heads, a
    causal model, a GPU) is transformers' own SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = query.shape[2] > 1 and attention_mask is None and causal
    if (
        dropout <= 0.0
        or causal
        or query.device.type != "cpu"
        or (attention_mask is not None and attention_mask.dtype != torch.bool)
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
        or getattr(module, "num_key_value_groups", 1) > 1
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
            is_causal=is_causal, **kwargs,
        )
    out = _math_sdpa(query, key, value, attention_mask, dropout, scaling)
    out = out.reshape(out.shape[0], -1, query.shape[2], value.shape[-1])
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    AttentionInterface.register(EXACT_ATTENTION, exact_attention)
    AttentionMaskInterface.register(EXACT_ATTENTION, sdpa_mask)


class FastDropout:
    """The swap of a model's dropout for fast dropout (``install``) or exact dropout
    (``install(model, exact=True)``), and back (``undo``)."""

    def __init__(self, model: Any, exact: bool = False) -> None:
        self.model = model
        self.exact = exact
        self.swapped: list[tuple[Any, str, Any]] = []
        self.attention_was: str | None = None

    @classmethod
    def install(cls, model: Any, exact: bool = False) -> FastDropout:
        """Swap ``model``'s dropout (exact: only where ``mt19937.available()``)."""
        swap = cls(model, exact)
        if exact and not mt19937.available():
            return swap
        module = ExactDropoutModule if exact else FastDropoutModule
        for parent in model.modules():
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.Dropout and not child.inplace:
                    replacement = module(child.p)
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
            config._attn_implementation = EXACT_ATTENTION if exact else ATTENTION
        return swap

    @property
    def active(self) -> bool:
        return bool(self.swapped) or self.attention_was is not None

    def describe(self) -> str:
        parts = [f"{len(self.swapped)} dropout layers"]
        if self.attention_was is not None:
            parts.append("attention probabilities")
        what = " and ".join(parts)
        return f"{what}, torch's masks drawn by bertui's kernel" if self.exact else what

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


def for_run(
    model: Any, fast: bool, device_kind: str, compiled: bool = False
) -> tuple[FastDropout | None, str | None]:
    """The dropout a run trains ``model`` with, swapped in, and the worker.log line that says
    which (None on a GPU). On a CPU: fast dropout where it is asked for, else exact dropout
    where the kernel applies. ``BERTUI_TORCH_DROPOUT=1`` keeps torch's own (for benchmarks),
    and so does ``compiled``: torch.compile traces torch's dropout, not a call into a C
    library. The swap is None where nothing is swapped (a GPU, or torch's masks)."""
    if device_kind != "cpu":
        return None, None
    if fast:
        swap = FastDropout.install(model)
        return swap, f"fast dropout: {swap.describe()}"
    if compiled:
        return None, "dropout: torch's bernoulli_ (--torch-compile)"
    if os.environ.get("BERTUI_TORCH_DROPOUT") == "1":
        return None, "dropout: torch's bernoulli_ (BERTUI_TORCH_DROPOUT=1)"
    swap = FastDropout.install(model, exact=True)
    if swap.active:
        return swap, f"exact dropout: {swap.describe()}"
    return None, f"dropout: torch's bernoulli_ ({mt19937.status() or 'the model has no dropout'})"
