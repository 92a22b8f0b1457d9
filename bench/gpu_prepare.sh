#!/usr/bin/env bash
# Prepare what bench/gpu_check.sh needs on a GPU machine that has no network: run it HERE, in
# the repository root, before the device call. It fills .gpu/ (git-ignored, < 64 MiB):
#   .gpu/whl/       wheels the GPU image lacks (datasets and its small deps, platformdirs, tomli-w)
#   .gpu/minilm/    the embedded MiniLM converted to fp16 safetensors (+ tokenizer, config)
#   .gpu/data/      ../shared/data/reviews and the reference trainer
# Then call the device tool with carry [".gpu"] and the command:  bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/whl .gpu/minilm .gpu/data
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 platformdirs tomli-w
"$PY" - <<'PY'
from pathlib import Path
import shutil
import torch
from safetensors.torch import load_file, save_file
from bertui.core.models import embedded_model_dir
src, dst = embedded_model_dir(), Path(".gpu/minilm")
state = load_file(str(src / "model.safetensors"))
save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, str(dst / "model.safetensors"),
          metadata={"format": "pt"})
for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    if (src / name).exists():
        shutil.copy(src / name, dst / name)
PY
cp ../shared/data/reviews/train.csv ../shared/data/reviews/test.csv .gpu/data/
cp ../shared/bench/reference_trainer.py .gpu/data/
du -sh .gpu
