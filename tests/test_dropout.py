"""Fast dropout: torch's dropout in distribution, cheaper random numbers, undone cleanly."""

from __future__ import annotations

import json

import pytest
import torch

from bertui.core.dropout import ATTENTION, FastDropout, attention, fast_dropout
from conftest import tiny_classifier, train_tiny


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drops_at_the_rate_and_scales_like_torch(p):
    torch.manual_seed(0)
    x = torch.rand(200_000) + 0.5  # no zeros of its own
    y = fast_dropout(x, p)
    dropped = (y == 0).float().mean().item()
    # binomial sd at n = 2e5 is ≤ 0.0012: five of them
    assert abs(dropped - p) < 0.006
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))


# Gradients are asked for explicitly: the predictor (tested in this process too) turns
# autograd off for its thread.
@torch.enable_grad()
def test_gradient_flows_through_the_kept_elements_only():
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    y = fast_dropout(x, 0.3)
    y.sum().backward()
    expected = torch.where(y != 0, torch.full_like(y, 1 / 0.7), torch.zeros_like(y))
    torch.testing.assert_close(x.grad, expected)


def test_seeded_masks_repeat_and_differ_call_to_call():
    x = torch.ones(4096)
    torch.manual_seed(3)
    a, b = fast_dropout(x, 0.1), fast_dropout(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(fast_dropout(x, 0.1), a)
    assert not torch.equal(a, b)


def test_off_in_eval_and_at_zero_rate():
    x = torch.randn(10)
    assert fast_dropout(x, 0.1, training=False) is x
    assert fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros(10))


def test_attention_without_dropout_matches_sdpa():
    """The explicit path (taken in training) computes SDPA's attention: compare at a rate
    too small to drop anything (p < 2⁻¹⁶ keeps every element, scale 1/(1−p) ≈ 1)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Module(torch.nn.Module):
        is_causal = False

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 4, 7, 8) for _ in range(3))
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[1, 4:] = False
    mask = keep[:, None, None, :].expand(3, 1, 7, 7)
    additive = torch.zeros(3, 1, 7, 7).masked_fill(~mask, torch.finfo(torch.float32).min)
    reference, _ = sdpa_attention_forward(Module(), q, k, v, mask, dropout=0.0, scaling=0.3)
    for m in (mask, additive, None):
        ours, _ = attention(Module(), q, k, v, m, dropout=1e-9, scaling=0.3)
        if m is None:
            reference_m, _ = sdpa_attention_forward(Module(), q, k, v, None, scaling=0.3)
            torch.testing.assert_close(ours, reference_m)
        else:
            torch.testing.assert_close(ours, reference)


@torch.enable_grad()
def test_install_swaps_dropout_and_attention_and_undo_restores(tiny_model):
    model = tiny_classifier(tiny_model)
    assert model.config._attn_implementation == "sdpa"
    ids = torch.tensor([[101, 2023, 3185, 2001, 102], [101, 6659, 102, 0, 0]])
    mask = (ids != 0).long()
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
    originals = [m for m in model.modules() if type(m) is torch.nn.Dropout]
    swap = FastDropout.install(model)
    assert swap.active and len(swap.swapped) == len(originals) > 0
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert model.config._attn_implementation == ATTENTION
    with torch.no_grad():  # evaluation is untouched: nothing dropped, SDPA as before
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, before)
    model.train()
    torch.manual_seed(0)
    a = model(input_ids=ids, attention_mask=mask).logits
    torch.manual_seed(0)
    b = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(a, b) and not torch.allclose(a, before)  # dropout is on, and seeded
    a.sum().backward()
    assert model.classifier.weight.grad is not None
    swap.undo()
    assert [m for m in model.modules() if type(m) is torch.nn.Dropout] == originals
    assert all(m.training for m in originals)  # the mode set while swapped carries back
    assert model.config._attn_implementation == "sdpa"


def test_checkpoints_written_while_installed_load_anywhere(tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = tiny_classifier(tiny_model)
    FastDropout.install(model)
    model.save_pretrained(tmp_path / "ckpt")
    assert ATTENTION not in (tmp_path / "ckpt" / "config.json").read_text()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ckpt")
    assert loaded.config._attn_implementation == "sdpa"


def test_eager_attention_models_keep_their_attention(tiny_model):
    model = tiny_classifier(tiny_model, attn_implementation="eager")
    swap = FastDropout.install(model)
    assert swap.swapped and swap.attention_was is None
    assert model.config._attn_implementation == "eager"


def test_the_worker_trains_with_fast_dropout_and_without(tiny_model, tmp_path):
    """The real worker and Trainer: ``--fast-dropout`` turns fast dropout on (said in the
    log, kept in config.toml; off by default); the runs differ (the masks come from another
    random stream), as they should, and the saved model loads as a plain SDPA model."""
    fast, fast_dir = train_tiny(tiny_model, tmp_path / "a", "--no-probe", "--fast-dropout")
    stock, stock_dir = train_tiny(tiny_model, tmp_path / "b", "--no-probe")
    assert "fast dropout: " in (fast_dir / "events.jsonl").read_text()
    assert "fast dropout:" not in (stock_dir / "events.jsonl").read_text()
    assert "fast_dropout = true" in (fast_dir / "config.toml").read_text()
    assert "fast_dropout = false" in (stock_dir / "config.toml").read_text()
    assert fast["finetuned"]["eval_loss"] != stock["finetuned"]["eval_loss"]
    saved = json.loads((fast_dir / "model" / "config.json").read_text())
    assert ATTENTION not in json.dumps(saved)
