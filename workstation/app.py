"""The Textual application, built by a factory from its collaborators (the
desk, the language, the demo switches, the clock) so tests can pass their own.

The sync engine runs as a worker on the app's event loop. Nothing on the
screens polls the store: the status bar shows figures the store keeps in
memory and is redrawn when the desk reports a change (and each second while
operations wait, for their age); the store tells, after each commit, which
rows changed, and the screens showing them update those rows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from textual.actions import SkipAction
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from screens.base import Translated
from screens.cashier import CashierScreen
from screens.home import HomeScreen
from screens.login import DemoInfo, LoginScreen
from screens.sync_issues import SyncIssuesScreen
from screens.widgets import DeskInput, StatusBar
from workstation.desk import CashierDesk, Desk, LoginFailed, StoreChanges
from workstation.desk.i18n import I18n
from workstation.heap import settle_heap

CSS_FILE = Path(__file__).resolve().parent.parent / "screens" / "app.tcss"


class StatusChanged(Message):
    """The desk's sync status may have changed (posted from any thread)."""


class RowsChanged(Message):
    """Rows changed in the replica since the last such message (coalesced:
    commits in a burst make one message)."""

    def __init__(self, changes: StoreChanges) -> None:
        super().__init__()
        self.changes = changes


class WindowApp(App[None]):
    CSS_PATH = str(CSS_FILE)
    COMMAND_PALETTE_BINDING = "f1"
    BINDINGS = [
        Binding("f8", "sync_issues", "key.sync_issues", id="sync_issues"),
        Binding("f9", "toggle_language", "key.language", id="language"),
        Binding("f12", "toggle_network", "key.network", id="network"),
        Binding("ctrl+q", "quit", "key.quit", id="quit", show=False, priority=True),
        # Keys typed ahead (a clerk who knows the form, while the app is busy; a
        # reader that types) are queued to the focused field one by one. Had
        # the field itself moved the focus on its Tab or Enter, the keys already
        # queued behind it would land in it, not in the next field. Bound here,
        # ahead of the field, the focus moves while the keys are dispatched, in
        # the order they were typed.
        Binding("tab", "focus_next", show=False, priority=True),
        Binding("shift+tab", "focus_previous", show=False, priority=True),
        Binding("enter", "advance", show=False, priority=True),
    ]

    def __init__(
        self,
        desk: Desk,
        i18n: I18n,
        *,
        cashier: CashierDesk | None = None,
        demo: DemoInfo | None = None,
        clock: Callable[[], datetime] | None = None,
        run_sync: bool = True,
        status_interval_s: float = 1.0,
        cursor_blink: bool = False,  # see screens.widgets.DeskInput
    ) -> None:
        super().__init__()
        self.cursor_blink = cursor_blink
        self.desk = desk  # the core every window shares
        self.cashier = cashier or CashierDesk(desk)  # the cashier window's desk
        self.i18n = i18n
        self.demo = demo
        self.clock = clock or (lambda: datetime.now().astimezone())
        self.run_sync = run_sync
        self.status_interval_s = status_interval_s
        self._status_posted = False
        self._rows_lock = threading.Lock()
        self._rows_pending: StoreChanges | None = None
        self._issues_seen = 0
        self.event_loop: asyncio.AbstractEventLoop | None = None
        self.title = i18n.t("app.title")

    # -- life cycle ------------------------------------------------------------

    def on_mount(self) -> None:
        self.event_loop = asyncio.get_running_loop()
        self.desk.subscribe(self._desk_changed)
        self.desk.watch_rows(self._rows_changed)
        # The status bar shows open issues; new ones are announced with a toast.
        self._issues_seen = self.desk.status().open_issues
        self.push_screen(LoginScreen(self.demo))
        if self.run_sync:
            self.run_worker(self.desk.engine.run(), name="sync", group="sync", exit_on_error=False)
        if self.status_interval_s > 0:
            # the age of the oldest waiting operation moves with the clock
            self.set_interval(self.status_interval_s, self._tick_status)
        self.call_after_refresh(self.refresh_status)

    def on_unmount(self) -> None:
        self.desk.engine.stop()

    def _desk_changed(self) -> None:
        # high-rate: let only one notice wait in the queue
        if not self._status_posted:
            self._status_posted = True
            self.post_message(StatusChanged())

    def on_status_changed(self, _message: StatusChanged) -> None:
        self._status_posted = False
        self.refresh_status()

    def _rows_changed(self, changes: StoreChanges) -> None:
        """From the committing thread: merge into the one waiting message."""
        with self._rows_lock:
            waiting = self._rows_pending
            self._rows_pending = changes if waiting is None else waiting.merged(changes)
        if waiting is None:
            self.post_message(RowsChanged(changes))
        self._desk_changed()  # the figures in the status bar may have moved too

    def on_rows_changed(self, _message: RowsChanged) -> None:
        with self._rows_lock:
            changes, self._rows_pending = self._rows_pending, None
        if changes is None:
            return
        for screen in self.screen_stack:
            watcher = getattr(screen, "rows_changed", None)
            if watcher is not None:
                watcher(changes)

    def refresh_status(self) -> None:
        if not self.screen_stack:
            return
        if self.desk.ended is not None and self.desk.clerk is None:
            self._back_to_login(self.desk.ended)
        status = self.desk.status()
        now = self.clock()
        if status.open_issues > self._issues_seen and self.desk.clerk is not None:
            # a refusal that arrived in the background must not wait to be noticed
            self.notify(
                self.i18n.t("issues.arrived", count=status.open_issues),
                severity="warning",
                timeout=15,
            )
        self._issues_seen = status.open_issues
        # every screen in the stack: a dialog leaves the status bar beneath it in view
        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.show(status, self.i18n, self.desk.clerk, now)

    def _tick_status(self) -> None:
        status = self.desk.status()
        if status.pending or status.progress is not None:
            self.refresh_status()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Worker failures land here, once, as a notice the clerk can read."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.notify(
                self.i18n.t("error.unexpected", error=f"{type(error).__name__}: {error}"),
                severity="error",
                timeout=15,
            )

    # -- navigation ------------------------------------------------------------

    def logged_in(self) -> None:
        self.push_screen(HomeScreen())
        self.refresh_status()
        self.run_worker(self.desk.warm_up, thread=True, name="warm-up", exit_on_error=False)

    def open_desk(self, name: str) -> None:
        if name == "cashier":
            self.push_screen(CashierScreen())

    def _back_to_login(self, why: LoginFailed) -> None:
        """The server ended the clerk's session (revoked, disabled, locked
        out): whatever screen they were on, back to the login screen, told why."""
        self.desk.ended = None
        while len(self.screen_stack) > 2 and not isinstance(self.screen, LoginScreen):
            self.pop_screen()
        message = why.message(self.i18n.language)
        if isinstance(self.screen, LoginScreen):
            self.screen.show_error(message)
        self.notify(message, severity="error", timeout=20)

    async def logout(self) -> None:
        await self.desk.logout()
        while len(self.screen_stack) > 2 and not isinstance(self.screen, LoginScreen):
            self.pop_screen()
        self.refresh_status()

    # -- app-wide actions ------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_network":
            return self.demo is not None and self.desk.network is not None
        if action == "sync_issues":
            return self.desk.clerk is not None and not isinstance(self.screen, SyncIssuesScreen)
        if action == "advance":  # otherwise Enter is the screen's or the field's
            return self._advancing_field() is not None
        return True

    def _advancing_field(self) -> DeskInput | None:
        focused = self.focused
        return focused if isinstance(focused, DeskInput) and focused.advance else None

    def action_advance(self) -> None:
        if self._advancing_field() is None:
            raise SkipAction()
        self.screen.focus_next()

    def action_sync_issues(self) -> None:
        if self.desk.clerk is not None and not isinstance(self.screen, SyncIssuesScreen):
            self.push_screen(SyncIssuesScreen())

    def action_toggle_language(self) -> None:
        self.i18n.toggle()
        self.title = self.i18n.t("app.title")
        for screen in self.screen_stack:
            if isinstance(screen, Translated):
                screen.apply_language()
        self.refresh_status()

    def action_toggle_network(self) -> None:
        if self.demo is None or self.desk.network is None:
            return
        cut = self.desk.toggle_network()
        self.notify(self.i18n.t("status.net_cut" if cut else "status.connecting"))
        self.refresh_status()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette lists every action this screen and the app offer, with its key."""
        seen: set[str] = set()
        for key, active in sorted(screen.active_bindings.items()):
            binding, node = active.binding, active.node
            # the screen's and the app's own actions; a text field's editing keys are not actions
            if not isinstance(node, (Screen, App)) or not binding.description or not active.enabled:
                continue
            if binding.action in seen:
                continue
            seen.add(binding.action)

            def run(action: str = binding.action, target: object = node) -> None:
                self.call_later(self.run_action, action, target)

            label = binding.key_display or key.upper()
            yield SystemCommand(f"{label}  {binding.description}", "", run)
        yield SystemCommand(
            self.i18n.t("cmd.language"),
            self.i18n.t("cmd.language.help"),
            self.action_toggle_language,
        )
        yield SystemCommand(self.i18n.t("key.quit"), self.i18n.t("cmd.quit.help"), self.action_quit)


# Seconds the app has to leave after its terminal went away before SIGALRM ends
# the process.
HANGUP_GRACE_S = 3
TERMINAL_CHECK_S = 1.0


def _has_terminal() -> bool:
    """Whether this process still has a controlling terminal."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def run_app(app: WindowApp) -> None:
    """Run the app in this terminal until the clerk quits or the terminal goes
    away. Left alone, a Textual app whose terminal was closed keeps running
    against the dead terminal (using CPU, and holding the replica and its data
    directory): when the app runs under another program (``make demo``) only
    that program gets the hang-up signal. So the terminal is watched too, and
    SIGHUP or SIGTERM end the app as well.

    Leaving is safe at any moment: every clerk action is committed with its
    outbox entry before it is shown as done. If the app cannot even leave (its
    output blocked on the dead terminal), the alarm ends the process."""

    def leave() -> None:
        signal.alarm(HANGUP_GRACE_S)
        if app.event_loop is not None:
            app.event_loop.call_soon_threadsafe(app.exit)

    def watch(stop: threading.Event) -> None:
        while not stop.wait(TERMINAL_CHECK_S):
            if not _has_terminal():
                leave()
                return

    stop = threading.Event()
    if _has_terminal():
        threading.Thread(target=watch, args=(stop,), name="terminal-watch", daemon=True).start()
    previous = {
        sig: signal.signal(sig, lambda _signum, _frame: leave())
        for sig in (signal.SIGHUP, signal.SIGTERM)
    }
    settle_heap()
    try:
        app.run()
    finally:
        stop.set()
        signal.alarm(0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def make_app(
    desk: Desk,
    *,
    cashier: CashierDesk | None = None,
    language: str,
    demo: DemoInfo | None = None,
    clock: Callable[[], datetime] | None = None,
    run_sync: bool = True,
    status_interval_s: float = 1.0,
    cursor_blink: bool = False,
) -> WindowApp:
    return WindowApp(
        desk,
        I18n(language),
        cashier=cashier,
        demo=demo,
        clock=clock,
        run_sync=run_sync,
        status_interval_s=status_interval_s,
        cursor_blink=cursor_blink,
    )
