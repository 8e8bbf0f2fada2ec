"""Login: online against the central server; offline with the signing key
sealed under the password at this workstation's last online login, within the
policy's window; locked after repeated failures."""

from __future__ import annotations

from dataclasses import dataclass, field

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer, Input, Label, Static

from workstation.desk import LoginFailed

from .base import DeskScreen
from .widgets import DeskInput, StatusBar


@dataclass(frozen=True)
class DemoInfo:
    """What the demo shows on the login screen."""

    # username, password, role codes (named in the clerk's language when shown)
    accounts: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    secrets_description: tuple[str, str] = ("", "")  # (zh, en)


class LoginScreen(DeskScreen[None]):
    BINDINGS = [
        Binding("enter", "login", "key.login", id="login", show=True),
    ]

    def __init__(self, demo: DemoInfo | None = None) -> None:
        super().__init__()
        self.demo = demo

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Vertical(id="login-box"):
            yield Label(self.t("app.title"), classes="title", id="app-title")
            yield Static(self.desk.settings.hospital_name, classes="hint", id="hospital")
            yield Label(self.t("login.username"), id="username-label")
            yield DeskInput(id="username", max_length=64, advance=True)
            yield Label(self.t("login.password"), id="password-label")
            yield DeskInput(id="password", password=True, max_length=256)
            yield Static(self.t("login.hint"), classes="hint", id="login-hint")
            yield Static("", classes="error", id="login-error")
        if self.demo is not None:
            with Vertical(id="demo-box"):
                yield Static(self._demo_text(), id="demo-text")
        yield Footer()

    def _demo_text(self) -> str:
        assert self.demo is not None
        lines = [self.t("demo.title"), self.t("demo.users")]
        lines += [f"  {u:<12} {p:<16} {self.i18n.roles(r)}" for u, p, r in self.demo.accounts]
        lines.append(self.t("demo.network"))
        lines.append(self.t("demo.secrets", where=self.i18n.pick(self.demo.secrets_description)))
        return "\n".join(lines)

    def on_mount(self) -> None:
        self.query_one("#username", Input).focus()

    def apply_language(self) -> None:
        super().apply_language()
        self.query_one("#app-title", Label).update(self.t("app.title"))
        self.query_one("#username-label", Label).update(self.t("login.username"))
        self.query_one("#password-label", Label).update(self.t("login.password"))
        self.query_one("#login-hint", Static).update(self.t("login.hint"))
        self.query_one("#login-error", Static).update("")
        if self.demo is not None:
            self.query_one("#demo-text", Static).update(self._demo_text())

    def show_error(self, message: str) -> None:
        """Why the clerk is here again (the server ended their session)."""
        self.query_one("#login-error", Static).update(message)
        self.query_one("#password", Input).value = ""
        self.query_one("#username", Input).focus()

    @on(Input.Submitted, "#password")
    def _submit(self) -> None:
        self.action_login()

    def action_login(self) -> None:
        username = self.query_one("#username", Input).value
        password = self.query_one("#password", Input).value
        self.query_one("#login-error", Static).update(self.t("login.working"))
        self._login(username, password)

    @work(exclusive=True, group="login", exit_on_error=False)
    async def _login(self, username: str, password: str) -> None:
        error = self.query_one("#login-error", Static)
        try:
            clerk = await self.desk.login(username, password)
        except LoginFailed as exc:
            error.update(exc.message(self.i18n.language))
            self.query_one("#password", Input).value = ""
            self.query_one("#password", Input).focus()
            return
        self.query_one("#password", Input).value = ""
        error.update("")
        if clerk.mode == "offline":
            self.app.notify(self.t("login.offline_ok"), timeout=8)
        self.app.logged_in()
