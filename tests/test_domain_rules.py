"""The clerk's commands, decided against an in-memory DeskState."""

from __future__ import annotations

from typing import Any

import pytest

from domain.cards import CardRow, CardStatus
from domain.cashier.cancel_card import CancelCard
from domain.cashier.issue_card import IssueCard, Prepayment
from domain.cashier.top_up import TopUp
from domain.commands import Decision, decide, parse_command
from domain.errors import DomainError, Rejection
from domain.identity import check_char
from domain.leases import NUMBER_BLOCK
from domain.ledger import TransferRow, balance
from domain.numbers import (
    Series,
    card_no_for,
    card_sequence,
    is_card_no,
    luhn_digit,
    number_for,
    parse_card_no,
    receipt_no_for,
    receipt_sequence,
)
from domain.patients import PatientAliasRow, PatientRow, get_patient
from domain.patients.register import RegisterPatient
from domain.state import Actor, OpContext, Policy
from tests.fake_state import FakeState

DEVICE = "dev-1"
OTHER_DEVICE = "dev-2"
AT = "2024-06-01T10:00:00+08:00"
GB_EXAMPLE = "11010519491231002X"  # female, 1949-12-31
MALE_EXAMPLE = "440524188001010014"  # male, 1880-01-01

LEASED_CARDS = (100_000_000, 100_000_099)
LEASED_RECEIPTS = (1, 100)
OTHER_CARDS = (100_000_100, 100_000_199)  # leased to another device


def fake_state() -> FakeState:
    """Card and receipt blocks leased to DEVICE, another card block to OTHER_DEVICE."""
    state = FakeState()
    state.lease(NUMBER_BLOCK, Series.CARD.value, *LEASED_CARDS, DEVICE)
    state.lease(NUMBER_BLOCK, Series.RECEIPT.value, *LEASED_RECEIPTS, DEVICE)
    state.lease(NUMBER_BLOCK, Series.CARD.value, *OTHER_CARDS, OTHER_DEVICE)
    return state


def card(state: FakeState, card_no: str) -> CardRow:
    found = state.get(CardRow, card_no)
    assert found is not None
    return found


def account_balance(state: FakeState, account: str) -> int:
    return balance(state, account).fen


def map_alias(state: FakeState, alias_id: str, patient_id: str) -> None:
    state.put(PatientAliasRow(alias_id=alias_id, patient_id=patient_id, mapped_at=AT))


def ctx(*roles: str, device: str = DEVICE, op_id: str = "op-1") -> OpContext:
    return OpContext(
        actor=Actor(clerk_id="clerk-1", roles=frozenset(roles or ("cashier",)), device_id=device),
        at=AT,
        op_id=op_id,
    )


def accepted(state: FakeState, command: Any, context: OpContext | None = None) -> Decision:
    outcome = decide(state, command, context or ctx("cashier"))
    assert isinstance(outcome, Decision), outcome
    return outcome


def rejected(state: FakeState, command: Any, context: OpContext | None = None) -> Rejection:
    outcome = decide(state, command, context or ctx("cashier"))
    assert isinstance(outcome, Rejection), outcome
    zh, en = outcome.message("zh"), outcome.message("en")
    assert zh and en and zh != en
    assert "{" not in zh and "{" not in en
    return outcome


def register(**changes: Any) -> RegisterPatient:
    fields: dict[str, Any] = {
        "patient_id": "P-1",
        "name": "张三丰",
        "sex": "F",
        "birth_date": "1949-12-31",
        "doc_type": "resident_id",
        "doc_no": GB_EXAMPLE,
        "phone": "13812345678",
        "address": "北京市东城区",
    }
    fields.update(changes)
    return RegisterPatient(**fields)


CARD_1 = card_no_for(LEASED_CARDS[0])
CARD_2 = card_no_for(LEASED_CARDS[0] + 1)
RECEIPT_1 = receipt_no_for(1)
RECEIPT_2 = receipt_no_for(2)


