"""Where the workstation keeps its secrets (the device token).

Production uses the operating system's keyring. On a machine without a secure
keyring backend the program says so and stops, unless the operator chose the
explicit file store (the demo and the tests do), which is a plain file readable
only by its owner.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from local_db.files import private_directory

SERVICE = "hospital-window-workstation"
KEYRING_TIMEOUT_S = 5.0


class SecretsUnavailable(Exception):
    """No safe place to keep secrets; the message says what the operator can do."""


class SecretStore(Protocol):
    description: str  # where the secrets are kept, in English (the CLI's language)
    description_zh: str  # the same, for a clerk reading Chinese

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str) -> None: ...

    def delete(self, name: str) -> None: ...


class FileSecretStore:
    """Secrets in a JSON file with mode 0600: only when chosen explicitly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path} (explicitly chosen; not encrypted)"
        self.description_zh = f"文件 {path}（明确选择；未加密）"

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        return dict(json.loads(self.path.read_text(encoding="utf-8")))

    def get(self, name: str) -> str | None:
        return self._read().get(name)

    def set(self, name: str, value: str) -> None:
        data = self._read()
        data[name] = value
        self._write(data)

    def delete(self, name: str) -> None:
        data = self._read()
        if data.pop(name, None) is not None:
            self._write(data)

    def _write(self, data: dict[str, str]) -> None:
        private_directory(self.path.parent)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a leftover of another mode keeps it otherwise
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class KeyringSecretStore:
    """The OS keyring, called with a timeout: a locked keyring can hang forever."""

    def __init__(self, namespace: str) -> None:
        import keyring

        self._keyring = keyring
        self.namespace = namespace
        backend = keyring.get_keyring()
        if _is_insecure(backend):
            raise SecretsUnavailable(
                f"No secure keyring backend is available ({type(backend).__name__}). "
                "Install and unlock a system keyring, or start with --secrets file to keep "
                "the device token in a plain file (only on a machine you control)."
            )
        self.description = f"system keyring ({type(backend).__name__})"
        self.description_zh = f"系统密钥环（{type(backend).__name__}）"

    def _call(self, fn: Callable[..., Any], *args: str) -> Any:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(fn, *args)
            try:
                return future.result(timeout=KEYRING_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                raise SecretsUnavailable(
                    "The system keyring did not answer (is it locked?)."
                ) from None

    def get(self, name: str) -> str | None:
        found = self._call(self._keyring.get_password, f"{SERVICE}:{self.namespace}", name)
        return str(found) if found is not None else None

    def set(self, name: str, value: str) -> None:
        self._call(self._keyring.set_password, f"{SERVICE}:{self.namespace}", name, value)

    def delete(self, name: str) -> None:
        with contextlib.suppress(Exception):  # keyring raises PasswordDeleteError when absent
            self._call(self._keyring.delete_password, f"{SERVICE}:{self.namespace}", name)


def _is_insecure(backend: object) -> bool:
    module = type(backend).__module__
    name = type(backend).__name__
    if module.startswith("keyring.backends.fail") or module.startswith("keyring.backends.null"):
        return True
    if name == "ChainerBackend":
        return not getattr(backend, "backends", [])
    return module.startswith("keyrings.alt")  # plaintext file backends


def open_secret_store(kind: str, data_dir: Path) -> SecretStore:
    """``kind`` is "keyring" (production default) or "file" (explicit choice)."""
    if kind == "file":
        return FileSecretStore(data_dir / "secrets.json")
    if kind == "keyring":
        return KeyringSecretStore(str(data_dir.resolve()))
    raise SecretsUnavailable(f"Unknown secrets store {kind!r}: use 'keyring' or 'file'.")
