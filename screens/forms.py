"""The cashier's forms: register a patient, issue a card, top up; a
confirmation before money changes hands; the receipt afterwards.

A form parses what was typed into a draft and lets the desk check it against
the rules (nothing written); a mistake is shown in the clerk's language under
the form, which stays open with everything typed. A form is dismissed with
the draft, which the window commits once.
"""

from __future__ import annotations

from typing import TypeVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Input, Label, Select, Static

from workstation.desk import (
    CASH,
    DOCUMENT_TYPES,
    PAYMENT_METHODS,
    RESIDENT_ID,
    SEXES,
    CommandRejected,
    DomainError,
    IssueCardDraft,
    PatientView,
    Receipt,
    RegistrationDraft,
    TopUpDraft,
    format_yuan,
)
from workstation.desk.cashier import CashierDraft, derive_from_national_id

from .base import DeskModal
from .widgets import DeskInput

DraftT = TypeVar("DraftT", bound=CashierDraft)


class ConfirmScreen(DeskModal[bool]):
    """Enter confirms, Esc goes back: the last look before money moves."""

    BINDINGS = [
        Binding("enter", "confirm", "key.confirm", id="confirm"),
        Binding("escape", "back", "key.back", id="back"),
    ]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(classes="form"):
            yield Label(self.t("confirm.title"), classes="title")
            yield Static(self.text, id="confirm-text")
            yield Static(self.t("confirm.hint"), classes="hint")
        yield Footer()

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_back(self) -> None:
        self.dismiss(False)


class ReceiptScreen(DeskModal[None]):
    BINDINGS = [
        Binding("enter", "close", "key.close", id="close"),
        Binding("escape", "close", "key.close", id="close_esc", show=False),
    ]

    def __init__(self, receipt: Receipt, path: str) -> None:
        super().__init__()
        self.receipt = receipt
        self.path = path

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="form"):
            yield Label(self.t("receipt.title"), classes="title", id="receipt-title")
            state = "receipt.provisional" if self.receipt.provisional else "receipt.final"
            yield Static(
                self.t(state),
                classes="error" if self.receipt.provisional else "notice",
                id="receipt-state",
            )
            yield Static(self.receipt.render(self.i18n.language), id="receipt-text")
            yield Static(self.t("receipt.saved", path=self.path), classes="hint", id="receipt-path")
        yield Footer()

    def apply_language(self) -> None:
        super().apply_language()
        self.query_one("#receipt-text", Static).update(self.receipt.render(self.i18n.language))
        self.query_one("#receipt-title", Label).update(self.t("receipt.title"))
        state = "receipt.provisional" if self.receipt.provisional else "receipt.final"
        self.query_one("#receipt-state", Static).update(self.t(state))
        self.query_one("#receipt-path", Static).update(self.t("receipt.saved", path=self.path))

    def action_close(self) -> None:
        self.dismiss(None)