@pytest.fixture
def state() -> FakeState:
    return fake_state()


@pytest.fixture
def with_card(state: FakeState) -> FakeState:
    """Patient P-1 registered, holding active CARD_1."""
    state.apply(accepted(state, register()))
    state.apply(accepted(state, IssueCard(card_no=CARD_1, patient_id="P-1")))
    return state


def top_up(**changes: Any) -> TopUp:
    fields: dict[str, Any] = {
        "transfer_id": "T-1",
        "card_no": CARD_1,
        "amount_fen": 10_050,
        "method": "cash",
        "receipt_no": RECEIPT_1,
    }
    fields.update(changes)
    return TopUp(**fields)


def set_status(state: FakeState, card_no: str, status: CardStatus) -> None:
    state.put(card(state, card_no).model_copy(update={"status": status.value}))


# -- register_patient ---------------------------------------------------------


def test_register_valid_patient(state: FakeState) -> None:
    decision = accepted(state, register(name=" 张  三丰 ", doc_no=GB_EXAMPLE.lower()))
    assert decision.outcome == "applied"
    assert decision.notice is None
    [row] = decision.rows
    assert isinstance(row, PatientRow)
    assert row.patient_id == "P-1"
    assert row.name == "张 三丰"  # whitespace collapsed
    assert row.doc_no == GB_EXAMPLE  # normalised upper-case X
    assert row.birth_date == "1949-12-31"
    assert row.registered_at == AT
    assert row.registered_by == "clerk-1"
    assert row.registered_device == DEVICE
    assert decision.result == {"patient_id": "P-1", "mapped": False}


def test_register_foreign_name_with_middle_dot(state: FakeState) -> None:
    [row] = accepted(state, register(name="阿依古丽•买买提")).rows
    assert isinstance(row, PatientRow) and row.name == "阿依古丽·买买提"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"name": ""}, "name_empty"),
        ({"name": "   "}, "name_empty"),
        ({"name": "张\x07三"}, "name_control"),
        ({"name": "张\u200b三"}, "name_control"),  # zero-width space (format character)
        ({"name": "张三3"}, "name_characters"),
        ({"name": "张" * 31}, "field_too_long"),
        ({"address": "北" * 101}, "field_too_long"),
        ({"address": "北京\x01"}, "field_control"),
        ({"phone": "12345"}, "phone_format"),
        ({"phone": "1381234567"}, "phone_format"),  # 10 digits
        ({"phone": "23812345678"}, "phone_format"),
        ({"phone": ""}, "phone_empty"),
        ({"birth_date": "1949-12-30"}, "birth_date_mismatch"),
        ({"birth_date": "1949-02-30"}, "birth_date_impossible"),
        ({"birth_date": "2030-01-01"}, "birth_date_impossible"),
        ({"birth_date": "31/12/1949"}, "birth_date_format"),
        ({"sex": "M"}, "sex_mismatch"),
        ({"sex": "X"}, "sex_unknown"),
        ({"doc_no": "110105194912310021"}, "id_check_char"),
        ({"doc_type": "library_card"}, "document_type_unknown"),
        ({"patient_id": ""}, "command_malformed"),
        ({"patient_id": "P" * 41}, "command_malformed"),
    ],
)
def test_register_rejections(state: FakeState, changes: dict[str, Any], code: str) -> None:
    assert rejected(state, register(**changes)).code == code


def test_text_a_database_cannot_store_is_refused_when_the_command_is_built() -> None:
    for text in ("北京\x00", "北京\ud800"):
        with pytest.raises(DomainError) as caught:
            register(address=text)
        assert caught.value.code == "field_control"
        assert "地址" in caught.value.message("zh") and "Address" in caught.value.message("en")


def test_register_name_and_address_at_their_limits(state: FakeState) -> None:
    [row] = accepted(state, register(name="张" * 30, address="北" * 100)).rows
    assert isinstance(row, PatientRow) and len(row.name) == 30 and len(row.address) == 100


