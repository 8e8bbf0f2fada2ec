"""The cashier desk: find the patient (search as you type, or swipe), then
register, issue a card with a first prepayment, or top up."""

from __future__ import annotations

import asyncio
import time

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Label, Static
from textual.widgets.data_table import ColumnKey

from workstation.desk import (
    CommandRejected,
    DomainError,
    Done,
    PatientHit,
    PatientView,
    StoreChanges,
)
from workstation.desk.cashier import CashierDraft
from workstation.desk.scan import BurstDetector, Scan, classify

from .base import DeskScreen
from .forms import IssueCardScreen, ReceiptScreen, RegisterPatientScreen, TopUpScreen
from .widgets import DeskInput, PatientPanel, StatusBar

SEARCH_LIMIT = 50  # the most results a query shows, on a tall terminal
COLUMNS = ("col.name", "col.sex", "col.birth", "col.doc", "col.phone", "col.card")
# keys closer together than a person types are a card or ID reader's burst:
# the search waits for the burst to end instead of running on every character
BURST_SETTLE_S = 0.04


class CashierScreen(DeskScreen[None]):
    BINDINGS = [
        Binding("f2", "register", "key.register", id="register"),
        Binding("f3", "issue_card", "key.issue_card", id="issue_card"),
        Binding("f4", "top_up", "key.top_up", id="top_up"),
        Binding("f5", "focus_search", "key.search", id="search"),
        Binding("escape", "back", "key.back", id="back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view: PatientView | None = None
        self._burst = BurstDetector()
        self._search_timer: Timer | None = None
        self._hits: list[PatientHit] = []
        self._more = False  # the query found more than the table shows
        self._asked = 0  # the latest search asked for; older answers are dropped
        self._last_key_at = 0.0

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="cashier-head"):
            yield Label(self.t("cashier.title"), classes="title", id="cashier-title")
            yield Static("", classes="hint", id="stock")
            yield Static("", classes="hint", id="working")
        yield DeskInput(placeholder=self.t("cashier.search"), id="search", max_length=80)
        yield Static("", classes="hint", id="results-info")
        with Horizontal(id="cashier-body"):
            yield DataTable(id="results", cursor_type="row", zebra_stripes=True)
            yield PatientPanel(id="patient")
        yield Footer()

    def on_mount(self) -> None:
        self._set_columns()
        self.query_one(PatientPanel).show(None, self.i18n)
        self.query_one("#search", Input).focus()
        self._load_stock()

    def _set_columns(self) -> None:
        """Add the columns, or relabel them in the current language. Relabelled,
        not made again: new columns would be sized by their labels alone, and
        the short Chinese ones cut the names and numbers beneath them."""
        table = self.query_one("#results", DataTable)
        if not table.columns:
            for key in COLUMNS:
                table.add_column(self.t(key), key=key)
            return
        for key in COLUMNS:
            column = table.columns[ColumnKey(key)]
            column.label = Text(self.t(key))
            column.content_width = max(column.content_width, cell_len(self.t(key)))
        table.refresh()

    def apply_language(self) -> None:
        super().apply_language()
        self.query_one("#cashier-title", Label).update(self.t("cashier.title"))
        self._load_stock()
        self.query_one("#search", Input).placeholder = self.t("cashier.search")
        self._set_columns()
        self._show_hits(self._asked, self._hits, self._more)
        self.query_one(PatientPanel).show(self.view, self.i18n)

    # -- search: at once, as the clerk types --------------------------------------

    @on(Input.Changed, "#search")
    def _query_changed(self, event: Input.Changed) -> None:
        now = time.monotonic()
        self._burst.feed(event.value, now)
        if self._search_timer is not None:
            self._search_timer.stop()
            self._search_timer = None
        gap = now - self._last_key_at
        self._last_key_at = now
        if gap < BURST_SETTLE_S or self._burst.is_burst():
            self._search_timer = self.set_timer(BURST_SETTLE_S, self._search_now)
        else:
            self._search_now()

    def _search_now(self) -> None:
        self._search_timer = None
        query = self.query_one("#search", Input).value
        if self._burst.is_burst():
            scan = classify(query)
            if scan is not None:
                self._burst.reset()
                self._open_scan(scan)
                return
        self._search(query)

    @on(Input.Submitted, "#search")
    def _query_submitted(self, event: Input.Submitted) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
            self._search_timer = None
        scan = classify(event.value)
        if scan is not None:
            self._burst.reset()
            self._open_scan(scan)
            return
        self._search(event.value, then_focus=True)

    def _rows_visible(self) -> int:
        """As many results as the table shows at once (it has a header line)."""
        height = self.query_one("#results", DataTable).scrollable_content_region.height
        return max(5, min(SEARCH_LIMIT, height - 1)) if height > 1 else SEARCH_LIMIT

    def _search(self, query: str, then_focus: bool = False) -> None:
        self._asked += 1
        self._searching(self._asked, query, self._rows_visible(), then_focus)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _searching(self, asked: int, query: str, limit: int, then_focus: bool) -> None:
        hits = self.desk.search(query, limit + 1) if query.strip() else []
        self.app.call_from_thread(
            self._show_hits, asked, hits[:limit], len(hits) > limit, then_focus
        )

    def _show_hits(
        self, asked: int, hits: list[PatientHit], more: bool, then_focus: bool = False
    ) -> None:
        if asked != self._asked:
            return  # the clerk has typed on: a newer search is on its way
        self._hits, self._more = hits, more
        table = self.query_one("#results", DataTable)
        with self.app.batch_update():
            table.clear()
            for hit in hits:
                table.add_row(*self._cells(hit), key=hit.patient_id)
        info = self.query_one("#results-info", Static)
        if not self.query_one("#search", Input).value.strip():
            info.update("")
        elif more:
            info.update(self.t("cashier.results_more", count=len(hits)))
        elif hits:
            info.update(self.t("cashier.results", count=len(hits)))
        elif self.desk.status().busy == "bootstrap" or not self.desk.replica_ready():
            info.update(self.t("cashier.loading"))
        else:
            info.update(self.t("cashier.no_results"))
        if then_focus and hits:
            table.focus()

    def _cells(self, hit: PatientHit) -> tuple[str, ...]:
        name = f"{hit.name} [{self.t('patient.pending_mark')}]" if hit.pending else hit.name
        return (
            name,
            self.i18n.sex(hit.sex),
            hit.birth_date,
            hit.doc_no,
            hit.phone,
            hit.card_no or "",
        )

    # -- rows that changed under the screen ---------------------------------------

    def rows_changed(self, changes: StoreChanges) -> None:
        """A commit or a pull changed rows: update what this screen shows of them."""
        if changes.touches("leases"):
            self._load_stock()
        if self.view is not None and (
            changes.everything or self.view.patient.patient_id in changes.patients
        ):
            self._load_patient(self.view.patient.patient_id)
        shown = {hit.patient_id for hit in self._hits}
        affected = shown if changes.everything else shown & changes.patients
        if affected:
            self._reload_hits(self._asked, sorted(affected))

    @work(thread=True, group="hits", exit_on_error=False)
    def _reload_hits(self, asked: int, patient_ids: list[str]) -> None:
        found = self.desk.hits(patient_ids)
        self.app.call_from_thread(self._update_hits, asked, patient_ids, found)

    def _update_hits(
        self, asked: int, patient_ids: list[str], found: dict[str, PatientHit]
    ) -> None:
        """The rows of these patients, updated in place (by key); a patient who
        is gone (a provisional registration the server refused) leaves."""
        if asked != self._asked:
            return  # the results were replaced meanwhile
        table = self.query_one("#results", DataTable)
        with self.app.batch_update():
            for patient_id in patient_ids:
                hit = found.get(patient_id)
                if hit is None:
                    if patient_id in table.rows:
                        table.remove_row(patient_id)
                    self._hits = [h for h in self._hits if h.patient_id != patient_id]
                    continue
                self._hits = [hit if h.patient_id == patient_id else h for h in self._hits]
                for key, value in zip(COLUMNS, self._cells(hit), strict=True):
                    if table.get_cell(patient_id, key) != value:
                        table.update_cell(patient_id, key, value)

    @on(DataTable.RowSelected, "#results")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.open_patient(event.row_key.value)

    @on(DataTable.RowHighlighted, "#results")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value:
            self.open_patient(event.row_key.value)

    # -- the patient ---------------------------------------------------------

    def open_patient(self, patient_id: str) -> None:
        self._load_patient(patient_id)

    @work(thread=True, exclusive=True, group="patient", exit_on_error=False)
    def _load_patient(self, patient_id: str) -> None:
        view = self.desk.patient(patient_id)
        self.app.call_from_thread(self._show_patient, view)

    def _show_patient(self, view: PatientView | None) -> None:
        # no refresh_bindings() here: no binding depends on the patient, and
        # Textual's Footer keeps every key it ever drew at each refresh
        self.view = view
        self.query_one(PatientPanel).show(view, self.i18n)

    @work(thread=True, exclusive=True, group="stock", exit_on_error=False)
    def _load_stock(self) -> None:
        """The leased number blocks: offline, a clerk must see how many cards are left."""
        cards, receipts = self.cashier.numbers_left()
        self.app.call_from_thread(self._show_stock, cards, receipts)

    def _show_stock(self, cards: int, receipts: int) -> None:
        self.query_one("#stock", Static).update(
            self.t("cashier.stock", cards=cards, receipts=receipts)
        )

    @work(thread=True, exclusive=True, group="patient", exit_on_error=False)
    def _open_scan(self, scan: Scan) -> None:
        try:
            if scan.kind == "card":
                view: PatientView | None = self.desk.patient_by_card(scan.value)
            else:
                view = self.desk.patient_by_national_id(scan.value)
        except DomainError as exc:
            self.app.call_from_thread(self.notify, self.explain(exc), severity="error")
            return
        if view is None:  # an ID card of someone not yet registered: register them
            self.app.call_from_thread(self._register, scan.value, scan.name)
            return
        self.app.call_from_thread(self._scanned, view)

    def _scanned(self, view: PatientView) -> None:
        self.query_one("#search", Input).value = ""
        self._show_patient(view)

    # -- actions -------------------------------------------------------------

    def action_focus_search(self) -> None:
        search = self.query_one("#search", Input)
        search.focus()
        search.select_all() if hasattr(search, "select_all") else None

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_register(self) -> None:
        self._register("", "")

    def _register(self, doc_no: str, name: str) -> None:
        self.app.push_screen(RegisterPatientScreen(doc_no, name), self._commit)

    def action_issue_card(self) -> None:
        if self.view is None:
            self.notify(self.t("need.patient"), severity="warning")
            return
        self.app.push_screen(IssueCardScreen(self.view), self._commit)

    def action_top_up(self) -> None:
        if self.view is None:
            self.notify(self.t("need.patient"), severity="warning")
            return
        card = self.view.active_card
        if card is None:
            self.notify(self.t("need.card"), severity="warning")
            return
        self.app.push_screen(TopUpScreen(self.view, card.card_no), self._commit)

    # -- the window commits a form's draft, once ----------------------------------

    def _commit(self, draft: CashierDraft | None) -> None:
        if draft is not None:
            self._committing(draft)

    @work(exclusive=False, group="commit", exit_on_error=False)
    async def _committing(self, draft: CashierDraft) -> None:
        working = self.query_one("#working", Static)
        working.update(self.t("form.working"))
        try:
            done = await self.cashier.commit(draft)
        except (DomainError, CommandRejected) as exc:
            self.notify(self.explain(exc), severity="error", timeout=15)
            return
        finally:
            working.update("")
        view = await asyncio.to_thread(self.desk.patient, done.patient_id)
        self._show_patient(view)
        if done.kind == "register_patient":
            name = view.patient.name if view else ""
            self._announce(
                done, self.t("done.mapped" if done.mapped else "done.registered", name=name)
            )
        elif done.kind == "issue_card":
            self._announce(done, self.t("done.card", card_no=done.card_no))
        elif done.receipt is not None:
            self._announce(done, self.t("done.top_up", receipt_no=done.receipt.receipt_no))
        if done.receipt is not None and done.receipt_path is not None:
            self.app.push_screen(ReceiptScreen(done.receipt, str(done.receipt_path)))

    def _announce(self, done: Done, text: str) -> None:
        if done.rejection is not None:
            self.notify(
                self.t("done.refused", reason=self.i18n.rejection(done.rejection)),
                severity="error",
                timeout=15,
            )
            return
        if not done.confirmed:
            text += self.t("done.offline_note")
        self.notify(text)