class FormScreen(DeskModal[DraftT | None]):
    """A form: F10 (or Enter in its last field) checks what was typed and,
    after the clerk confirms, returns it as a draft, parsed once; the window
    commits it. Esc cancels. A mistake or a refusal by the rules is shown
    under the form, which stays open with everything typed; nothing is
    written until the window commits."""

    BINDINGS = [
        Binding("f10", "save", "key.save", id="save"),
        Binding("escape", "cancel", "key.back", id="cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._busy = False

    def error(self, text: str) -> None:
        self.query_one("#form-error", Static).update(text)

    def action_cancel(self) -> None:
        if not self._busy:
            self.dismiss(None)

    def action_save(self) -> None:
        if not self._busy:
            self._save()

    @work(exclusive=True, group="form", exit_on_error=False)
    async def _save(self) -> None:
        self._busy = True
        self.error("")  # an earlier refusal no longer applies to what is sent now
        try:
            draft = self.draft()
            await self.cashier.check(draft)
            confirmed = await self.confirm_draft(draft)
        except (DomainError, CommandRejected) as exc:
            self.error(self.explain(exc))
            return
        finally:
            self._busy = False
        if confirmed:
            self.dismiss(draft)

    def draft(self) -> DraftT:
        """What the clerk typed, parsed (DomainError with the reason)."""
        raise NotImplementedError

    async def confirm_draft(self, draft: DraftT) -> bool:
        """The last look before money moves; True where nothing needs one."""
        del draft
        return True

    def method_select(self) -> Select[str]:
        return Select(
            [(self.i18n.method(m), m) for m in PAYMENT_METHODS],
            value=CASH,
            allow_blank=False,
            id="method",
        )

    async def confirm(self, text: str) -> bool:
        return bool(await self.app.push_screen_wait(ConfirmScreen(text)))


class RegisterPatientScreen(FormScreen[RegistrationDraft]):
    def __init__(self, doc_no: str = "", name: str = "") -> None:
        super().__init__()
        self.prefill_doc_no = doc_no
        self.prefill_name = name

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="form"):
            yield Label(self.t("form.register.title"), classes="title")
            with Horizontal(classes="row"):
                with Vertical():
                    yield Label(self.t("form.doc_type"))
                    yield Select(
                        [(self.i18n.document(d), d) for d in DOCUMENT_TYPES],
                        value=RESIDENT_ID,
                        allow_blank=False,
                        id="doc_type",
                    )
                with Vertical():
                    yield Label(self.t("form.doc_no"))
                    yield DeskInput(self.prefill_doc_no, id="doc_no", max_length=40, advance=True)
            with Horizontal(classes="row"):
                with Vertical():
                    yield Label(self.t("form.name"))
                    yield DeskInput(self.prefill_name, id="name", max_length=60, advance=True)
                with Vertical():
                    yield Label(self.t("form.sex"))
                    yield Select(
                        [(self.i18n.sex(s), s) for s in SEXES],
                        value="U",
                        allow_blank=False,
                        id="sex",
                    )
            with Horizontal(classes="row"):
                with Vertical():
                    yield Label(self.t("form.birth_date"))
                    yield DeskInput(
                        id="birth_date", max_length=20, placeholder="1980-05-17", advance=True
                    )
                with Vertical():
                    yield Label(self.t("form.phone"))
                    yield DeskInput(id="phone", max_length=30, advance=True)
            yield Label(self.t("form.address"))
            yield DeskInput(id="address", max_length=200, advance=True)
            yield Static(self.t("form.hint"), classes="hint")
            yield Static("", classes="error", id="form-error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#name" if self.prefill_doc_no else "#doc_no", Input).focus()
        if self.prefill_doc_no:
            self._fill_from_id(self.prefill_doc_no)

    @on(Input.Changed, "#doc_no")
    def _doc_no_changed(self, event: Input.Changed) -> None:
        self._fill_from_id(event.value)

    def _fill_from_id(self, doc_no: str) -> None:
        if self.query_one("#doc_type", Select).value != RESIDENT_ID:
            return
        derived = derive_from_national_id(doc_no)
        if derived is not None:
            self.query_one("#birth_date", Input).value = derived[0]
            self.query_one("#sex", Select).value = derived[1]

    def draft(self) -> RegistrationDraft:
        return self.cashier.registration(
            name=self.query_one("#name", Input).value,
            sex=str(self.query_one("#sex", Select).value),
            birth_date=self.query_one("#birth_date", Input).value,
            doc_type=str(self.query_one("#doc_type", Select).value),
            doc_no=self.query_one("#doc_no", Input).value,
            phone=self.query_one("#phone", Input).value,
            address=self.query_one("#address", Input).value,
        )


class IssueCardScreen(FormScreen[IssueCardDraft]):
    def __init__(self, view: PatientView) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        p = self.view.patient
        minimum = format_yuan(self.desk.policy.min_first_prepayment_fen)
        with Vertical(classes="form"):
            yield Label(self.t("form.issue.title"), classes="title")
            yield Static(self.t("form.issue.patient", name=p.name, doc=p.doc_no))
            yield Static(
                self.t("form.issue.card_no", card_no=self.cashier.next_card_no() or "—"),
                id="card-no",
            )
            yield Label(self.t("form.issue.amount", minimum=minimum))
            yield DeskInput(id="amount", max_length=20, placeholder=minimum)
            yield Label(self.t("form.method"))
            yield self.method_select()
            yield Static(self.t("form.hint"), classes="hint")
            yield Static("", classes="error", id="form-error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#amount", Input).focus()

    @on(Input.Submitted, "#amount")
    def _amount_entered(self) -> None:
        self.action_save()

    def draft(self) -> IssueCardDraft:
        return self.cashier.issue_card_draft(
            self.view,
            self.query_one("#amount", Input).value,
            str(self.query_one("#method", Select).value),
        )

    async def confirm_draft(self, draft: IssueCardDraft) -> bool:
        card_no = self.cashier.next_card_no() or "—"
        if draft.prepay_fen is None:
            text = self.t("confirm.issue_no_money", name=draft.patient_name, card_no=card_no)
        else:
            text = self.t(
                "confirm.issue",
                name=draft.patient_name,
                card_no=card_no,
                amount=format_yuan(draft.prepay_fen),
                method=self.i18n.method(draft.method),
            )
        return await self.confirm(text)


class TopUpScreen(FormScreen[TopUpDraft]):
    def __init__(self, view: PatientView, card_no: str = "") -> None:
        super().__init__()
        self.view = view
        self.card_no = card_no

    def compose(self) -> ComposeResult:
        with Vertical(classes="form"):
            yield Label(self.t("form.topup.title"), classes="title")
            yield Static(
                self.t(
                    "form.issue.patient", name=self.view.patient.name, doc=self.view.patient.doc_no
                )
            )
            yield Static(self.t("form.topup.balance", balance=format_yuan(self.view.balance_fen)))
            yield Label(self.t("form.topup.card"))
            yield DeskInput(self.card_no, id="card_no", max_length=40, advance=True)
            yield Label(self.t("form.topup.amount"))
            yield DeskInput(id="amount", max_length=20)
            yield Label(self.t("form.method"))
            yield self.method_select()
            yield Static(self.t("form.hint"), classes="hint")
            yield Static("", classes="error", id="form-error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#amount" if self.card_no else "#card_no", Input).focus()

    @on(Input.Submitted, "#amount")
    def _amount_entered(self) -> None:
        self.action_save()

    def draft(self) -> TopUpDraft:
        return self.cashier.top_up_draft(
            self.view,
            self.query_one("#card_no", Input).value,
            self.query_one("#amount", Input).value,
            str(self.query_one("#method", Select).value),
        )

    async def confirm_draft(self, draft: TopUpDraft) -> bool:
        text = self.t(
            "confirm.topup",
            name=draft.patient_name,
            card_no=draft.card_no,
            amount=format_yuan(draft.amount_fen),
            method=self.i18n.method(draft.method),
        )
        return await self.confirm(text)