def test_register_other_phone_forms(state: FakeState) -> None:
    [row] = accepted(state, register(phone="+86 138 1234 5678")).rows
    assert isinstance(row, PatientRow) and row.phone == "13812345678"
    # landlines are kept as digits, so the clerk finds them by what they type
    [row] = accepted(state, register(patient_id="P-2", phone="010-12345678")).rows
    assert isinstance(row, PatientRow) and row.phone == "01012345678"
    [row] = accepted(state, register(patient_id="P-3", phone="0755-1234567-802")).rows
    assert isinstance(row, PatientRow) and row.phone == "07551234567-802"


def test_register_unknown_sex_is_allowed_with_an_id(state: FakeState) -> None:
    [row] = accepted(state, register(sex="U")).rows
    assert isinstance(row, PatientRow) and row.sex == "U"


def test_register_existing_document_maps_to_the_existing_patient(state: FakeState) -> None:
    state.apply(accepted(state, register()))
    # same document typed in lower case on another window, new provisional id
    decision = accepted(state, register(patient_id="P-2", doc_no=GB_EXAMPLE.lower()))
    assert decision.outcome == "applied_modified"
    assert decision.rows == [PatientAliasRow(alias_id="P-2", patient_id="P-1", mapped_at=AT)]
    assert decision.notice is not None and decision.notice.code == "patient_mapped"
    assert "张三丰" in decision.notice.message("zh")
    assert "张三丰" in decision.notice.message("en")
    assert decision.result == {"patient_id": "P-1", "mapped": True}
    state.apply(decision)
    # the alias now leads to the existing record
    patient = get_patient(state, "P-2")
    assert patient is not None and patient.patient_id == "P-1"


def test_register_same_document_number_of_another_type_is_a_new_patient(
    state: FakeState,
) -> None:
    state.apply(
        accepted(
            state,
            register(doc_type="passport", doc_no="E12345678", birth_date="1980-01-01", sex="M"),
        )
    )
    decision = accepted(
        state,
        register(
            patient_id="P-2",
            doc_type="hk_macau_permit",
            doc_no="H12345678",
            birth_date="1980-01-01",
            sex="M",
        ),
    )
    assert decision.outcome == "applied"
    assert isinstance(decision.rows[0], PatientRow)


def test_register_patient_id_taken(state: FakeState) -> None:
    state.apply(accepted(state, register()))
    code = rejected(state, register(doc_no=MALE_EXAMPLE, sex="M", birth_date="1880-01-01")).code
    assert code == "patient_id_taken"


def test_register_patient_id_taken_by_an_alias(state: FakeState) -> None:
    state.apply(accepted(state, register()))
    map_alias(state, "P-9", "P-1")
    code = rejected(
        state,
        register(patient_id="P-9", doc_no=MALE_EXAMPLE, sex="M", birth_date="1880-01-01"),
    ).code
    assert code == "patient_id_taken"


@pytest.mark.parametrize("role", ["cashier", "admission", "registrar", "supervisor"])
def test_register_allowed_roles(state: FakeState, role: str) -> None:
    assert accepted(state, register(), ctx(role)).outcome == "applied"


def test_register_forbidden_for_admin(state: FakeState) -> None:
    assert rejected(state, register(), ctx("admin")).code == "role_forbidden"


# -- issue_card ---------------------------------------------------------------


def test_issue_card_without_prepayment(state: FakeState) -> None:
    state.apply(accepted(state, register()))
    decision = accepted(state, IssueCard(card_no=CARD_1, patient_id="P-1"))
    [card] = decision.rows
    assert isinstance(card, CardRow)
    assert card.status == "active"
    assert card.patient_id == "P-1"
    assert card.issued_device == DEVICE
    assert decision.result == {"card_no": CARD_1, "patient_id": "P-1"}


