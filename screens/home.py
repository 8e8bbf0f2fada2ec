"""Home: the desks this clerk's roles open, by F-key."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer, Label, Static

from workstation.desk import CASHIER_ROLES

from .base import DeskScreen
from .widgets import StatusBar

# (action, catalogue key, F-key, roles that open it, built yet)
DESKS: tuple[tuple[str, str, str, frozenset[str], bool], ...] = (
    ("cashier", "key.cashier", "F2", CASHIER_ROLES, True),
    ("admission", "key.admission", "F3", frozenset({"admission", "supervisor"}), False),
    ("registrar", "key.registrar", "F4", frozenset({"registrar", "supervisor"}), False),
)


class HomeScreen(DeskScreen[None]):
    BINDINGS = [
        Binding("f2", "open_desk('cashier')", "key.cashier", id="desk_cashier"),
        Binding("f3", "open_desk('admission')", "key.admission", id="desk_admission"),
        Binding("f4", "open_desk('registrar')", "key.registrar", id="desk_registrar"),
        Binding("f11", "logout", "key.logout", id="logout"),
    ]

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Vertical(id="home-box"):
            yield Label("", classes="title", id="welcome")
            yield Static("", id="desks")
            yield Static("", classes="error", id="home-message")
        yield Footer()

    def on_mount(self) -> None:
        self.apply_language()

    def apply_language(self) -> None:
        super().apply_language()
        clerk = self.desk.clerk
        self.query_one("#welcome", Label).update(
            self.t("home.welcome", name=clerk.name if clerk else "")
        )
        lines = [self.t("home.title"), ""]
        for _, key, fkey, roles, built in DESKS:
            allowed = clerk is not None and clerk.has_any(roles)
            if not allowed:
                continue
            suffix = "" if built else " " + self.t("home.not_yet")
            lines.append(f"  {fkey}  {self.t(key)}{suffix}")
        if clerk is not None and len(lines) == 2:  # no desk opens for these roles (IT's)
            lines.append(self.t("home.no_desk"))
        self.query_one("#desks", Static).update("\n".join(lines))
        self.query_one("#home-message", Static).update("")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open_desk" and parameters:
            desk = next((d for d in DESKS if d[0] == parameters[0]), None)
            clerk = self.desk.clerk
            return desk is not None and clerk is not None and clerk.has_any(desk[3])
        return True

    def action_open_desk(self, name: str) -> None:
        desk = next(d for d in DESKS if d[0] == name)
        if not desk[4]:
            self.query_one("#home-message", Static).update(
                self.t("home.not_available", desk=self.t(desk[1]))
            )
            return
        self.app.open_desk(name)

    async def action_logout(self) -> None:
        await self.app.logout()
