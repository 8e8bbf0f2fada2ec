"""The cashier's first job driven by keys alone, in both languages: log in,
open the cashier desk, register a patient, issue a card with a first
prepayment, top up; bad input shows a clear message and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input, Static

import screens.cashier
from domain.numbers import Series
from screens.cashier import CashierScreen
from screens.forms import (
    ConfirmScreen,
    IssueCardScreen,
    ReceiptScreen,
    RegisterPatientScreen,
    TopUpScreen,
)
from screens.home import HomeScreen
from screens.login import DemoInfo, LoginScreen
from screens.sync_issues import SyncIssuesScreen
from tests.harness import PASSWORD, Central, Station
from workstation.app import WindowApp, make_app

ID_NO = "11010519491231002X"


async def until(
    pilot: Pilot, condition: Callable[[], bool], what: str, timeout_s: float = 10.0
) -> None:
    """Let the app run until ``condition`` holds (workers and sync run meanwhile)."""
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for: {what}")


async def type_text(pilot: Pilot, text: str) -> None:
    await pilot.press(*text)


@pytest.fixture
async def station(central_sqlite: Central, tmp_path: Path):
    central_sqlite.clerk("cashier", ["cashier"], name="王芳")
    s = Station(central_sqlite, tmp_path / "ws", "window-1")
    code = central_sqlite.auth.create_enrollment_code("window-1")
    from workstation.desk.core import enroll_workstation

    await enroll_workstation(s.client, s.store, code, "window-1")
    s.desk.settings.ack_wait_s = 2.0
    yield s
    await s.close()


def app_for(station: Station, language: str) -> WindowApp:
    station.engine.interval_s = 0.2
    app = make_app(station.desk, language=language, cursor_blink=False)
    app.told = []  # type: ignore[attr-defined]  # every notice, kept (toasts expire)
    shown = app.notify

    def notify(message: str, **kwargs: object) -> None:
        app.told.append(str(message))  # type: ignore[attr-defined]
        shown(message, **kwargs)  # type: ignore[arg-type]

    app.notify = notify  # type: ignore[method-assign]
    return app


def screen_text(app: WindowApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def log_in(pilot: Pilot, app: WindowApp) -> None:
    await until(pilot, lambda: isinstance(app.screen, LoginScreen), "login screen")
    await type_text(pilot, "cashier")
    await pilot.press("enter")
    await type_text(pilot, PASSWORD)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, HomeScreen), "home screen")


async def open_registration_form(pilot: Pilot, app: WindowApp, station: Station) -> None:
    """From the home screen, once the replica is bootstrapped: F2 the cashier
    desk, F2 the registration form."""
    await until(pilot, lambda: station.store.get_meta("epoch") is not None, "bootstrap")
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(app.screen, CashierScreen), "cashier desk")
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(app.screen, RegisterPatientScreen), "registration form")


@pytest.mark.parametrize(
    ("language", "registered", "card_issued", "refused_amount"),
    [
        ("zh", "已登记", "已发卡", "最多两位小数"),
        ("en", "registered", "issued", "at most two decimals"),
    ],
)
async def test_cashier_first_job_by_keys(
    station: Station, language: str, registered: str, card_issued: str, refused_amount: str
) -> None:
    app = app_for(station, language)
    async with app.run_test(size=(140, 45)) as pilot:
        await log_in(pilot, app)
        # register: F2 twice, the ID number fills birth date and sex
        await open_registration_form(pilot, app, station)
        await type_text(pilot, ID_NO)
        await pilot.press("enter")  # next field
        await type_text(pilot, "张三丰")
        for _ in range(3):  # sex, birth date (filled) -> phone
            await pilot.press("tab")
        await type_text(pilot, "13812345678")
        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, CashierScreen), "back at the desk")
        cashier = app.screen
        assert isinstance(cashier, CashierScreen)
        await until(pilot, lambda: cashier.view is not None, "patient shown")
        assert cashier.view is not None and cashier.view.patient.name == "张三丰"
        assert cashier.view.patient.birth_date == "1949-12-31" and cashier.view.patient.sex == "F"
        assert any(registered in note for note in app.told)  # type: ignore[attr-defined]

        # issue a card with a first prepayment of 50 yuan, cash; confirm; receipt
        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, IssueCardScreen), "issue card form")
        await type_text(pilot, "50")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "confirmation")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ReceiptScreen), "receipt")
        receipt = app.screen
        assert isinstance(receipt, ReceiptScreen)
        assert receipt.receipt.amount_fen == 5000 and receipt.receipt.kind == "first_prepayment"
        assert Path(receipt.path).read_text(encoding="utf-8").count(receipt.receipt.receipt_no) == 1
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, CashierScreen), "desk again")
        assert any(card_issued in note for note in app.told)  # type: ignore[attr-defined]

        # bad input: three decimals -> clear message in the clerk's language, nothing written
        receipts_left = station.store.numbers_left(Series.RECEIPT)
        outbox_before = len(station.store.outbox())
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, TopUpScreen), "top-up form")
        await type_text(pilot, "12.345")
        await pilot.press("enter")
        await until(
            pilot, lambda: refused_amount in screen_text(app, "#form-error"), "amount refused"
        )
        assert isinstance(app.screen, TopUpScreen)
        assert len(station.store.outbox()) == outbox_before
        assert station.store.numbers_left(Series.RECEIPT) == receipts_left

        # fix it: 100.50 by WeChat (the method list: cash, bank card, WeChat, Alipay)
        amount = app.screen.query_one("#amount")
        amount.value = ""  # type: ignore[attr-defined]
        await type_text(pilot, "100.50")
        await pilot.press("tab")
        await pilot.press("enter", "down", "down", "enter")  # open the list, two down: WeChat
        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "confirmation")
        form = app.screen_stack[-2]
        assert str(form.query_one("#form-error", Static).render()) == ""  # the refusal is gone
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ReceiptScreen), "receipt")
        top_up = app.screen
        assert isinstance(top_up, ReceiptScreen)
        assert top_up.receipt.amount_fen == 10050 and top_up.receipt.method == "wechat"
        assert top_up.receipt.balance_after_fen == 15050
        await pilot.press("enter")

        # the server has it all
        await until(pilot, lambda: station.store.outbox_stats().pending == 0, "synced")
        with station.central.engine.connect() as conn:
            from sqlalchemy import func, select

            from server.db import transfers

            total = conn.execute(select(func.sum(transfers.c.amount_fen))).scalar()
        assert total == 15050


async def test_offline_login_and_top_up_then_sync_issue_screen(station: Station) -> None:
    app = app_for(station, "en")
    async with app.run_test(size=(140, 45)) as pilot:
        await log_in(pilot, app)
        await until(pilot, lambda: station.store.get_meta("epoch") is not None, "bootstrap")
        await app.logout()
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), "logged out")

        station.offline()
        await type_text(pilot, "cashier")
        await pilot.press("enter")
        await type_text(pilot, PASSWORD)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HomeScreen), "offline login")
        assert station.desk.clerk is not None and station.desk.clerk.mode == "offline"
        await pilot.press("f8")
        await until(pilot, lambda: isinstance(app.screen, SyncIssuesScreen), "sync issues")
        await until(
            pilot, lambda: "No open sync issues" in screen_text(app, "#issue-text"), "empty inbox"
        )
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, HomeScreen), "home again")


async def test_wrong_password_then_lockout_offline(station: Station) -> None:
    app = app_for(station, "zh")
    async with app.run_test(size=(140, 45)) as pilot:
        await log_in(pilot, app)
        await app.logout()
        station.offline()
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), "logged out")
        attempts = station.desk.policy.login_attempts

        def failures() -> int:
            clerk = station.store.cached_clerk("cashier")
            assert clerk is not None
            return 0 if clerk["locked_until"] else int(clerk["failed_attempts"])

        for attempt in range(1, attempts + 1):
            app.screen.query_one("#username").value = "cashier"  # type: ignore[attr-defined]
            app.screen.query_one("#password").focus()
            await type_text(pilot, "wrong")
            await pilot.press("enter")
            if attempt < attempts:

                def counted(n: int = attempt) -> bool:
                    return bool(failures() == n)

                await until(pilot, counted, f"failure {attempt} counted")
        await until(pilot, lambda: "锁定" in screen_text(app, "#login-error"), "locked out")
        # the right password does not help while locked
        app.screen.query_one("#password").focus()
        await type_text(pilot, PASSWORD)
        await pilot.press("enter")
        await until(
            pilot,
            lambda: screen_text(app, "#login-error").startswith("登录失败次数过多"),
            "still locked",
        )
        assert isinstance(app.screen, LoginScreen) and station.desk.clerk is None


class ReaderClock:
    """Time as a card reader makes it: 4 ms between characters."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        self.now += 0.004
        return self.now


