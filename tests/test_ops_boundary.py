"""What a workstation pushes is checked at the server's boundary (security
review, issue 10): an op the server cannot take is refused with a reason and
the device's sequence goes on, never held forever; numbers have one form;
dates are judged against the server's clock. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ulid import ULID

from domain.numbers import receipt_no_for
from server.db import transfers
from tests.test_numbers_canonical import arabic_indic, full_width
from tests.test_server_api import (
    Server,
    Window,
    _serve,
    count_rows,
    male_cmd,
    open_window,
    patient_with_card,
    push,
    wire,
)
from tests.test_server_api import cheap_password_hashing as cheap_password_hashing  # autouse


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Server]:
    """The server on SQLite and on PostgreSQL."""
    async for s in _serve(db_url):
        yield s


def raw_op(window: Window, kind: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """An op whose payload is ``arguments`` as they are, not as a command
    model would write them (what a broken or hostile client can send)."""
    return wire(window, kind=kind, payload=json.dumps(arguments, ensure_ascii=False))


def top_up_args(card: str, receipt: str, amount: Any = 1_000) -> dict[str, Any]:
    return {
        "transfer_id": str(ULID()),
        "card_no": card,
        "amount_fen": amount,
        "method": "cash",
        "receipt_no": receipt,
    }


def statuses(results: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(r["status"], r["code"]) for r in results]


# -- item 10: one form for a number ------------------------------------------


async def test_a_receipt_number_in_full_width_is_the_same_receipt_number(
    server: Server,
) -> None:
    """Before: "R０００…" was a receipt number nobody had used (another
    string), so the top-up was applied as a second use of R…."""
    window = await open_window(server)
    _, card, receipt = await patient_with_card(server, window)
    used = receipt_no_for(receipt - 1)  # the card's first prepayment printed it
    again = "R" + full_width(used[1:])
    results = await push(server, window, raw_op(window, "top_up", top_up_args(card, again)))
    assert statuses(results) == [("rejected", "receipt_number_used")]
    # a full-width card number is the card itself
    fresh = receipt_no_for(receipt)
    results = await push(
        server, window, raw_op(window, "top_up", top_up_args(full_width(card), fresh))
    )
    assert statuses(results) == [("applied", None)]
    assert results[0]["result"]["card_no"] == card
    assert results[0]["result"]["receipt_no"] == fresh
    assert count_rows(server, transfers) == 2
    # digits of another script are refused with the reason, the sequence goes on
    results = await push(
        server,
        window,
        raw_op(window, "top_up", top_up_args(arabic_indic(card), receipt_no_for(receipt + 1))),
        wire(window, male_cmd()),
    )
    assert statuses(results) == [("rejected", "number_digits"), ("applied", None)]
    assert results[0]["message_zh"] and results[0]["message_en"]
