"""Resident ID numbers (GB 11643-1999) and the other identity documents a window accepts."""

from __future__ import annotations

from datetime import date

import pytest

from domain.errors import DomainError
from domain.identity import (
    DocumentType,
    check_char,
    normalise_document_number,
    parse_national_id,
    validate_document,
)

# Published examples: GB 11643-1999 itself (female, born 1949-12-31) and a
# widely cited male example born 1880-01-01.
GB_EXAMPLE = "11010519491231002X"
MALE_EXAMPLE = "440524188001010014"
TODAY = date(2024, 6, 1)


def with_check(first17: str) -> str:
    """A number whose check character is right, so only the part under test is wrong."""
    return first17 + check_char(first17)


def assert_rejected(exc: DomainError, code: str) -> None:
    assert exc.code == code
    zh, en = exc.message("zh"), exc.message("en")
    assert zh and en and zh != en
    # every placeholder was filled in both languages
    assert "{" not in zh and "{" not in en


# -- valid resident ID numbers ------------------------------------------------


def test_gb_example_is_valid_female_born_1949_12_31() -> None:
    nid = parse_national_id(GB_EXAMPLE, TODAY)
    assert nid.number == GB_EXAMPLE
    assert nid.birth_date == date(1949, 12, 31)
    assert nid.sex == "F"
    assert nid.region == "110105"


def test_male_example_is_valid_born_1880_01_01() -> None:
    nid = parse_national_id(MALE_EXAMPLE, date(2020, 1, 1))
    assert nid.birth_date == date(1880, 1, 1)
    assert nid.sex == "M"
    assert nid.region == "440524"


def test_check_char_of_published_numbers() -> None:
    assert check_char(GB_EXAMPLE[:17]) == "X"
    assert check_char(MALE_EXAMPLE[:17]) == "4"


def test_check_char_covers_every_remainder() -> None:
    # the check characters are the ISO 7064 MOD 11-2 table "10X98765432"
    found = {check_char(f"11010519800101{n:03d}") for n in range(200)}
    assert found == set("0123456789X")


def test_lowercase_x_is_accepted_and_normalised() -> None:
    nid = parse_national_id(GB_EXAMPLE.lower(), TODAY)
    assert nid.number == GB_EXAMPLE


def test_full_width_digits_and_spaces_are_accepted() -> None:
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in GB_EXAMPLE)  # １１０...Ｘ
    assert parse_national_id(full_width, TODAY).number == GB_EXAMPLE
    assert parse_national_id(" 110105 19491231 002x ", TODAY).number == GB_EXAMPLE


def test_normalise_document_number() -> None:
    assert normalise_document_number(" ｅ１２ 3 ") == "E123"


def test_validate_document_resident_id_returns_normalised_number() -> None:
    assert validate_document("resident_id", GB_EXAMPLE.lower(), TODAY) == GB_EXAMPLE


# -- invalid resident ID numbers ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param("110105194912310021", "id_check_char", id="wrong-check-char"),
        pytest.param("440524188001010015", "id_check_char", id="wrong-check-digit"),
        pytest.param(with_check("11010519490230002"), "id_birth_date", id="feb-30"),
        pytest.param(with_check("11010519491301002"), "id_birth_date", id="month-13"),
        pytest.param(with_check("11010520250101002"), "id_birth_date", id="future-date"),
        pytest.param(with_check("11010518500101002"), "id_birth_date", id="over-150-years"),
        pytest.param("11010519491231002", "id_length", id="17-chars"),
        pytest.param("11010519491231002X1", "id_length", id="19-chars"),
        pytest.param("11010A19491231002X", "id_characters", id="letter-in-body"),
        pytest.param("1101051949123100XX", "id_characters", id="x-in-body"),
        pytest.param("110105491231002", "id_legacy_15", id="legacy-15"),
        pytest.param(with_check("99010519491231002"), "id_region", id="unknown-province"),
        pytest.param(with_check("10010519491231002"), "id_region", id="province-10"),
        pytest.param(with_check("11000019491231002"), "id_region", id="region-110000"),
        pytest.param("", "id_empty", id="empty"),
        pytest.param("   ", "id_empty", id="blank"),
    ],
)
def test_invalid_resident_id(text: str, code: str) -> None:
    with pytest.raises(DomainError) as caught:
        parse_national_id(text, TODAY)
    assert_rejected(caught.value, code)


