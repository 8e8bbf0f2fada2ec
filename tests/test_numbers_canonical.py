"""One form for every number a clerk types or an operation carries (card,
receipt, ID-card and phone numbers, amounts): full-width forms fold to ASCII,
digits of other scripts are refused (``domain.numbers.canonical_number``)."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from domain.errors import DomainError
from domain.identity import parse_national_id, validate_document
from domain.money import parse_amount
from domain.numbers import (
    canonical_number,
    card_no_for,
    is_card_no,
    parse_card_no,
    receipt_sequence,
)
from domain.patients.fields import clean_phone, parse_birth_date

GB_EXAMPLE = "11010519491231002X"
ARABIC_INDIC = "٠١٢٣٤٥٦٧٨٩"  # U+0660..U+0669: int() and str.isdigit() take them
DEVANAGARI = "०१२३४५६७८९"


def full_width(text: str) -> str:
    """What a Chinese input method types: ASCII letters and digits at full width."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def arabic_indic(text: str) -> str:
    return "".join(ARABIC_INDIC[int(c)] if c.isdigit() else c for c in text)


NUMBER_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-. ", max_size=24)
ANY_TEXT = st.text(max_size=24)


@given(NUMBER_TEXT, st.lists(st.booleans(), max_size=24))
def test_a_number_in_any_width_has_one_canonical_form(text: str, widen: list[bool]) -> None:
    mixed = "".join(full_width(c) if i < len(widen) and widen[i] else c for i, c in enumerate(text))
    assert canonical_number(mixed) == canonical_number(text) == canonical_number(full_width(text))


@given(ANY_TEXT)
@example("R¸")  # NFKC makes " " + U+0327 of "¸": without the space, "Ŗ" (found by Hypothesis)
@example("i\u0307")  # upper-cased, "I" + U+0307 composes to "İ"
def test_any_text_is_canonical_or_refused_and_only_ascii_digits_survive(text: str) -> None:
    try:
        canonical = canonical_number(text)
    except DomainError as exc:
        assert exc.code == "number_digits"
        return
    assert canonical_number(canonical) == canonical  # one form: canonical of canonical
    assert all(c.isascii() for c in canonical if c.isnumeric())
    assert not any(c.isspace() for c in canonical)


@given(st.text(alphabet=ARABIC_INDIC + DEVANAGARI, min_size=1, max_size=12))
def test_digits_of_other_scripts_are_refused(digits: str) -> None:
    with pytest.raises(DomainError) as refused:
        canonical_number("1" + digits)
    assert refused.value.code == "number_digits"


@given(st.integers(min_value=100_000_000, max_value=999_999_999))
def test_card_numbers_in_any_width_parse_to_the_ascii_number(sequence: int) -> None:
    card = card_no_for(sequence)
    assert parse_card_no(full_width(card)) == card
    assert not is_card_no(full_width(card))  # the rules see only the canonical form
    with pytest.raises(DomainError):
        parse_card_no(arabic_indic(card))
    assert not is_card_no(arabic_indic(card))


def test_receipt_numbers_of_other_digits_have_no_sequence() -> None:
    assert receipt_sequence("R000000001") == 1
    assert receipt_sequence("R" + full_width("000000001")) is None
    assert receipt_sequence("R" + arabic_indic("000000001")) is None


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        (full_width(GB_EXAMPLE), GB_EXAMPLE),
        (full_width(GB_EXAMPLE.lower()), GB_EXAMPLE),  # ｘ -> X
        (full_width("110105 19491231 002X"), GB_EXAMPLE),
    ],
)
def test_id_numbers_in_any_width(typed: str, expected: str) -> None:
    assert parse_national_id(typed).number == expected
    assert validate_document("resident_id", typed) == expected


def test_other_digits_are_refused_in_every_number_the_clerk_types() -> None:
    from datetime import date

    today = date(2026, 1, 1)
    refused = {
        "id": lambda: parse_national_id(arabic_indic(GB_EXAMPLE)),
        "hk permit": lambda: validate_document("hk_macau_permit", "H" + arabic_indic("12345678")),
        "phone": lambda: clean_phone(arabic_indic("13812345678")),
        "amount": lambda: parse_amount(arabic_indic("100")),
        "birth date": lambda: parse_birth_date(arabic_indic("1980-05-17"), today),
    }
    for what, parse in refused.items():
        with pytest.raises(DomainError):
            parse()
            pytest.fail(f"{what} took digits of another script")
    assert clean_phone(full_width("13812345678")) == "13812345678"
    assert parse_amount(full_width("100.50")) == 10_050
    assert parse_birth_date(full_width("1980-05-17"), today) == date(1980, 5, 17)