async def test_card_swipe_opens_the_patient(
    station: Station, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(screens.cashier, "time", ReaderClock())
    app = app_for(station, "zh")
    async with app.run_test(size=(140, 45)) as pilot:
        await log_in(pilot, app)
        await until(pilot, lambda: station.store.get_meta("epoch") is not None, "bootstrap")
        station.desk.settings.ack_wait_s = 0
        from workstation.desk import RegistrationDraft

        reg = await station.register(
            RegistrationDraft("李单", "", "", "resident_id", "440524188001010014", "13912345678")
        )
        card = await station.issue_card(reg.patient_id, "", "cash")
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, CashierScreen), "cashier desk")
        cashier = app.screen
        assert isinstance(cashier, CashierScreen)
        await pilot.press(*str(card.card_no))  # a reader: one fast burst, no Enter
        await until(pilot, lambda: cashier.view is not None, "patient opened by the swipe")
        assert cashier.view is not None and cashier.view.patient.name == "李单"
        await until(pilot, lambda: cashier.query_one("#search").value == "", "search box cleared")  # type: ignore[attr-defined]


async def test_a_refusal_arriving_in_the_background_is_announced(station: Station) -> None:
    from local_db.store import ServerResult
    from workstation.desk import RegistrationDraft

    app = app_for(station, "en")
    async with app.run_test(size=(140, 45)) as pilot:
        await log_in(pilot, app)
        await until(pilot, lambda: station.store.get_meta("epoch") is not None, "bootstrap")
        station.offline()  # hold the op in the outbox
        station.desk.settings.ack_wait_s = 0
        done = await station.register(
            RegistrationDraft("李单", "", "", "resident_id", "440524188001010014", "13912345678")
        )
        # what the engine does when the server's answer comes back refused
        station.store.record_results(
            [
                ServerResult(
                    op_id=done.op_id,
                    status="rejected",
                    code="clerk_unknown",
                    params={"clerk_id": "x"},
                )
            ]
        )
        station.desk._notify()
        await until(pilot, lambda: any("F8" in note for note in app.told), "refusal announced")  # type: ignore[attr-defined]
        assert "1 open sync issues" in " ".join(app.told)  # type: ignore[attr-defined]


