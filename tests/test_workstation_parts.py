"""The workstation's own parts: scanner bursts, languages, receipts, secrets."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest
from textual.binding import Binding

import screens.cashier
import screens.forms
import screens.home
import screens.login
import screens.sync_issues
import workstation.app
from domain.errors import MESSAGES
from workstation.desk.i18n import CATALOG, I18n, default_language
from workstation.desk.receipts import Receipt
from workstation.desk.scan import BurstDetector, classify
from workstation.secrets import FileSecretStore, SecretsUnavailable, open_secret_store

ROOT = Path(__file__).resolve().parent.parent


def test_classify_card_and_id_card() -> None:
    assert classify("1000000008") is not None and classify("1000000008").kind == "card"  # type: ignore[union-attr]
    assert classify("1000000000") is None  # wrong check digit
    scan = classify("11010519491231002x|张三丰")
    assert scan is not None and scan.kind == "national_id"
    assert scan.value == "11010519491231002X" and scan.name == "张三丰"
    assert classify("110105194912310021") is None  # bad check character
    assert classify("zsf") is None


def test_burst_is_told_from_typing() -> None:
    typed = BurstDetector()
    for i in range(1, 11):
        typed.feed("1000000008"[:i], i * 0.15)  # a person: 150 ms a key
    assert not typed.is_burst()
    swiped = BurstDetector()
    for i in range(1, 11):
        swiped.feed("1000000008"[:i], 10.0 + i * 0.004)  # a reader: 4 ms a key
    assert swiped.is_burst()
    swiped.feed("", 11.0)
    assert not swiped.is_burst()


def test_catalogue_has_both_languages() -> None:
    for key, (zh, en) in CATALOG.items():
        assert zh.strip() and en.strip(), key
    for code, (zh, en) in MESSAGES.items():
        assert zh.strip() and en.strip() and zh != en, code


def _binding_descriptions() -> set[str]:
    found: set[str] = set()
    for module in (
        screens.cashier,
        screens.forms,
        screens.home,
        screens.login,
        screens.sync_issues,
        workstation.app,
    ):
        for value in vars(module).values():
            if not isinstance(value, type) or value.__module__ != module.__name__:
                continue  # Textual's own widgets carry their own (untranslated, hidden) keys
            for binding in value.__dict__.get("BINDINGS", []):
                if isinstance(binding, Binding) and binding.description:
                    found.add(binding.description)
    return found


def test_every_key_binding_is_translated() -> None:
    descriptions = _binding_descriptions()
    assert "key.top_up" in descriptions
    missing = sorted(d for d in descriptions if d not in CATALOG)
    assert missing == []


def test_every_catalogue_key_used_by_screens_exists() -> None:
    used: set[str] = set()
    for path in [*ROOT.joinpath("screens").glob("*.py"), ROOT / "workstation" / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "t" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    used.add(first.value)
    assert "cashier.search" in used
    assert sorted(k for k in used if k not in CATALOG) == []


def test_every_rejection_code_raised_has_a_message() -> None:
    codes: set[str] = set()
    for path in ROOT.joinpath("domain").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                "DomainError",
                "Rejection",
            ):
                args = [a for a in node.args if isinstance(a, ast.Constant)]
                args += [
                    k.value
                    for k in node.keywords
                    if k.arg == "code" and isinstance(k.value, ast.Constant)
                ]
                codes.update(a.value for a in args if isinstance(a.value, str))
    assert "card_lost" in codes
    assert sorted(c for c in codes if c not in MESSAGES) == []


def test_language_follows_the_locale() -> None:
    assert default_language({"LANG": "zh_CN.UTF-8"}) == "zh"
    assert default_language({"LANG": "en_US.UTF-8"}) == "en"
    assert default_language({"LC_ALL": "zh_TW.UTF-8", "LANG": "en_US.UTF-8"}) == "zh"
    assert default_language({}) == "en"
    i18n = I18n("zh")
    assert i18n.t("key.top_up") == "充值"
    i18n.toggle()
    assert i18n.t("key.top_up") == "Top up" and i18n.age(125) == "2 min ago"


def _receipt(provisional: bool) -> Receipt:
    return Receipt(
        receipt_no="R000000042",
        kind="top_up",
        at="2026-11-22T09:30:00+08:00",
        hospital="示范医院",
        window="收费窗口 3",
        clerk_name="王芳",
        patient_name="张三丰",
        card_no="1000000008",
        amount_fen=12345,
        method="wechat",
        balance_after_fen=62345,
        provisional=provisional,
    )


def test_receipt_in_both_languages(tmp_path: Path) -> None:
    zh = _receipt(True).render("zh")
    en = _receipt(True).render("en")
    assert (
        "R000000042" in zh and "¥123.45" in zh and "壹佰贰拾叁元肆角伍分" in zh and "临时收据" in zh
    )
    assert "Receipt no." in en and "PROVISIONAL" in en and "WeChat" in en
    assert "临时收据" not in _receipt(False).render("zh")
    path = _receipt(False).write(tmp_path, "zh")
    assert path.name == "R000000042.txt" and "¥623.45" in path.read_text(encoding="utf-8")


def test_file_secrets_are_private(tmp_path: Path) -> None:
    store = FileSecretStore(tmp_path / "secrets.json")
    assert store.get("device_token") is None
    store.set("device_token", "abc")
    assert store.get("device_token") == "abc"
    assert stat.S_IMODE(os.stat(tmp_path / "secrets.json").st_mode) == 0o600
    store.delete("device_token")
    assert store.get("device_token") is None


def test_production_refuses_a_missing_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keyring
    from keyring.backends import fail

    monkeypatch.setattr(keyring, "get_keyring", lambda: fail.Keyring())
    with pytest.raises(SecretsUnavailable, match="--secrets file"):
        open_secret_store("keyring", tmp_path)
    assert isinstance(open_secret_store("file", tmp_path), FileSecretStore)


def test_the_log_file_is_written_by_a_thread_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging
    import threading

    from workstation.logs import log_to_file

    writers: list[str] = []
    emit = logging.FileHandler.emit

    def noted(handler: logging.FileHandler, record: logging.LogRecord) -> None:
        if handler.baseFilename == str(tmp_path / "workstation.log"):
            writers.append(threading.current_thread().name)
        emit(handler, record)

    monkeypatch.setattr(logging.FileHandler, "emit", noted)
    stop = log_to_file(tmp_path / "workstation.log")
    try:
        logging.getLogger("sync.engine").warning("server epoch changed")
    finally:
        stop()
    assert "server epoch changed" in (tmp_path / "workstation.log").read_text(encoding="utf-8")
    # the thread that logged (the app's event loop, say) did not write the file
    assert writers and threading.current_thread().name not in writers