def test_issue_card_with_first_prepayment(state: FakeState) -> None:
    state.apply(accepted(state, register()))
    command = IssueCard(
        card_no=CARD_1,
        patient_id="P-1",
        prepayment=Prepayment(
            transfer_id="T-1", amount_fen=5_000, method="wechat", receipt_no=RECEIPT_1
        ),
    )
    decision = accepted(state, command)
    card, transfer = decision.rows
    assert isinstance(card, CardRow) and isinstance(transfer, TransferRow)
    assert transfer.kind == "first_prepayment"
    assert transfer.debit_account == "clearing:wechat"
    assert transfer.credit_account == "deposit:P-1"
    assert transfer.amount_fen == 5_000
    assert transfer.card_no == CARD_1 and transfer.receipt_no == RECEIPT_1
    assert decision.result["receipt_no"] == RECEIPT_1
    state.apply(decision)
    assert account_balance(state, "deposit:P-1") == 5_000


def test_issue_card_through_an_alias_goes_to_the_real_patient(state: FakeState) -> None:
    state.apply(accepted(state, register()))
    state.apply(accepted(state, register(patient_id="P-2")))  # mapped to P-1
    [card] = accepted(state, IssueCard(card_no=CARD_1, patient_id="P-2")).rows
    assert isinstance(card, CardRow) and card.patient_id == "P-1"


def test_issue_card_number_not_leased_to_this_device(state: FakeState) -> None:
    state.apply(accepted(state, register()))
    other = card_no_for(OTHER_CARDS[0])  # leased, but to the other device
    assert (
        rejected(state, IssueCard(card_no=other, patient_id="P-1")).code == "card_number_not_leased"
    )
    unleased = card_no_for(500_000_000)
    assert (
        rejected(state, IssueCard(card_no=unleased, patient_id="P-1")).code
        == "card_number_not_leased"
    )


def test_issue_card_patient_already_has_an_active_card(with_card: FakeState) -> None:
    rejection = rejected(with_card, IssueCard(card_no=CARD_2, patient_id="P-1"))
    assert rejection.code == "patient_has_active_card"
    assert rejection.params["card_no"] == CARD_1


def test_issue_card_after_the_old_card_is_lost(with_card: FakeState) -> None:
    set_status(with_card, CARD_1, CardStatus.LOST)
    assert accepted(with_card, IssueCard(card_no=CARD_2, patient_id="P-1")).rows


def test_issue_card_number_already_issued(with_card: FakeState) -> None:
    with_card.apply(
        accepted(
            with_card,
            register(patient_id="P-2", doc_no=MALE_EXAMPLE, sex="M", birth_date="1880-01-01"),
        )
    )
    assert (
        rejected(with_card, IssueCard(card_no=CARD_1, patient_id="P-2")).code
        == "card_already_issued"
    )


def test_issue_card_unknown_patient(state: FakeState) -> None:
    assert rejected(state, IssueCard(card_no=CARD_1, patient_id="nobody")).code == "patient_unknown"


def test_issue_card_bad_check_digit(state: FakeState) -> None:
    state.apply(accepted(state, register()))
    bad = CARD_1[:-1] + str((int(CARD_1[-1]) + 1) % 10)
    assert rejected(state, IssueCard(card_no=bad, patient_id="P-1")).code == "card_format"


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (999, "amount_below_minimum"),  # policy minimum is 10 yuan
        (1, "amount_below_minimum"),
        (0, "amount_not_positive"),
        (-500, "amount_not_positive"),
        (100_000_001, "amount_too_large"),
    ],
)
def test_issue_card_prepayment_amounts(state: FakeState, amount: int, code: str) -> None:
    state.apply(accepted(state, register()))
    command = IssueCard(
        card_no=CARD_1,
        patient_id="P-1",
        prepayment=Prepayment(
            transfer_id="T-1", amount_fen=amount, method="cash", receipt_no=RECEIPT_1
        ),
    )
    rejection = rejected(state, command)
    assert rejection.code == code
    if code == "amount_below_minimum":
        assert "10.00" in rejection.message("zh")


