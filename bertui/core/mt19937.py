"""torch's CPU Bernoulli draws (dropout masks), bit for bit and ~10x faster.

Where MKL's Bernoulli path is not taken (AMD and Arm CPUs), ``Tensor.bernoulli_(p)`` on a CPU
walks the tensor one element at a time: two words from torch's Mersenne Twister, their low 53
bits as a double, compared with ``p``. A MiniLM step spends ~7 % of its time there. The C
kernel ``_mt19937.c`` (an optional extension that setup.py builds) makes the same draws from
the same generator state in vectorised blocks.

:func:`bernoulli_` fills a tensor as ``tensor.bernoulli_(p)`` would, and leaves torch's
default generator where ``bernoulli_`` would have left it, so everything drawn afterwards
(the next mask, the next epoch's order, a checkpoint's saved state) is unchanged too. Before
the first use it draws both ways and compares (:func:`available`): on a CPU where torch
takes another path (MKL on Intel), with a torch whose generator state has another layout,
or without the compiled kernel, it reports unavailable and callers use torch's own.
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
from functools import cache
from typing import Any

import torch

_STATE_WORDS = 624
# torch.get_rng_state()'s bytes (CPUGeneratorImplState, torch >= 1.5): the seed (u64), the
# words left before the next twist (i32), seeded (i32), the next word's index (u64), then the
# 624 words of state, each stored in 64 bits.
_LEFT, _NEXT, _WORDS = 8, 16, 24
_ONE_BITS = {
    torch.float32: 0x3F800000,
    torch.bfloat16: 0x3F80,
    torch.float16: 0x3C00,
    torch.float64: 0x3FF0000000000000,
}


@cache
def _kernel() -> Any:
    spec = importlib.util.find_spec("bertui.core._mt19937")
    if spec is None or not spec.origin:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        fn = lib.bertui_bernoulli
    except (OSError, AttributeError):
        return None
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint64]
    return fn


def _draw(tensor: Any, p: float) -> None:
    import numpy as np

    state = torch.get_rng_state().numpy().copy()
    left = int(state[_LEFT:_LEFT + 4].view(np.int32)[0])
    index = int(state[_NEXT:_NEXT + 8].view(np.uint64)[0])
    words = state[_WORDS:_WORDS + 8 * _STATE_WORDS].view(np.uint64).astype(np.uint32)
    # torch counts down the words left (1: twist before the next draw) and indexes the next
    # word; the kernel keeps the index alone (624: twist first).
    pos = np.array([_STATE_WORDS if left <= 1 else index], dtype=np.int32)
    threshold = math.ceil(p * 2.0**53)  # u·2⁻⁵³ < p  ⇔  u < ceil(p·2⁵³), u a 53-bit integer
    _kernel()(words.ctypes.data, pos.ctypes.data, tensor.data_ptr(), tensor.numel(),
              tensor.element_size(), threshold, _ONE_BITS[tensor.dtype])
    used = int(pos[0])  # words taken since the last twist, 1..624
    state[_WORDS:_WORDS + 8 * _STATE_WORDS] = words.astype(np.uint64).view(np.uint8)
    state[_LEFT:_LEFT + 4] = np.array([_STATE_WORDS + 1 - used], dtype=np.int32).view(np.uint8)
    state[_NEXT:_NEXT + 8] = np.array([used], dtype=np.uint64).view(np.uint8)
    torch.set_rng_state(torch.from_numpy(state))


def applies(tensor: Any, p: float) -> bool:
    """Whether :func:`bernoulli_` takes ``tensor`` (else it is left to torch)."""
    return (
        tensor.device.type == "cpu"
        and tensor.dtype in _ONE_BITS
        and tensor.is_contiguous()
        and 0.0 <= p <= 1.0
        and tensor.numel() > 0
        and available()
    )


def bernoulli_(tensor: Any, p: float) -> Any:
    """``tensor.bernoulli_(p)``, with the same result and generator state after."""
    if not applies(tensor, p):
        return tensor.bernoulli_(p)
    with torch.no_grad():
        _draw(tensor, p)
    return tensor


def available() -> bool:
    """Whether the kernel is built and draws exactly what this torch draws on this CPU."""
    return status() is None


@cache
def status() -> str | None:
    """None where :func:`bernoulli_` uses the kernel, else why not. Checked once, on scratch
    draws both ways; torch's generator is left as it was."""
    if _kernel() is None:
        return "its kernel is not built (no C compiler at install)"
    if torch.get_rng_state().numel() < _WORDS + 8 * _STATE_WORDS:
        return "this torch's generator state has another layout"
    saved = torch.get_rng_state()
    try:
        for dtype, n, p in ((torch.float32, 1001, 0.9), (torch.bfloat16, 70_001, 0.5)):
            start = torch.get_rng_state()
            expected = torch.empty(n, dtype=dtype).bernoulli_(p)
            after = torch.get_rng_state()
            torch.set_rng_state(start)
            got = torch.empty(n, dtype=dtype)
            _draw(got, p)
            if not (torch.equal(got, expected) and torch.equal(torch.get_rng_state(), after)):
                return "torch draws its masks another way on this CPU (MKL)"
        return None
    except Exception as exc:  # noqa: BLE001 - any surprise in the state's layout: torch's own
        return f"its check failed ({type(exc).__name__})"
    finally:
        torch.set_rng_state(saved)
