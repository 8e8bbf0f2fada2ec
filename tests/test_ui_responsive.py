"""The window never waits on the store: a key press is handled while the sync
engine holds the replica, a bootstrap shows its progress while the window
stays usable, and screens follow the rows that changed instead of polling."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from local_db.store import LocalStore
from screens.cashier import CashierScreen
from screens.widgets import StatusBar
from tests.harness import Central, Station
from workstation.app import WindowApp, make_app
from workstation.desk import PatientHit, RegistrationDraft

ZHANG = RegistrationDraft("张三丰", "F", "", "resident_id", "11010519491231002X", "13812345678")
LI = RegistrationDraft("李单", "M", "", "resident_id", "440524188001010014", "13912345678")


async def until(
    pilot: Pilot, condition: Callable[[], bool], what: str, timeout_s: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await pilot.pause(0.01)


def app_of(station: Station, *, run_sync: bool = False) -> WindowApp:
    return make_app(
        station.desk,
        language="zh",
        run_sync=run_sync,
        status_interval_s=0.5,
        cursor_blink=False,
    )


async def cashier(pilot: Pilot, app: WindowApp) -> CashierScreen:
    await app.push_screen(CashierScreen())
    await until(pilot, lambda: isinstance(app.screen, CashierScreen), "cashier desk")
    screen = app.screen
    assert isinstance(screen, CashierScreen)
    return screen


def info(screen: CashierScreen) -> str:
    return str(screen.query_one("#results-info", Static).render())


async def test_a_key_press_is_handled_while_the_engine_holds_the_store(
    central_sqlite: Central, tmp_path: Path
) -> None:
    central_sqlite.clerk("cash", ["cashier"])
    station = Station(central_sqlite, tmp_path / "a", "a")
    await station.enroll_and_login("cash")
    await station.register(ZHANG)
    await station.register(LI)
    await station.engine.sync_once()
    app = app_of(station)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await cashier(pilot, app)
        held, release = threading.Event(), threading.Event()

        def engine_in_a_long_transaction() -> None:
            with station.store.transaction():
                held.set()
                release.wait(5.0)  # as a long pull or rebase would

        holder = threading.Thread(target=engine_in_a_long_transaction)
        holder.start()
        held.wait()
        handled: list[float] = []
        shown_at: dict[str, float] = {}
        show = screen._show_hits

        def timed(asked: int, hits: list[PatientHit], more: bool, then_focus: bool = False) -> None:
            show(asked, hits, more, then_focus)
            if asked == screen._asked and hits:
                shown_at.setdefault(screen.query_one("#search", Input).value, time.perf_counter())

        screen._show_hits = timed  # type: ignore[method-assign]
        try:
            for query in ("zsf", "ld"):
                search = screen.query_one("#search", Input)
                search.value = ""
                await pilot.pause(0.15)
                for key in query:
                    started = time.perf_counter()
                    await pilot.press(key)
                    typed = search.value

                    def answered(t: str = typed) -> bool:
                        return t in shown_at

                    await until(pilot, answered, f"results for {typed}")
                    handled.append(shown_at[typed] - started)
                    await pilot.pause(0.12)  # a clerk's pace
                    shown_at.clear()
                status_started = time.perf_counter()
                app.refresh_status()
                assert time.perf_counter() - status_started < 0.05
            assert holder.is_alive(), "the store was held throughout"
        finally:
            release.set()
            holder.join()
        # every key was handled (its results shown) while the store was held
        assert max(handled) < 1.0, handled
        assert statistics.median(handled) < 0.1, handled
    await station.close()


class SlowImage(httpx.AsyncBaseTransport):
    """The link to the server, with the replica image trickling in."""

    def __init__(self, inner: httpx.AsyncBaseTransport, chunk: int = 2048, pause_s: float = 0.01):
        self.inner, self.chunk, self.pause_s = inner, chunk, pause_s

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != "/sync/snapshot/image" or response.status_code != 200:
            return response
        source = response.stream
        assert isinstance(source, httpx.AsyncByteStream)
        stream: httpx.AsyncByteStream = source
        chunk, pause_s = self.chunk, self.pause_s

        class Trickle(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for data in stream:
                    for start in range(0, len(data), chunk):
                        yield data[start : start + chunk]
                        await asyncio.sleep(pause_s)

            async def aclose(self) -> None:
                await stream.aclose()

        return httpx.Response(
            response.status_code, headers=response.headers, stream=Trickle(), request=request
        )


async def test_a_bootstrap_shows_progress_and_the_window_stays_responsive(
    central_sqlite: Central, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    central_sqlite.clerk("cash", ["cashier"])
    seeder = Station(central_sqlite, tmp_path / "seed", "seed")
    await seeder.enroll_and_login("cash")
    for i in range(40):
        doc_no = f"E{i:08d}"
        await seeder.register(
            RegistrationDraft("张三丰", "F", "1949-12-31", "passport", doc_no, "13812345678")
        )
    await seeder.engine.sync_once()
    await seeder.close()

    station = Station(
        central_sqlite, tmp_path / "new", "new", transport=SlowImage(central_sqlite.transport())
    )
    code = central_sqlite.auth.create_enrollment_code("new")
    from workstation.desk.core import enroll_workstation

    await enroll_workstation(station.client, station.store, code, "new")
    await station.desk.login("cash", "secret-123")
    # the install (under the store's write lock) takes a while, as at 1,000,000 patients
    take = LocalStore._take_local_tables

    def slow_install(staged: LocalStore, path: str) -> None:
        time.sleep(1.0)
        take(staged, path)

    monkeypatch.setattr(LocalStore, "_take_local_tables", slow_install)

    # every text a status bar is given, however briefly it shows
    seen: list[str] = []
    update = StatusBar.update

    def recorded(bar: StatusBar, content: object = "", **kwargs: object) -> None:
        text = str(content)
        if not seen or seen[-1] != text:
            seen.append(text)
        update(bar, content, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(StatusBar, "update", recorded)

    def status_text() -> str:
        return seen[-1] if seen else ""

    app = app_of(station, run_sync=True)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await cashier(pilot, app)
        await until(pilot, lambda: any("█" in t or "░" in t for t in seen), "progress bar")
        assert any("MB" in text and "%" in text for text in seen), seen
        # a search during the download says the data is still loading, at once
        await pilot.press("z")
        await until(pilot, lambda: "仍在下载" in info(screen), "search says loading", timeout_s=1.0)

        # during the install, keys are handled at once too
        await until(pilot, lambda: "装入" in status_text(), "install", timeout_s=30)
        started = time.perf_counter()
        await pilot.press("s")
        await until(pilot, lambda: screen.query_one("#search", Input).value == "zs", "typed")
        await until(
            pilot,
            lambda: screen._asked >= 2 and screen._hits == [] and "仍在下载" in info(screen),
            "answered",
        )
        assert time.perf_counter() - started < 0.5

        await until(pilot, lambda: "● 在线" in status_text(), "online", timeout_s=20)
        await until(pilot, lambda: station.desk.replica_ready(), "replica ready")
        # never called online before the patient data was in place
        first_online = next(i for i, text in enumerate(seen) if "● 在线" in text)
        assert all("█" not in text and "装入" not in text for text in seen[first_online:])
        screen.query_one("#search", Input).value = ""
        await pilot.press(*"zsf")
        await until(pilot, lambda: len(screen._hits) > 0, "found after the bootstrap")
    await station.close()


async def test_screens_follow_changed_rows_without_polling(
    central_sqlite: Central, tmp_path: Path
) -> None:
    central_sqlite.clerk("cash", ["cashier"])
    a = Station(central_sqlite, tmp_path / "a", "a")
    b = Station(central_sqlite, tmp_path / "b", "b")
    await a.enroll_and_login("cash")
    await b.enroll_and_login("cash")
    reg = await a.register(ZHANG)
    await a.register(LI)
    await a.engine.sync_once()
    await b.engine.sync_once()

    reads: list[str] = []
    for name in ("patient", "search", "hits"):
        original = getattr(a.desk, name)

        def counted(
            *args: object, _name: str = name, _original: Callable[..., object] = original
        ) -> object:
            reads.append(_name)
            return _original(*args)

        setattr(a.desk, name, counted)

    app = app_of(a)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await cashier(pilot, app)
        await pilot.press(*"zsf")
        await until(
            pilot, lambda: len(screen._hits) == 1 and screen.view is not None, "patient shown"
        )
        table = screen.query_one("#results", DataTable)
        assert table.get_cell(reg.patient_id, "col.card") == ""
        # idle: nothing is read again
        reads.clear()
        await pilot.pause(2.5)
        assert reads == []

        # another window issues a card and tops it up; this one pulls
        card = await b.issue_card(reg.patient_id, "100", "cash")
        await b.engine.sync_once()
        await a.engine.sync_once()
        await until(
            pilot,
            lambda: screen.view is not None and screen.view.balance_fen == 10_000,
            "the panel follows the pull",
        )
        await until(
            pilot,
            lambda: table.get_cell(reg.patient_id, "col.card") == card.card_no,
            "the result row updated by key",
        )
        assert table.row_count == 1 and "search" not in reads  # not searched again
    await a.close()
    await b.close()
