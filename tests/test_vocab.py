"""Compact vocabulary: training on the embedding rows the data uses gives the dense model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertui.core.errors import BadInput
from bertui.core.runs import Run
from bertui.core.vocab import VOCAB_FILE, CompactedModel, CompactVocab, can_compact
from conftest import tiny_classifier, train_tiny


def test_vocab_keeps_specials_and_remaps_in_order():
    vocab = CompactVocab.of([[101, 7, 3000, 102], [101, 7, 9, 102]], [0, 100])
    assert vocab.used.tolist() == [0, 7, 9, 100, 101, 102, 3000]
    assert vocab.remap([[101, 7, 3000, 102]], 30522) == [[4, 1, 6, 5]]
    with pytest.raises(BadInput, match="changed since the run started"):
        vocab.remap([[101, 8, 102]], 30522)


def test_compact_model_computes_what_the_full_model_computes(tiny_model):
    model = tiny_classifier(tiny_model)
    texts = [[101, 2023, 3185, 2001, 2307, 102], [101, 6659, 102, 0, 0, 0]]
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        dense = model(input_ids=torch.tensor(texts), attention_mask=mask).logits
    vocab = CompactVocab.of(texts, [0])
    assert can_compact(model, len(vocab))
    swap = CompactedModel(model, vocab)
    swap.shrink()
    assert model.get_input_embeddings().num_embeddings == len(vocab) == 8
    assert model.config.vocab_size == 8
    assert model.get_input_embeddings().padding_idx == 0  # pad (0) is compact row 0 too
    with torch.no_grad():
        compact = model(input_ids=torch.tensor(vocab.remap(texts, 30522)), attention_mask=mask)
    torch.testing.assert_close(compact.logits, dense, rtol=0, atol=0)

    before = swap.full.weight.detach().clone()
    with torch.no_grad():
        model.get_input_embeddings().weight.add_(1.0)  # "training"
    swap.expand(decay=0.5)
    weight = model.get_input_embeddings().weight.detach()
    assert weight.shape[0] == model.config.vocab_size == 30522
    kept = torch.as_tensor(vocab.used)
    torch.testing.assert_close(weight[kept], before[kept] + 1.0)
    others = torch.ones(30522, dtype=torch.bool)
    others[kept] = False
    torch.testing.assert_close(weight[others], before[others] * 0.5)


def test_embeddings_mostly_used_are_not_compacted(tiny_model):
    model = tiny_classifier(tiny_model)
    assert not can_compact(model, 20000)  # more than half the rows: no gain


def test_compact_training_gives_the_model_dense_training_gives(tiny_model, tmp_path):
    """The real worker and Trainer, dropout on, same seed: with and without the compact
    vocabulary the runs reach the same eval loss and the same weights (up to the float
    rounding of the weight decay applied in one go to the rows the data never uses)."""
    compact, compact_dir = train_tiny(tiny_model, tmp_path / "a")
    dense, dense_dir = train_tiny(tiny_model, tmp_path / "b", "--no-compact-vocab")
    assert (compact_dir / VOCAB_FILE).is_file() and not (dense_dir / VOCAB_FILE).exists()
    used = np.load(compact_dir / VOCAB_FILE)
    assert 100 < len(used) < 5000  # the demo's word pieces, not the 30522 of the vocabulary
    assert compact["finetuned"]["eval_loss"] == pytest.approx(
        dense["finetuned"]["eval_loss"], rel=1e-5
    )
    assert compact["finetuned"]["accuracy"] == dense["finetuned"]["accuracy"]
    a = load_file(str(compact_dir / "model" / "model.safetensors"))
    b = load_file(str(dense_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    # The rows the data never uses were decayed, not left as loaded.
    emb = "bert.embeddings.word_embeddings.weight"
    loaded = load_file(str(tiny_model / "model.safetensors"))
    loaded_emb = loaded.get(emb, loaded.get(emb.removeprefix("bert.")))
    unused = torch.ones(a[emb].shape[0], dtype=torch.bool)
    unused[torch.as_tensor(used)] = False
    ratio = (a[emb][unused] / loaded_emb[unused])[loaded_emb[unused].abs() > 1e-3]
    assert float(ratio.max()) < 1.0 and float(ratio.min()) > 0.999
    # Checkpoints hold the compact rows: a cancelled run resumes from them.
    ckpt = Run.load(compact_dir).last_checkpoint()
    rows = load_file(str(ckpt / "model.safetensors"))[emb].shape[0]
    assert rows == len(used)
