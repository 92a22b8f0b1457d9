"""Exact dropout: torch's own CPU dropout masks, drawn by bertui's Mersenne-Twister kernel.

Everything here compares with torch itself, bit for bit: the masks, the generator state left
behind, dropout's values and gradients, SDPA's attention in training, a model trained for
several steps, and a real run of the worker against one with torch's ``bernoulli_``."""

from __future__ import annotations

import json
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bertui.core import mt19937
from bertui.core.dropout import (
    EXACT_ATTENTION,
    ExactDropoutModule,
    FastDropout,
    exact_attention,
    exact_dropout,
    for_run,
)
from conftest import run_bertui, tiny_classifier

needs_kernel = pytest.mark.skipif(
    not mt19937.available(), reason=f"exact dropout does not apply here: {mt19937.status()}"
)


def _cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def test_the_kernel_is_built_and_applies_where_torch_uses_its_twister():
    """With a C compiler at install the kernel exists; on an AMD CPU torch draws its masks
    from the Mersenne Twister (not MKL), so there the kernel must be in use."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the kernel is optional")
    assert mt19937._kernel() is not None, "setup.py did not build bertui/core/_mt19937"
    if _cpu_vendor() == "AuthenticAMD":
        assert mt19937.available(), mt19937.status()


def _reference_mask(state: np.ndarray, pos: int, n: int, p: float) -> tuple[np.ndarray, Any]:
    """The mask computed from numpy's own MT19937 (the same algorithm), the textbook way."""
    bits = np.random.MT19937()
    bits.state = {"bit_generator": "MT19937", "state": {"key": state.copy(), "pos": pos}}
    words = bits.random_raw(2 * n).astype(np.uint64)
    draws = ((words[0::2] & np.uint64(0x1FFFFF)) << np.uint64(32)) | words[1::2]
    mask = draws.astype(np.float64) * 2.0**-53 < p
    return mask, bits.state["state"]


@pytest.mark.parametrize("n", [1, 2, 311, 312, 313, 623, 624, 625, 1249, 20_001])
def test_the_kernel_is_the_mersenne_twister(n):
    """Against numpy's MT19937, from states part-way through a block (the element whose
    two words straddle a twist included): the same mask and the same state after."""
    if mt19937._kernel() is None:
        pytest.skip("the kernel is not built")
    rng = np.random.default_rng(n)
    for pos in (0, 1, 623, 624, 300):
        key = rng.integers(0, 2**32, 624, dtype=np.uint64).astype(np.uint32)
        expected, after = _reference_mask(key, pos, n, 0.9)
        words, at = key.copy(), np.array([pos], dtype=np.int32)
        out = torch.empty(n, dtype=torch.float32)
        mt19937._kernel()(words.ctypes.data, at.ctypes.data, out.data_ptr(), n, 4,
                          int(np.ceil(0.9 * 2.0**53)), 0x3F800000)
        assert np.array_equal(out.numpy() == 1.0, expected)
        assert set(np.unique(out.numpy())) <= {0.0, 1.0}
        # numpy twists lazily (pos 624 = twist due); the kernel the same: compare the words
        # still to come
        assert int(at[0]) == after["pos"] and np.array_equal(words, after["key"])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("p", [0.9, 0.5, 0.0, 1.0, 1e-12])
def test_bernoulli_equals_torchs_and_leaves_the_generator_where_torch_does(dtype, p):
    for n in (1, 313, 624, 625, 5000, 100_001):
        torch.manual_seed(n)
        torch.empty(n % 7 + 1).bernoulli_(0.3)  # start mid-block
        start = torch.get_rng_state()
        expected = torch.empty(n, dtype=dtype).bernoulli_(p)
        after = torch.get_rng_state()
        next_draw = torch.rand(3)
        torch.set_rng_state(start)
        got = mt19937.bernoulli_(torch.empty(n, dtype=dtype), p)
        assert torch.equal(got, expected), (n, p)
        assert torch.equal(torch.get_rng_state(), after)
        assert torch.equal(torch.rand(3), next_draw)


@needs_kernel
@torch.enable_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exact_dropout_is_torchs_dropout(dtype):
    x = torch.randn(16, 23, 48, dtype=dtype, requires_grad=True)
    for p in (0.1, 0.5):
        torch.manual_seed(7)
        ref = torch.nn.functional.dropout(x, p, True)
        (ref_grad,) = torch.autograd.grad((ref * ref).sum(), x)
        ref_state = torch.get_rng_state()
        torch.manual_seed(7)
        ours = exact_dropout(x, p)
        (our_grad,) = torch.autograd.grad((ours * ours).sum(), x)
        assert torch.equal(ours, ref) and torch.equal(our_grad, ref_grad)
        assert torch.equal(torch.get_rng_state(), ref_state)
    assert exact_dropout(x, 0.1, training=False) is x
    assert exact_dropout(x, 0.0) is x
    strided = x.detach().transpose(0, 2)  # not contiguous: left to torch, still the same
    torch.manual_seed(1)
    ref = torch.nn.functional.dropout(strided, 0.2, True)
    torch.manual_seed(1)
    assert torch.equal(exact_dropout(strided, 0.2), ref)


class _Attention(torch.nn.Module):
    is_causal = False