def test_issue_card_prepayment_at_the_minimum(state: FakeState) -> None:
    state.apply(accepted(state, register()))
    command = IssueCard(
        card_no=CARD_1,
        patient_id="P-1",
        prepayment=Prepayment(
            transfer_id="T-1", amount_fen=1_000, method="cash", receipt_no=RECEIPT_1
        ),
    )
    assert len(accepted(state, command).rows) == 2


def test_issue_card_minimum_follows_the_policy(state: FakeState) -> None:
    state.the_policy = Policy(min_first_prepayment_fen=5_000)
    state.apply(accepted(state, register()))
    command = IssueCard(
        card_no=CARD_1,
        patient_id="P-1",
        prepayment=Prepayment(
            transfer_id="T-1", amount_fen=4_999, method="cash", receipt_no=RECEIPT_1
        ),
    )
    rejection = rejected(state, command)
    assert rejection.code == "amount_below_minimum"
    assert "50.00" in rejection.message("en")


def test_issue_card_receipt_number_used(with_card: FakeState) -> None:
    with_card.apply(accepted(with_card, top_up()))  # uses RECEIPT_1
    with_card.apply(
        accepted(
            with_card,
            register(patient_id="P-2", doc_no=MALE_EXAMPLE, sex="M", birth_date="1880-01-01"),
        )
    )
    command = IssueCard(
        card_no=CARD_2,
        patient_id="P-2",
        prepayment=Prepayment(
            transfer_id="T-2", amount_fen=5_000, method="cash", receipt_no=RECEIPT_1
        ),
    )
    rejection = rejected(with_card, command)
    assert rejection.code == "receipt_number_used"
    assert RECEIPT_1 in rejection.message("en")


def test_issue_card_receipt_number_not_leased(state: FakeState) -> None:
    state.apply(accepted(state, register()))
    command = IssueCard(
        card_no=CARD_1,
        patient_id="P-1",
        prepayment=Prepayment(
            transfer_id="T-1", amount_fen=5_000, method="cash", receipt_no=receipt_no_for(101)
        ),
    )
    assert rejected(state, command).code == "receipt_number_not_leased"


@pytest.mark.parametrize("role", ["admission", "registrar", "admin"])
def test_issue_card_forbidden_roles(state: FakeState, role: str) -> None:
    state.apply(accepted(state, register()))
    rejection = rejected(state, IssueCard(card_no=CARD_1, patient_id="P-1"), ctx(role))
    assert rejection.code == "role_forbidden"
    assert "发卡" in rejection.message("zh") and "issue card" in rejection.message("en")


# -- top_up -------------------------------------------------------------------


def test_top_up_cash(with_card: FakeState) -> None:
    decision = accepted(with_card, top_up(), ctx("cashier", op_id="op-7"))
    [transfer] = decision.rows
    assert isinstance(transfer, TransferRow)
    assert transfer.debit_account == f"drawer:{DEVICE}:cash"
    assert transfer.credit_account == "deposit:P-1"
    assert transfer.amount_fen == 10_050 and type(transfer.amount_fen) is int
    assert transfer.kind == "top_up" and transfer.method == "cash"
    assert transfer.receipt_no == RECEIPT_1 and transfer.card_no == CARD_1
    assert transfer.op_id == "op-7" and transfer.at == AT and transfer.clerk_id == "clerk-1"
    assert decision.result == {"receipt_no": RECEIPT_1, "patient_id": "P-1", "card_no": CARD_1}
    with_card.apply(decision)
    assert account_balance(with_card, "deposit:P-1") == 10_050
    assert account_balance(with_card, f"drawer:{DEVICE}:cash") == -10_050  # liability view


def test_top_up_on_a_card_held_under_a_mapped_patient_id(with_card: FakeState) -> None:
    # issued offline to provisional patient P-2, which the server then mapped to P-1
    map_alias(with_card, "P-2", "P-1")
    set_patient = {"patient_id": "P-2"}
    with_card.put(card(with_card, CARD_1).model_copy(update=set_patient))
    decision = accepted(with_card, top_up())
    [transfer] = decision.rows
    assert isinstance(transfer, TransferRow)
    assert transfer.patient_id == "P-1" and transfer.credit_account == "deposit:P-1"
    assert decision.result is not None and decision.result["patient_id"] == "P-1"