def test_wrong_check_char_message_names_the_expected_character() -> None:
    with pytest.raises(DomainError) as caught:
        parse_national_id("110105194912310021", TODAY)
    assert caught.value.rejection.params == {"expected": "X"}
    assert "X" in caught.value.message("zh") and "X" in caught.value.message("en")


def test_length_message_states_the_length() -> None:
    with pytest.raises(DomainError) as caught:
        parse_national_id("1101051949", TODAY)
    assert caught.value.rejection.params == {"length": 10}
    assert "10" in caught.value.message("en")


def test_birth_today_is_accepted_but_tomorrow_is_not() -> None:
    today = with_check("11010520240601002")
    assert parse_national_id(today, TODAY).birth_date == TODAY
    tomorrow = with_check("11010520240602002")
    with pytest.raises(DomainError) as caught:
        parse_national_id(tomorrow, TODAY)
    assert caught.value.code == "id_birth_date"


def test_hong_kong_macau_taiwan_region_codes_are_accepted() -> None:
    for first17 in ("81000019800101001", "82000019800101002", "83000019800101003"):
        assert parse_national_id(with_check(first17), TODAY).region.endswith("0000")


# -- other documents ----------------------------------------------------------


@pytest.mark.parametrize(
    ("doc_type", "text", "expected"),
    [
        ("passport", "E12345678", "E12345678"),
        ("passport", "e1234567 8", "E12345678"),
        ("passport", "５３１２３４５６７", "531234567"),
        ("hk_macau_permit", "H12345678", "H12345678"),
        ("hk_macau_permit", "m1234567890", "M1234567890"),
        ("taiwan_permit", "12345678", "12345678"),
        ("taiwan_permit", "1234567890", "1234567890"),
        ("foreigner_pr", "USA123456789012", "USA123456789012"),  # 2004 card
        ("foreigner_pr", "93300019900101123x", "93300019900101123X"),  # 2023 card
    ],
)
def test_other_documents_valid(doc_type: str, text: str, expected: str) -> None:
    assert validate_document(doc_type, text, TODAY) == expected


@pytest.mark.parametrize(
    ("doc_type", "text", "code"),
    [
        ("passport", "E123", "document_format"),  # too short
        ("passport", "E1234-5678", "document_format"),  # punctuation
        ("passport", "E" + "1" * 17, "document_format"),  # 18 characters
        ("passport", "", "id_empty"),
        ("hk_macau_permit", "H1234567", "document_format"),  # 7 digits
        ("hk_macau_permit", "X12345678", "document_format"),  # neither H nor M
        ("hk_macau_permit", "H123456789", "document_format"),  # 9 digits
        ("taiwan_permit", "1234567", "document_format"),
        ("taiwan_permit", "A1234567", "document_format"),
        ("foreigner_pr", "US123456789012", "document_format"),  # two letters
        ("foreigner_pr", "USA12345678901", "document_format"),  # 11 digits
        ("foreigner_pr", "83300019900101123X", "document_format"),  # new card starts with 9
        ("foreigner_pr", "9330001990010112", "document_format"),  # 16 characters
    ],
)
def test_other_documents_invalid(doc_type: str, text: str, code: str) -> None:
    with pytest.raises(DomainError) as caught:
        validate_document(doc_type, text, TODAY)
    assert_rejected(caught.value, code)


def test_document_format_message_names_the_document_in_each_language() -> None:
    with pytest.raises(DomainError) as caught:
        validate_document(DocumentType.HK_MACAU_PERMIT, "H1", TODAY)
    assert "港澳居民来往内地通行证" in caught.value.message("zh")
    assert "Hong Kong/Macau permit" in caught.value.message("en")


def test_unknown_document_type() -> None:
    with pytest.raises(DomainError) as caught:
        validate_document("driving_licence", "123456", TODAY)
    assert_rejected(caught.value, "document_type_unknown")
    assert "driving_licence" in caught.value.message("en")


def test_resident_id_through_validate_document_is_fully_checked() -> None:
    with pytest.raises(DomainError) as caught:
        validate_document("resident_id", "110105194912310021", TODAY)
    assert caught.value.code == "id_check_char"