@needs_kernel
@torch.enable_grad()
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_exact_attention_is_sdpa_in_training(precision, monkeypatch):
    """Transformers' SDPA attention with dropout on (torch's math path on a CPU) against
    exact_attention: equal outputs and gradients, under autocast too, with a padding mask
    and without one; and the exact path really ran (SDPA was not called)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 3, 11, 16, requires_grad=True) for _ in range(3))
    keep = torch.ones(4, 11, dtype=torch.bool)
    keep[1, 6:] = False
    keep[3, 2:] = False
    mask = keep[:, None, None, :].expand(4, 1, 11, 11)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(*a, **kw):
        calls.append(1)
        return sdpa(*a, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    for m in (mask, None):
        results = []
        for fn in (sdpa_attention_forward, exact_attention):
            torch.manual_seed(3)
            calls.clear()
            with autocast:
                # as the model's forward runs them: q, k, v from linear layers (bf16 under
                # autocast) and viewed per head (not contiguous)
                low = [t.to(torch.bfloat16) if precision == "bf16" else t for t in (q, k, v)]
                qq, kk, vv = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in low)
                out, _ = fn(_Attention(), qq, kk, vv, m, dropout=0.1, scaling=0.25)
            grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
            results.append((out, grads, torch.get_rng_state(), len(calls)))
        (ref, ref_grads, ref_state, ref_calls), (ours, our_grads, our_state, our_calls) = results
        assert ref_calls == 1 and our_calls == 0
        assert ours.dtype == ref.dtype and torch.equal(ours, ref)
        assert all(torch.equal(a, b) for a, b in zip(our_grads, ref_grads))
        assert torch.equal(our_state, ref_state)
    # evaluation (no dropout) is transformers' SDPA itself
    calls.clear()
    exact_attention(_Attention(), q, k, v, mask, dropout=0.0, scaling=0.25)
    assert calls == [1]


def _batches(vocab: int) -> list[dict]:
    g = torch.Generator().manual_seed(5)
    out = []
    for i in range(5):
        length = 9 + 2 * i
        ids = torch.randint(1000, vocab, (8, length), generator=g)
        lengths = torch.randint(3, length + 1, (8,), generator=g)
        lengths[0] = length
        if i == 2:
            lengths[:] = length  # no padding: transformers passes no mask
        keep = (torch.arange(length)[None] < lengths[:, None]).long()
        out.append({"input_ids": ids * keep, "attention_mask": keep,
                    "labels": torch.randint(0, 2, (8,), generator=g)})
    return out


@needs_kernel
@torch.enable_grad()
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_model_trains_to_the_same_bits(tiny_model, precision):
    """Five steps of a BERT (forward, backward, clipping, fused AdamW) with torch's dropout
    and with exact dropout: the same losses, weights and generator state, to the bit."""
    batches = _batches(30000)

    def train(exact: bool):
        model = tiny_classifier(tiny_model).train()
        swap = FastDropout.install(model, exact=True) if exact else None
        if exact:
            assert swap is not None and swap.active and swap.attention_was == "sdpa"
            assert model.config._attn_implementation == EXACT_ATTENTION
            assert any(isinstance(m, ExactDropoutModule) for m in model.modules())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        torch.manual_seed(42)
        losses = []
        bf16 = precision == "bf16"
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        if swap is not None:
            swap.undo()
        assert model.config._attn_implementation == "sdpa"
        return losses, model.state_dict(), torch.get_rng_state()

    (ref_losses, ref_weights, ref_state), (losses, weights, state) = train(False), train(True)
    assert losses == ref_losses and len(set(losses)) > 1
    assert all(torch.equal(weights[name], ref_weights[name]) for name in ref_weights)
    assert torch.equal(state, ref_state)


def test_without_the_kernel_nothing_is_swapped(tiny_model, monkeypatch):
    model = tiny_classifier(tiny_model)
    with monkeypatch.context() as patch:
        patch.setattr(mt19937, "status", lambda: "its kernel is not built (test)")
        swap, line = for_run(model, False, "cpu")
        assert swap is None
        assert not any(isinstance(m, ExactDropoutModule) for m in model.modules())
        assert model.config._attn_implementation == "sdpa"
        assert line == "dropout: torch's bernoulli_ (its kernel is not built (test))"
        assert for_run(model, False, "cuda") == (None, None)
        fast, line = for_run(model, True, "cpu")  # fast dropout needs no kernel
        assert fast is not None and not fast.exact and line.startswith("fast dropout: ")
        fast.undo()
    # with the kernel back (or not): never under torch.compile, which traces torch's dropout
    swap, line = for_run(model, False, "cpu", compiled=True)
    assert swap is None
    assert line == "dropout: torch's bernoulli_ (--torch-compile)"


@needs_kernel
def test_a_run_with_exact_dropout_equals_one_with_torchs(tiny_model, tmp_path):
    """The real worker and Trainer: by default a CPU run trains with exact dropout (said in
    its log); with BERTUI_TORCH_DROPOUT=1 with torch's bernoulli_. Both end with the same
    model, bit for bit, and the same metrics; the saved config names plain SDPA."""
    runs = {}
    for name, env in (("exact", {}), ("torch", {"BERTUI_TORCH_DROPOUT": "1"})):
        home = tmp_path / name
        proc = run_bertui("train", "--model", str(tiny_model), "--dataset", "demo", "--epochs",
                          "1", "--no-probe", "--json", "--quiet", home=home, env=env, check=True)
        runs[name] = (json.loads(proc.stdout), sorted((home / "runs").iterdir())[-1])
    (exact, exact_dir), (stock, stock_dir) = runs["exact"], runs["torch"]
    assert "exact dropout: " in (exact_dir / "events.jsonl").read_text()
    assert "dropout: torch's bernoulli_ (BERTUI_TORCH_DROPOUT=1)" in (
        stock_dir / "events.jsonl").read_text()
    for key in ("accuracy", "eval_loss", "macro_f1"):
        assert exact["finetuned"][key] == stock["finetuned"][key]
    from safetensors.torch import load_file

    a = load_file(exact_dir / "model" / "model.safetensors")
    b = load_file(stock_dir / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert EXACT_ATTENTION not in (exact_dir / "model" / "config.json").read_text()