@pytest.mark.parametrize(
    ("method", "account"),
    [
        ("wechat", "clearing:wechat"),
        ("alipay", "clearing:alipay"),
        ("bank_card", "clearing:bank_card"),
    ],
)
def test_top_up_clearing_accounts(with_card: FakeState, method: str, account: str) -> None:
    [transfer] = accepted(with_card, top_up(method=method)).rows
    assert isinstance(transfer, TransferRow)
    assert transfer.debit_account == account
    assert transfer.credit_account == "deposit:P-1"


@pytest.mark.parametrize("role", ["cashier", "admission", "supervisor"])
def test_top_up_allowed_roles(with_card: FakeState, role: str) -> None:
    assert accepted(with_card, top_up(), ctx(role)).rows


@pytest.mark.parametrize("role", ["registrar", "admin"])
def test_top_up_forbidden_roles(with_card: FakeState, role: str) -> None:
    rejection = rejected(with_card, top_up(), ctx(role))
    assert rejection.code == "role_forbidden"
    assert role in rejection.message("en")


def test_top_up_unknown_card(with_card: FakeState) -> None:
    rejection = rejected(with_card, top_up(card_no=CARD_2))
    assert rejection.code == "card_unknown"
    assert CARD_2 in rejection.message("zh")


def test_top_up_lost_card(with_card: FakeState) -> None:
    set_status(with_card, CARD_1, CardStatus.LOST)
    assert rejected(with_card, top_up()).code == "card_lost"


@pytest.mark.parametrize("status", [CardStatus.CANCELLED, CardStatus.REPLACED])
def test_top_up_dead_card(with_card: FakeState, status: CardStatus) -> None:
    set_status(with_card, CARD_1, status)
    rejection = rejected(with_card, top_up())
    assert rejection.code == "card_not_active"
    assert status.names[0] in rejection.message("zh")
    assert status.names[1] in rejection.message("en")


def test_top_up_malformed_card_number(with_card: FakeState) -> None:
    assert rejected(with_card, top_up(card_no="12345")).code == "card_format"


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (100_000_001, "amount_too_large"),
        (0, "amount_not_positive"),
        (-1, "amount_not_positive"),
    ],
)
def test_top_up_amounts(with_card: FakeState, amount: int, code: str) -> None:
    assert rejected(with_card, top_up(amount_fen=amount)).code == code


def test_top_up_at_the_limit(with_card: FakeState) -> None:
    [transfer] = accepted(with_card, top_up(amount_fen=100_000_000)).rows
    assert isinstance(transfer, TransferRow) and transfer.amount_fen == 100_000_000


def test_top_up_limit_follows_the_policy(with_card: FakeState) -> None:
    with_card.the_policy = Policy(max_amount_fen=50_000)
    assert rejected(with_card, top_up(amount_fen=50_001)).code == "amount_too_large"


def test_top_up_unknown_payment_method(with_card: FakeState) -> None:
    assert rejected(with_card, top_up(method="bitcoin")).code == "payment_method_unknown"


def test_top_up_transfer_already_booked(with_card: FakeState) -> None:
    with_card.apply(accepted(with_card, top_up()))
    assert rejected(with_card, top_up(receipt_no=RECEIPT_2)).code == "transfer_exists"


def test_top_up_receipt_number_used(with_card: FakeState) -> None:
    with_card.apply(accepted(with_card, top_up()))
    assert rejected(with_card, top_up(transfer_id="T-2")).code == "receipt_number_used"


@pytest.mark.parametrize("receipt", ["R000000101", "X000000001", "R1", ""])
def test_top_up_receipt_number_not_leased(with_card: FakeState, receipt: str) -> None:
    assert rejected(with_card, top_up(receipt_no=receipt)).code == "receipt_number_not_leased"


