"""Import hygiene: the core stays UI-free; the TUI starts without torch or transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "bertui" / "core"


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_does_not_import_textual(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in ("textual", "textual_plotext", "bertui.tui"), (
                f"{path.name} imports {name}"
            )
            assert not name.startswith("bertui.tui"), f"{path.name} imports {name}"


def test_importing_every_core_module_loads_no_textual():
    modules = ", ".join(f"bertui.core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__")
    code = (
        f"import importlib, sys\nfor m in '{modules}'.split(', '): importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.startswith('textual')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_app_starts_without_torch_or_transformers():
    code = (
        "import sys\nfrom bertui.tui.app import make_app\nmake_app()\n"
        "heavy = ('torch', 'transformers', 'datasets', 'sklearn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
