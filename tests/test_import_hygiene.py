"""The UI-free layers never import Textual (DESIGN.md §1)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

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


def test_the_window_starts_without_what_it_does_not_need_yet(tmp_path: Path) -> None:
    """Cold start to the login screen: pypinyin (0.25 s of dictionaries) loads
    after login, and sqlite-utils only when a replica has migrations to run."""
    replica = tmp_path / "replica.db"
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from local_db.store import LocalStore; LocalStore({str(replica)!r}).close()",
        ],
        check=True,
    )
    code = (
        "import sys\n"
        "import workstation.app, workstation.builder, workstation.cli\n"
        "from local_db.store import LocalStore\n"
        f"LocalStore({str(replica)!r}).close()\n"
        "print(sorted(m for m in ('pypinyin', 'sqlite_utils', 'server', 'fastapi') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
