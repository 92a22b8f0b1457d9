"""Start-up: what the first screen costs. The first frame loads no heavy library and none of
the other screens, and garbage collection (off while the CLI starts the app) is back on once
the first frame is drawn. The time itself is measured by bench/startup.py."""

from __future__ import annotations

import json
import subprocess
import sys

# Libraries the first frame must not import (each one costs start-up time or memory; most are
# for the worker, the model checks or the other screens).
HEAVY = ("torch", "transformers", "datasets", "sklearn", "scipy", "numpy", "pandas", "pyarrow",
         "tokenizers", "safetensors", "huggingface_hub", "accelerate", "setfit",
         "sentence_transformers", "plotext", "textual_plotext", "yaml")
# bertui's own modules that belong to later screens or to the checks after the first frame.
LATER = ("bertui.core.models", "bertui.core.data", "bertui.core.engine", "bertui.core.launch",
         "bertui.core.predict", "bertui.worker", "bertui.tui.screens.monitor",
         "bertui.tui.screens.compare", "bertui.tui.widgets.chart",
         "bertui.tui.widgets.classifier")

FIRST_FRAME = """
import asyncio, gc, json, sys
from pathlib import Path

import bertui.cli  # what the `bertui` command imports before it opens the app
from bertui.tui.app import make_app

seen = {}


async def main():
    gc.disable()  # as bertui.cli.open_app starts the app
    app = make_app(home=Path(sys.argv[1]), config_path=Path(sys.argv[2]))
    app.after_first_frame(lambda: seen.update(
        modules=sorted(sys.modules), gc=gc.isenabled(), screen=type(app.screen).__name__,
        frozen=gc.get_freeze_count()))
    async with app.run_test(size=(120, 40)) as pilot:
        while "modules" not in seen:
            await pilot.pause(0.05)
        # Leave once the rest of the form is built and its checks are done (quitting while
        # Textual mounts a Select fails in Textual).
        while not app.screen.ready:
            await pilot.pause(0.05)
        await app.workers.wait_for_complete()


asyncio.run(main())
print(json.dumps(seen))
"""


def first_frame(home, config_path) -> dict:
    out = subprocess.run([sys.executable, "-c", FIRST_FRAME, str(home), str(config_path)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_first_frame_loads_no_heavy_library_and_turns_gc_back_on(bertui_home, config_path):
    seen = first_frame(bertui_home, config_path)
    assert seen["screen"] == "NewRunScreen"
    modules = set(seen["modules"])
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert loaded == [], f"the first frame imported {loaded[:8]}"
    assert sorted(m for m in LATER if m in modules) == []
    assert seen["gc"] is True
    assert seen["frozen"] > 10_000  # what start-up built is left out of later collections


def test_the_cli_turns_garbage_collection_back_on_when_the_app_cannot_start(tmp_path):
    # The runs folder under a file: open_app stops at its check, before any frame.
    (tmp_path / "home").write_text("")
    code = ("import gc, sys\nfrom bertui.cli import main\nrc = main([])\n"
            "print(rc, gc.isenabled())")
    env = {"BERTUI_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1",
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env, check=False)
    assert out.stdout.split() == ["2", "True"], out.stderr
    assert out.stderr.strip().startswith("bertui: ") and "Traceback" not in out.stderr
