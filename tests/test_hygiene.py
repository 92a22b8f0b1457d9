"""Import hygiene: the core stays UI-free and never imports the worker; the TUI starts without
torch or transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "bertui" / "core"
CORE_MODULES = sorted(CORE.rglob("*.py"))  # subpackages (arms/, ...) included
# What no module of bertui/core may import, in any form: the module or anything under it.
FORBIDDEN = ("textual", "textual_plotext", "bertui.tui", "bertui.worker")


def module_name(path: Path, root: Path = CORE.parent.parent) -> str:
    """``bertui.core.arms.probe`` for bertui/core/arms/probe.py under ``root`` (a package's
    name for its __init__.py)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package: str) -> list[str]:
    """Every module a file imports, as absolute names: ``from bertui import tui`` is
    ``bertui.tui``, ``from ..worker import x`` in a core module is ``bertui.worker``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]  # from x import sub
    return names


def forbidden_imports(path: Path, root: Path = CORE.parent.parent) -> list[str]:
    """The imports of ``path`` (a file of the bertui package under ``root``) that the core
    must not have."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return [
        imported
        for imported in imported_modules(path, package)
        if any(imported == bad or imported.startswith(bad + ".") for bad in FORBIDDEN)
    ]


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_neither_textual_nor_the_tui_nor_the_worker(path):
    assert forbidden_imports(path) == [], f"{path.relative_to(CORE)} imports them"


@pytest.mark.parametrize("line, culprit", [
    ("import bertui.worker", "bertui.worker"),
    ("from bertui.worker import Worker", "bertui.worker"),
    ("from bertui import worker", "bertui.worker"),
    ("from ... import worker", "bertui.worker"),
    ("from ...worker import spawn", "bertui.worker"),
    ("import bertui.tui.app", "bertui.tui.app"),
    ("from bertui.tui.follow import RunFollower", "bertui.tui.follow"),
    ("from bertui import tui", "bertui.tui"),
    ("from ...tui import app", "bertui.tui"),
    ("from textual.widgets import Static", "textual.widgets"),
    ("def later():\n    import textual_plotext", "textual_plotext"),
])
def test_the_check_catches_every_form_of_a_forbidden_import(tmp_path, line, culprit):
    """The checker, run on a core module (in a subpackage) that has one forbidden import."""
    assert culprit in forbidden_imports(core_file(tmp_path, line), root=tmp_path)


def core_file(root: Path, line: str) -> Path:
    """A module bertui/core/arms/probe.py under ``root`` whose body is ``line``."""
    path = root / "bertui" / "core" / "arms" / "probe.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'"""A probe of the hygiene check."""\n{line}\n')
    return path


@pytest.mark.parametrize("line", [
    "import bertui.core.runs",
    "from bertui.core import runs",
    "from .. import events",
    "from . import base",
    "import bertui.workers_elsewhere",
    "import textualize",
])
def test_the_check_lets_the_core_import_itself(tmp_path, line):
    assert forbidden_imports(core_file(tmp_path, line), root=tmp_path) == []


def test_importing_every_core_module_loads_no_textual_tui_or_worker():
    modules = ",".join(module_name(p) for p in CORE_MODULES)
    code = (
        f"import importlib, sys\nfor m in '{modules}'.split(','): importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('textual', 'bertui.tui', "
        "'bertui.worker'))))"
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