async def test_the_status_bar_stays_current_under_a_dialog(station: Station) -> None:
    """A dialog (here the command palette) covers the screen but not its status
    bar: the pending count there must keep up with the work done meanwhile."""
    from textual.command import CommandPalette

    from screens.widgets import StatusBar
    from tests.test_sync_end_to_end import ZHANG

    app = app_for(station, "en")
    async with app.run_test(size=(140, 45)) as pilot:
        await log_in(pilot, app)
        await until(pilot, lambda: station.store.get_meta("epoch") is not None, "bootstrap")
        station.offline()
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "command palette")
        bar = app.screen_stack[-2].query_one(StatusBar)
        before = station.store.outbox_stats().pending  # the login's shift may still wait
        await station.register(ZHANG)
        await until(
            pilot,
            lambda: f"Pending {before + 1}" in str(bar.render()),
            "pending count under dialog",
        )


async def test_switching_language_keeps_the_results_readable(station: Station) -> None:
    """The Chinese column labels are shorter than the English ones: after a
    switch each column is still as wide as what it shows, under a label in
    the new language. (In the demo, columns made again on a switch were sized
    by their labels alone; this single-row case did not reproduce that, so it
    guards the outcome, not the cause.)"""
    from rich.cells import cell_len
    from textual.widgets import DataTable
    from textual.widgets.data_table import ColumnKey

    from tests.test_sync_end_to_end import ZHANG

    app = app_for(station, "en")
    async with app.run_test(size=(140, 45)) as pilot:
        await log_in(pilot, app)
        await until(pilot, lambda: station.store.get_meta("epoch") is not None, "bootstrap")
        await station.register(ZHANG)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, CashierScreen), "cashier desk")
        await type_text(pilot, "zsf")
        table = app.screen.query_one("#results", DataTable)
        await until(pilot, lambda: table.row_count == 1, "the patient found")
        for language in ("zh", "en"):
            await pilot.press("f9")
            await until(pilot, lambda: app.i18n.language == language, language)  # noqa: B023
            await pilot.pause()
            row = table.get_row_at(0)
            for column, cell in zip(table.columns.values(), row, strict=True):
                assert column.content_width >= cell_len(str(cell)), (language, column.key, cell)
            assert str(table.columns[ColumnKey("col.doc")].label) == app.i18n.t("col.doc")


