"""The UI-free layers never import Textual (DESIGN.md §1)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

UI_FREE = ["domain", "local_db", "sync", "server"]


def _modules(package: str) -> list[str]:
    module = __import__(package, fromlist=["__path__"])
    names = [package]
    names += [m.name for m in pkgutil.walk_packages(module.__path__, prefix=package + ".")]
    return names


@pytest.mark.parametrize("package", UI_FREE)
def test_layer_imports_without_textual(package: str) -> None:
    modules = _modules(package)
    assert len(modules) > 1 or package == "domain"
    code = (
        "import sys\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"{package} pulled in: {result.stdout.strip()}"


def test_the_check_would_catch_a_leak() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys, screens.base; print('textual' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "True"