def test_top_up_receipt_leased_to_another_device(with_card: FakeState) -> None:
    context = ctx("cashier", device=OTHER_DEVICE)
    assert rejected(with_card, top_up(), context).code == "receipt_number_not_leased"


# -- cancel_card --------------------------------------------------------------


def test_cancel_card(with_card: FakeState) -> None:
    context = OpContext(
        actor=Actor("boss", frozenset({"supervisor"}), DEVICE),
        at="2024-06-02T09:00:00+08:00",
        op_id="op-9",
    )
    decision = accepted(with_card, CancelCard(card_no=CARD_1, reason="卡片损坏"), context)
    [card] = decision.rows
    assert isinstance(card, CardRow)
    assert card.status == "cancelled"
    assert card.status_changed_at == "2024-06-02T09:00:00+08:00"
    assert card.issued_at == AT  # the rest of the card is unchanged
    assert decision.result == {"card_no": CARD_1, "reason": "卡片损坏"}
    with_card.apply(decision)
    # the patient may be issued a new card afterwards; money no longer goes to the old one
    assert rejected(with_card, top_up()).code == "card_not_active"
    assert accepted(with_card, IssueCard(card_no=CARD_2, patient_id="P-1")).rows


def test_cancel_a_lost_card(with_card: FakeState) -> None:
    set_status(with_card, CARD_1, CardStatus.LOST)
    [card] = accepted(with_card, CancelCard(card_no=CARD_1, reason="x"), ctx("supervisor")).rows
    assert isinstance(card, CardRow) and card.status == "cancelled"


def test_the_it_administrator_cancels_no_card(with_card: FakeState) -> None:
    refused = rejected(with_card, CancelCard(card_no=CARD_1, reason="x"), ctx("admin"))
    assert refused.code == "role_forbidden"


def test_cancel_card_twice(with_card: FakeState) -> None:
    set_status(with_card, CARD_1, CardStatus.CANCELLED)
    assert (
        rejected(with_card, CancelCard(card_no=CARD_1, reason="x"), ctx("supervisor")).code
        == "card_not_active"
    )


def test_cancel_unknown_card(with_card: FakeState) -> None:
    assert (
        rejected(with_card, CancelCard(card_no=CARD_2, reason="x"), ctx("supervisor")).code
        == "card_unknown"
    )


@pytest.mark.parametrize("role", ["cashier", "admission", "registrar"])
def test_cancel_card_forbidden_roles(with_card: FakeState, role: str) -> None:
    assert (
        rejected(with_card, CancelCard(card_no=CARD_1, reason="x"), ctx(role)).code
        == "role_forbidden"
    )


def test_cancel_card_reason_with_control_character(with_card: FakeState) -> None:
    assert (
        rejected(with_card, CancelCard(card_no=CARD_1, reason="坏\x1b"), ctx("supervisor")).code
        == "field_control"
    )


def test_actor_without_roles_is_forbidden(with_card: FakeState) -> None:
    context = OpContext(actor=Actor("c", frozenset(), DEVICE), at=AT, op_id="o")
    rejection = rejected(with_card, top_up(), context)
    assert rejection.code == "role_forbidden"
    assert rejection.params["roles"] == "-"


# -- parse_command ------------------------------------------------------------


def test_parse_command_round_trip() -> None:
    command = top_up()
    parsed = parse_command("top_up", command.model_dump(mode="json"))
    assert parsed == command
    assert isinstance(parsed, TopUp)


def test_parse_command_unknown_kind() -> None:
    with pytest.raises(DomainError) as caught:
        parse_command("refund_everything", {})
    assert caught.value.code == "command_unknown"
    assert "refund_everything" in caught.value.message("en")