async def test_demo_accounts_and_secrets_store_follow_the_language(station: Station) -> None:
    demo = DemoInfo(
        accounts=[("supervisor", "supervisor123", ("supervisor", "cashier"))],
        secrets_description=("文件 /x/secrets.json（明确选择；未加密）", "file /x/secrets.json"),
    )
    app = make_app(station.desk, language="zh", cursor_blink=False, demo=demo)
    async with app.run_test(size=(140, 45)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), "login screen")
        text = screen_text(app, "#demo-text")
        assert "收费员、主管" in text and "supervisor123" in text
        assert "设备凭证保存在：文件 /x/secrets.json（明确选择；未加密）" in text
        assert "cashier" not in text.replace("supervisor", "")  # no English role names
        await pilot.press("f9")
        await until(pilot, lambda: "Demo accounts" in screen_text(app, "#demo-text"), "English")
        text = screen_text(app, "#demo-text")
        assert "cashier, supervisor" in text
        assert "Device token kept in: file /x/secrets.json" in text


def type_ahead(app: WindowApp, text: str) -> None:
    """Keys as the terminal delivers them when they come faster than the app
    handles them (a clerk typing ahead while the app is busy, a reader that
    types): all queued before the first is handled."""
    named = {"\t": "tab", "\r": "enter"}
    for char in text:
        app.post_message(events.Key(named.get(char, char), char))


@pytest.mark.parametrize("next_field", ["\t", "\r"], ids=["tab", "enter"])
async def test_keys_typed_ahead_land_in_the_field_they_were_typed_for(
    station: Station, next_field: str
) -> None:
    app = app_for(station, "zh")
    async with app.run_test(size=(140, 45)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), "login screen")
        type_ahead(app, f"cashier{next_field}{PASSWORD}\r")
        await until(pilot, lambda: isinstance(app.screen, HomeScreen), "home screen")
        await open_registration_form(pilot, app, station)
        # ID number, name, (sex, birth date filled from the ID), phone, address
        type_ahead(app, f"{ID_NO}{next_field}张三丰\t\t\t13812345678{next_field}北京市海淀区")
        form = app.screen

        def value(field: str) -> str:
            return str(form.query_one(f"#{field}", Input).value)

        await until(pilot, lambda: value("address") == "北京市海淀区", "typed ahead")
        assert (value("doc_no"), value("name"), value("phone")) == (
            ID_NO,
            "张三丰",
            "13812345678",
        )


@pytest.mark.parametrize(
    ("command", "told"),
    [
        (("end-sessions", "cashier"), "Your session was ended"),
        (("disable-clerk", "cashier"), "Your account has been disabled"),
        (("reset-password", "cashier", "--password", "Nurse-station-7"), "Your session was ended"),
    ],
)
async def test_a_session_the_server_ends_sends_the_clerk_back_to_login(
    station: Station, command: tuple[str, ...], told: str
) -> None:
    """``workstation admin ...`` at the server: the clerk at the cashier desk
    is sent back to the login screen and told why, at the next sync (not
    logged in again in the background with the password typed earlier), and
    cannot log in offline with the cached verifier either."""
    from workstation.cli import main

    app = app_for(station, "en")
    async with app.run_test(size=(140, 45)) as pilot:
        await log_in(pilot, app)
        await until(pilot, lambda: station.store.get_meta("epoch") is not None, "bootstrap")
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, CashierScreen), "cashier desk")
        assert station.store.cached_clerk("cashier") is not None
        main(["admin", "--db", station.central.url, *command])
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), "back at the login screen")
        await until(pilot, lambda: told in screen_text(app, "#login-error"), "told why")
        assert any(told in note for note in app.told)  # type: ignore[attr-defined]
        assert station.desk.clerk is None
        await until(pilot, lambda: station.store.cached_clerk("cashier") is None, "forgotten")


async def test_the_it_administrator_has_no_desk_at_the_window(station: Station) -> None:
    """The admin role handles no money and no patient data: its home screen
    says so (and where clerks and workstations are managed), no F-key opens a
    desk, and the server sends it nothing to sync."""
    station.central.clerk("it", ["admin"], name="刘洋")
    app = app_for(station, "en")
    async with app.run_test(size=(140, 45)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), "login screen")
        await type_text(pilot, "it")
        await pilot.press("enter")
        await type_text(pilot, PASSWORD)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HomeScreen), "home screen")
        await until(pilot, lambda: "Choose your desk" in screen_text(app, "#desks"), "desks")
        desks = screen_text(app, "#desks")
        assert "handles no money and no patient data" in desks and "F2" not in desks
        await pilot.press("f2")
        await pilot.pause(0.1)
        assert isinstance(app.screen, HomeScreen)
        await until(
            pilot,
            lambda: station.engine.status.error_code == "role_no_data",
            "the server's refusal in the status",
        )
        assert station.store.get_meta("epoch") is None  # no patient data came
