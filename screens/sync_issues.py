"""Sync issues: every operation the central server did not take as the clerk
saw it (refused, changed, held for review). Nothing here is silent: an issue
stays open until a clerk has acted on it and marked it handled."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Input, Label, Static

from workstation.desk import Rejection

from .base import DeskScreen
from .widgets import DeskInput, StatusBar


class SyncIssuesScreen(DeskScreen[None]):
    BINDINGS = [
        Binding("f10", "resolve", "key.resolve", id="resolve"),
        Binding("f5", "toggle_resolved", "key.show_resolved", id="toggle_resolved"),
        Binding("escape", "back", "key.back", id="back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.show_resolved = False
        self.issues: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Label(self.t("issues.title"), classes="title", id="issues-title")
        yield Static(self.t("issues.help"), classes="hint", id="issues-help")
        yield DataTable(id="issues-table", cursor_type="row", zebra_stripes=True)
        with Vertical(id="issue-detail"):
            yield Static("", id="issue-text")
            yield Label(self.t("issues.note"), id="note-label")
            yield DeskInput(id="note", max_length=200)
        yield Footer()

    def on_mount(self) -> None:
        self._set_columns()
        self.reload()
        self.query_one("#issues-table", DataTable).focus()

    def _set_columns(self) -> None:
        table = self.query_one("#issues-table", DataTable)
        table.clear(columns=True)
        for key in ("col.time", "col.state", "col.operation", "col.problem", "col.detail"):
            table.add_column(self.t(key), key=key)

    def apply_language(self) -> None:
        super().apply_language()
        self.query_one("#issues-title", Label).update(self.t("issues.title"))
        self.query_one("#issues-help", Static).update(self.t("issues.help"))
        self.query_one("#note-label", Label).update(self.t("issues.note"))
        self._set_columns()
        self._show(self.issues)

    def reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="issues", exit_on_error=False)
    def _load(self) -> None:
        issues = self.desk.issues(None if self.show_resolved else "open")
        self.app.call_from_thread(self._show, issues)

    def problem(self, issue: dict[str, Any]) -> str:
        return self.i18n.rejection(Rejection(code=issue["code"], params=issue["params"]))

    def detail(self, issue: dict[str, Any]) -> str:
        """What the operation was about, as its command summarises itself."""
        return "  ".join(fact.text(self.i18n.language) for fact in issue.get("facts", ()))

    def _show(self, issues: list[dict[str, Any]]) -> None:
        self.issues = issues
        table = self.query_one("#issues-table", DataTable)
        with self.app.batch_update():
            table.clear()
            for issue in issues:
                kind = self.t(f"issues.kind.{issue['kind']}")
                state = self.t(f"issues.state.{issue['status']}")
                table.add_row(
                    issue["summary"].get("at", "")[:16].replace("T", " "),
                    f"{state}/{kind}",
                    self.i18n.command(issue["summary"].get("kind", "")),
                    self.problem(issue),
                    self.detail(issue),
                    key=str(issue["issue_id"]),
                )
        self._show_detail()

    def _current(self) -> dict[str, Any] | None:
        table = self.query_one("#issues-table", DataTable)
        if not self.issues or table.cursor_row < 0 or table.cursor_row >= len(self.issues):
            return None
        return self.issues[table.cursor_row]

    @on(DataTable.RowHighlighted, "#issues-table")
    def _highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        issue = self._current()
        text = self.query_one("#issue-text", Static)
        if issue is None:
            text.update(self.t("issues.none"))
            return
        lines = [
            f"{self.i18n.command(issue['summary'].get('kind', ''))} · "
            f"{issue['summary'].get('at', '')[:19].replace('T', ' ')}",
            self.problem(issue),
            self.detail(issue),
        ]
        if issue["status"] == "resolved":
            lines.append(f"{self.t('issues.state.resolved')}: {issue.get('resolution') or ''}")
        text.update("\n".join(lines))

    @on(DataTable.RowSelected, "#issues-table")
    def _selected(self) -> None:
        self.query_one("#note", Input).focus()

    @on(Input.Submitted, "#note")
    def _note_entered(self) -> None:
        self.action_resolve()

    def action_resolve(self) -> None:
        issue = self._current()
        if issue is None or issue["status"] != "open":
            return
        note = self.query_one("#note", Input).value
        if self.desk.resolve_issue(int(issue["issue_id"]), note):
            self.notify(self.t("issues.resolved"))
            self.query_one("#note", Input).value = ""
            self.query_one("#issues-table", DataTable).focus()
        self.reload()

    def action_toggle_resolved(self) -> None:
        self.show_resolved = not self.show_resolved
        self.reload()

    def action_back(self) -> None:
        self.app.pop_screen()