@pytest.mark.parametrize(
    "payload",
    [
        {},  # every field missing
        {**top_up().model_dump(), "amount_fen": "lots"},  # wrong type
        {**top_up().model_dump(), "amount_fen": 10.5},  # fractional fen
        {**top_up().model_dump(), "extra": 1},  # unknown field
        {k: v for k, v in top_up().model_dump().items() if k != "receipt_no"},
    ],
)
def test_parse_command_malformed_payload(payload: dict[str, Any]) -> None:
    with pytest.raises(DomainError) as caught:
        parse_command("top_up", payload)
    assert caught.value.code == "command_malformed"
    assert caught.value.rejection.params["detail"]


def test_parse_command_malformed_nested_prepayment() -> None:
    payload = {"card_no": CARD_1, "patient_id": "P-1", "prepayment": {"amount_fen": 5}}
    with pytest.raises(DomainError) as caught:
        parse_command("issue_card", payload)
    assert caught.value.code == "command_malformed"
    assert "prepayment" in caught.value.rejection.params["detail"]


# -- card and receipt numbers -------------------------------------------------


def test_luhn_digit_published_example() -> None:
    # The textbook Luhn example: 7992739871 -> check digit 3 (79927398713).
    assert luhn_digit("7992739871") == "3"
    assert luhn_digit("0") == "0"


def test_card_numbers_are_ten_digits_with_a_luhn_check() -> None:
    card = card_no_for(100_000_000)
    assert len(card) == 10 and card.isdigit()
    assert card[:9] == "100000000"
    assert card == "100000000" + luhn_digit("100000000")
    assert is_card_no(card)
    assert card_sequence(card) == 100_000_000
    assert number_for(Series.CARD, 123_456_789) == card_no_for(123_456_789)


def test_every_single_digit_error_is_caught() -> None:
    card = card_no_for(123_456_789)
    for position in range(10):
        for digit in "0123456789":
            if digit != card[position]:
                typo = card[:position] + digit + card[position + 1 :]
                assert not is_card_no(typo), typo


def test_adjacent_transpositions_are_caught() -> None:
    card = card_no_for(123_456_789)
    for i in range(9):
        if card[i] != card[i + 1] and {card[i], card[i + 1]} != {"0", "9"}:
            swapped = card[:i] + card[i + 1] + card[i] + card[i + 2 :]
            assert not is_card_no(swapped), swapped


@pytest.mark.parametrize("text", ["", "123", "12345678901", "abcdefghij", "10000000 0x"])
def test_is_card_no_rejects_malformed(text: str) -> None:
    assert not is_card_no(text)


def test_parse_card_no() -> None:
    card = card_no_for(100_000_042)
    spaced = f" {card[:4]} {card[4:8]} {card[8:]} "
    assert parse_card_no(spaced) == card
    with pytest.raises(DomainError) as caught:
        parse_card_no("   ")
    assert caught.value.code == "card_empty"
    with pytest.raises(DomainError) as caught:
        parse_card_no(card[:-1] + str((int(card[-1]) + 1) % 10))
    assert caught.value.code == "card_format"


def test_receipt_numbers() -> None:
    assert receipt_no_for(1) == "R000000001"
    assert receipt_sequence("R000000001") == 1
    assert receipt_sequence("R999999999") == 999_999_999
    assert receipt_sequence("R00000001") is None  # too short
    assert receipt_sequence("X000000001") is None
    assert receipt_sequence("R00000000A") is None
    assert number_for(Series.RECEIPT, 42) == "R000000042"


def test_check_char_helper_matches_the_fixture_numbers() -> None:
    # guards the fixtures above: both are valid resident ID numbers
    assert check_char(GB_EXAMPLE[:17]) == GB_EXAMPLE[17]
    assert check_char(MALE_EXAMPLE[:17]) == MALE_EXAMPLE[17]


def test_register_reports_a_mistyped_id_before_the_missing_birth_date(state: FakeState) -> None:
    # the form fills the birth date from a valid ID; with a mistyped one both are wrong,
    # and the clerk must be told about the ID number
    refusal = rejected(state, register(doc_no="110105194912310021", birth_date=""))
    assert refusal.code == "id_check_char" and refusal.params["expected"] == "X"
