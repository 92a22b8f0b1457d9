"""The precision a run trains and measures in: ``--precision auto`` picks bf16 autocast on a CPU
with native bf16 units (read from its feature flags), fp32 elsewhere, and says why (metrics.json,
the run_start event); every arm and the classifier pane keep bf16 only where it keeps the model's
answers. The runs use ``--precision bf16`` explicitly, so they test the same on every CPU (bf16
is emulated where it is not native)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertui.core.cpu import cpu_precision, cpuinfo_flags, native_bf16
from bertui.core.events import read_events
from bertui.core.runs import EVENTS_FILE, Run
from conftest import run_bertui, train_tiny

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes sve bf16 i8mm
"""


@pytest.mark.parametrize(("flags", "unit"), [
    ({"avx512f", "avx512_bf16"}, "AVX512-BF16"),
    ({"AMX_BF16", "amx_tile", "avx512_bf16"}, "AMX"),  # AMX first; any case
    ({"asimd", "bf16"}, "Arm BF16"),
    # AVX512 without bf16 units (Skylake, Ice Lake): oneDNN would emulate bf16, slower
    ({"avx512f", "avx512bw", "avx512vl", "avx512dq"}, None),
    (set(), None),
])
def test_native_bf16_is_read_from_the_flags(flags, unit):
    assert native_bf16(flags) == unit


def test_cpuinfo_flags_of_x86_and_arm():
    assert {"avx512_bf16", "avx2"} <= cpuinfo_flags(X86_CPUINFO)
    assert "bf16" in cpuinfo_flags(ARM_CPUINFO)
    assert cpu_precision(cpuinfo_flags(X86_CPUINFO)) == ("bf16", "bf16: the CPU has AVX512-BF16")
    assert cpu_precision({"avx2"}) == ("fp32", "fp32: the CPU has no native bf16")


def test_auto_picks_bf16_only_where_the_cpu_has_it():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("the CPU choice: this machine has a GPU")
    from bertui.core.training import pick_device

    native = pick_device("auto", frozenset({"amx_bf16"}))
    assert (native.precision, native.reason) == ("bf16", "bf16: the CPU has AMX")
    plain = pick_device("auto", frozenset({"avx2"}))
    assert (plain.precision, plain.reason) == ("fp32", "fp32: the CPU has no native bf16")
    assert pick_device("fp32", frozenset({"amx_bf16"})).precision == "fp32"
    emulated = pick_device("bf16", frozenset({"avx2"}))
    assert emulated.precision == "bf16" and "slower than fp32" in emulated.reason


def _precision_of(path, metrics):
    start = next(e for e in read_events(path / EVENTS_FILE) if e["type"] == "run_start")
    return metrics["train"], start


def test_a_bf16_run_says_what_it_used_and_why(tiny_model, bertui_home):
    metrics, path = train_tiny(tiny_model, bertui_home, "--precision", "bf16")
    train, start = _precision_of(path, metrics)
    assert train["precision"] == start["precision"] == "bf16"
    assert train["precision_reason"] == start["precision_reason"]
    assert train["precision_reason"].startswith("bf16: ")
    for arm in ("pretrained", "probe", "finetuned"):
        used = metrics[arm]["precision"]
        # bf16, or fp32 where bf16 moved this (random) model's answers, saying by how much
        assert used == train["precision_reason"] or (
            used.startswith("fp32: bf16 changed the model's answers")), (arm, used)
    assert metrics["pretrained"]["precision"] == metrics["probe"]["precision"]  # one forward


def test_fp32_is_one_flag_away(tiny_model, bertui_home):
    metrics, path = train_tiny(tiny_model, bertui_home, "--precision", "fp32")
    train, start = _precision_of(path, metrics)
    assert train["precision"] == start["precision"] == "fp32"
    assert train["precision_reason"] == "fp32: asked for"
    assert {metrics[a]["precision"] for a in ("pretrained", "probe", "finetuned")} == {
        "fp32: asked for"}


def test_the_pane_keeps_bf16_only_where_it_agrees_with_fp32(finished_run, monkeypatch):
    import torch

    import bertui.core.predict as predict

    run, tolerance = Run.load(finished_run), predict.BF16_TOLERANCE
    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    try:  # load() sets both for the whole process
        monkeypatch.setattr(predict, "pane_precision", lambda config: "fp32")
        exact = predict.RunPredictor(run).load()
        monkeypatch.setattr(predict, "pane_precision", lambda config: "bf16")
        fast = predict.RunPredictor(run).load()
        monkeypatch.setattr(predict, "BF16_TOLERANCE", -1.0)  # nothing agrees
        strict = predict.RunPredictor(run).load()
    finally:
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
    assert set(exact.precisions.values()) == {"fp32"}
    assert all(p.startswith("fp32 (bf16 differed by") for p in strict.precisions.values())
    texts = list(predict.PRECISION_TEXTS)
    want, got = exact.predict(texts), fast.predict(texts)
    for name, attr in (("pretrained", "base"), ("finetuned", "finetuned")):
        dtype = next(getattr(fast, attr).parameters()).dtype
        assert (fast.precisions[name] == "bf16") == (dtype == torch.bfloat16), name
        if fast.precisions[name] != "bf16":
            continue
        for w, g in zip(want, got):
            for label, p in w[name]["probs"].items():
                assert abs(g[name]["probs"][label] - p) <= tolerance + 1e-4


@pytest.mark.slow
def test_real_models_keep_their_answers_in_bf16(shared_data, bertui_home, monkeypatch):
    """The embedded MiniLM, fine-tuned a little on the reviews in bf16: the pre-trained,
    probe and fine-tuned models all pass the pane's bf16 check, and on the 600 eval texts
    their bf16 copies change at most a few near-tie labels."""
    import torch

    import bertui.core.predict as predict
    from bertui.core.data import prepare
    from bertui.core.training import Encoded, batched_forward, probe_probs

    proc = run_bertui(
        "train", "--dataset", str(shared_data / "reviews" / "train.csv"),
        "--eval-dataset", str(shared_data / "reviews" / "test.csv"),
        "--max-train-samples", "400", "--epochs", "1", "--precision", "bf16",
        "--json", "--quiet", home=bertui_home, timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    for arm in ("pretrained", "probe", "finetuned"):
        assert metrics[arm]["precision"].startswith("bf16"), (arm, metrics[arm]["precision"])
    run = Run.load(sorted((bertui_home / "runs").iterdir())[0])
    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    try:
        monkeypatch.setattr(predict, "pane_precision", lambda config: "fp32")
        exact = predict.RunPredictor(run).load()
    finally:
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
    texts = prepare(str(shared_data / "reviews" / "test.csv")).train.texts
    tok = exact.tokenizer
    encoded = Encoded(tok(texts, truncation=True, max_length=128)["input_ids"], [0] * len(texts))
    for model, probe in ((exact.base, exact.probe), (exact.finetuned, None)):
        copy, diff = predict.bf16_copy(model, tok, probe)
        assert copy is not None, diff
        with torch.no_grad():
            w, wx = batched_forward(model, encoded, tok.pad_token_id, features=True)
            g, gx = batched_forward(copy, encoded, tok.pad_token_id, features=True)
        pairs = [(w, g)] + ([(probe_probs(probe, wx), probe_probs(probe, gx))] if probe else [])
        for a, b in pairs:
            changed = a.argmax(1) != b.argmax(1)
            assert changed.sum() <= 0.01 * len(texts)
            margin = np.abs(a[:, 0] - a[:, 1]) if a.shape[1] == 2 else None
            if margin is not None and changed.any():
                assert margin[changed].max() < 0.1  # only near ties move
