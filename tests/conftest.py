"""Shared fixtures: an isolated BERTUI_HOME, a tiny random BERT, a finished run, the shared data.

Every test runs offline (HF_HUB_OFFLINE=1) with its own BERTUI_HOME; nothing touches the user's
real runs or the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def bertui_cmd(*args: str) -> list[str]:
    """The bertui command line, run with this interpreter (the installed package)."""
    return [sys.executable, "-m", "bertui", *args]


def run_bertui(
    *args: str, home: Path, timeout: float = 600, env: dict | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "BERTUI_HOME": str(home), "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(
        bertui_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"bertui {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def train_tiny(tiny_model: Path, home: Path, *extra: str) -> tuple[dict, Path]:
    """``bertui train`` of the tiny model on the demo data for one epoch (the real worker):
    the metrics it prints and the run directory."""
    proc = run_bertui(
        "train", "--model", str(tiny_model), "--dataset", "demo", "--epochs", "1",
        "--json", "--quiet", *extra, home=home, check=True,
    )
    return json.loads(proc.stdout), sorted((home / "runs").iterdir())[-1]


def tiny_classifier(tiny_model: Path, **kwargs):
    """The tiny model loaded for classification (seeded head), in eval mode."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification.from_pretrained(
        str(tiny_model), num_labels=2, **kwargs
    ).eval()


@pytest.fixture(autouse=True)
def bertui_home(tmp_path, monkeypatch) -> Path:
    """Each test gets its own BERTUI_HOME."""
    home = tmp_path / "bertui-home"
    monkeypatch.setenv("BERTUI_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def make_tiny_model(path: Path, *, num_labels: int = 2, layers: int = 2) -> Path:
    """A tiny random BERT (hidden 32) with the real MiniLM WordPiece tokenizer, saved as
    safetensors like any hub model."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from bertui.core.models import embedded_model_dir

    tokenizer = BertTokenizerFast.from_pretrained(str(embedded_model_dir()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=num_labels,
    )
    torch.manual_seed(0)
    # A bare encoder (BertModel), as most hub checkpoints are: the head is initialised by bertui.
    from transformers import BertModel

    BertModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    assert BertForSequenceClassification  # the class bertui will load it as
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("session-home")


@pytest.fixture(scope="session")
def finished_run(tiny_model, session_home) -> Path:
    """A real run directory: the tiny model fine-tuned on the demo data for one epoch by the
    real worker. Shared read-only by the tests that only read it."""
    proc = run_bertui(
        "train",
        "--model",
        str(tiny_model),
        "--dataset",
        "demo",
        "--epochs",
        "1",
        "--name",
        "tiny-demo",
        "--json",
        "--quiet",
        home=session_home,
        check=True,
    )
    metrics = json.loads(proc.stdout)
    assert metrics["finetuned"] is not None
    runs = sorted((session_home / "runs").iterdir())
    return runs[-1]


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared datasets are not here ({SHARED_DATA})")
    return SHARED_DATA


# --- the worker lock ---------------------------------------------------------------------------

HOLD = """
import os, sys, time
from bertui.core.process import lock_run
fd = lock_run(sys.argv[1])
print("held" if fd is not None else "busy", flush=True)
if len(sys.argv) > 2 and os.fork() == 0:  # a child like a DataLoader worker, which outlives us
    time.sleep(5)
    os._exit(0)
sys.stdin.readline() if len(sys.argv) > 2 else time.sleep(600)
"""


def hold_lock(path: Path, *extra: str) -> subprocess.Popen:
    """Another process that takes the run's worker lock (as a worker does) and keeps it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc
