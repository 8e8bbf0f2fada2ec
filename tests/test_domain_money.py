"""Amounts typed at the window are integers of fen, parsed strictly; receipts
write them in Chinese financial capitals (大写金额)."""

from __future__ import annotations

import pytest

from domain.errors import DomainError
from domain.money import (
    MAX_AMOUNT_FEN,
    PaymentMethod,
    check_amount,
    format_yuan,
    parse_amount,
    parse_payment_method,
)
from workstation.desk.receipts import yuan_in_words


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("100", 10_000),
        ("0.01", 1),
        ("12.3", 1_230),
        ("12.30", 1_230),
        ("100.50", 10_050),
        ("１００", 10_000),  # full-width digits
        ("０.０１", 1),
        ("¥5", 500),
        ("¥ 5", 500),
        ("￥5", 500),  # full-width yen sign
        (" 7 ", 700),
        ("1000000", MAX_AMOUNT_FEN),  # the limit is inclusive
        ("999999.99", MAX_AMOUNT_FEN - 1),
    ],
)
def test_parse_amount_valid(text: str, fen: int) -> None:
    result = parse_amount(text)
    assert result == fen
    assert type(result) is int


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "amount_empty"),
        ("   ", "amount_empty"),
        ("¥", "amount_empty"),
        ("0", "amount_not_positive"),
        ("0.00", "amount_not_positive"),
        ("-5", "amount_not_positive"),
        ("-0.01", "amount_not_positive"),
        ("12.345", "amount_too_many_decimals"),
        ("0.001", "amount_too_many_decimals"),
        ("1e3", "amount_format"),
        ("abc", "amount_format"),
        ("1,000", "amount_format"),
        ("12.", "amount_format"),
        (".5", "amount_format"),
        ("1 000", "amount_format"),
        ("+5", "amount_format"),
        ("NaN", "amount_format"),
        ("1000000.01", "amount_too_large"),
        ("1000001", "amount_too_large"),
        ("9" * 30, "amount_too_large"),
    ],
)
def test_parse_amount_errors(text: str, code: str) -> None:
    with pytest.raises(DomainError) as caught:
        parse_amount(text)
    assert caught.value.code == code
    zh, en = caught.value.message("zh"), caught.value.message("en")
    assert zh and en and zh != en
    assert "{" not in zh and "{" not in en


def test_too_large_message_states_the_limit() -> None:
    with pytest.raises(DomainError) as caught:
        parse_amount("1000000.01")
    assert "1,000,000.00" in caught.value.message("zh")
    assert "1,000,000.00" in caught.value.message("en")


def test_too_many_decimals_message_quotes_the_text() -> None:
    with pytest.raises(DomainError) as caught:
        parse_amount("12.345")
    assert "12.345" in caught.value.message("en")


def test_parse_amount_with_a_lower_limit() -> None:
    assert parse_amount("10", limit_fen=1_000) == 1_000
    with pytest.raises(DomainError) as caught:
        parse_amount("10.01", limit_fen=1_000)
    assert caught.value.code == "amount_too_large"
    assert "10.00" in caught.value.message("en")


@pytest.mark.parametrize(
    ("fen", "code"),
    [
        (0, "amount_not_positive"),
        (-1, "amount_not_positive"),
        (MAX_AMOUNT_FEN + 1, "amount_too_large"),
        (True, "amount_format"),  # a bool is not an amount
        (1.5, "amount_format"),  # a float is never money
    ],
)
def test_check_amount(fen: object, code: str) -> None:
    with pytest.raises(DomainError) as caught:
        check_amount(fen)  # type: ignore[arg-type]
    assert caught.value.code == code


def test_check_amount_accepts_one_fen_and_the_limit() -> None:
    check_amount(1)
    check_amount(MAX_AMOUNT_FEN)


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (0, "0.00"),
        (1, "0.01"),
        (10, "0.10"),
        (12_345, "123.45"),
        (100_000, "1,000.00"),
        (MAX_AMOUNT_FEN, "1,000,000.00"),
        (-5, "-0.05"),
        (-123_456, "-1,234.56"),
    ],
)
def test_format_yuan(fen: int, text: str) -> None:
    assert format_yuan(fen) == text


def test_format_then_parse_round_trips() -> None:
    for fen in (1, 99, 100, 12_345, 9_999_999, MAX_AMOUNT_FEN):
        assert parse_amount(format_yuan(fen).replace(",", "")) == fen


def test_payment_methods() -> None:
    assert parse_payment_method("wechat") is PaymentMethod.WECHAT
    with pytest.raises(DomainError) as caught:
        parse_payment_method("bitcoin")
    assert caught.value.code == "payment_method_unknown"
    assert "bitcoin" in caught.value.message("en")


# -- amounts in Chinese financial capitals ------------------------------------
# Checked against the People's Bank of China rules for writing amounts on
# bills (正确填写票据和结算凭证的基本规定): 整 after 元 when there are no
# jiao/fen; 零 for zeros inside the number (one 零 for a run of zeros); 零
# after 元 when the jiao is 0 and the fen is not; where the 元 or 万 place is 0
# and the next place is not, the 零 may be written or left out.


@pytest.mark.parametrize(
    ("fen", "words"),
    [
        (10_000, "壹佰元整"),
        (12_345, "壹佰贰拾叁元肆角伍分"),
        (100_000_005, "壹佰万元零伍分"),
        (100, "壹元整"),
        (1_000, "壹拾元整"),  # 壹拾, never a bare 拾
        (1, "壹分"),
        (50, "伍角"),
        (101, "壹元零壹分"),
        (1_640_902, "壹万陆仟肆佰零玖元零贰分"),  # PBoC example ¥16409.02
        (32_504, "叁佰贰拾伍元零肆分"),  # PBoC example ¥325.04
        (100_100, "壹仟零壹元整"),
        (1_010_000, "壹万零壹佰元整"),
        (100_010_000, "壹佰万零壹佰元整"),
        (2_003_040_000, "贰仟零叁万零肆佰元整"),
        (10_000_001_000, "壹亿零壹拾元整"),
        (MAX_AMOUNT_FEN, "壹佰万元整"),
    ],
)
def test_yuan_in_words(fen: int, words: str) -> None:
    assert yuan_in_words(fen) == words


@pytest.mark.parametrize(
    ("fen", "accepted"),
    [
        # PBoC example ¥1680.32: 元 place is 0, jiao is not -> 零 optional
        (168_032, {"壹仟陆佰捌拾元零叁角贰分", "壹仟陆佰捌拾元叁角贰分"}),
        # PBoC example ¥107000.53: 万 and 元 places are 0 -> one 零 or none
        (
            10_700_053,
            {
                "壹拾万柒仟元零伍角叁分",
                "壹拾万零柒仟元伍角叁分",
                "壹拾万柒仟元伍角叁分",
            },
        ),
        (1_100_000, {"壹万壹仟元整"}),
        (100_100_000, {"壹佰万壹仟元整", "壹佰万零壹仟元整"}),
    ],
)
def test_yuan_in_words_optional_zero(fen: int, accepted: set[str]) -> None:
    assert yuan_in_words(fen) in accepted


def test_yuan_in_words_is_fen_exact_for_every_amount_under_one_yuan() -> None:
    digits = "零壹贰叁肆伍陆柒捌玖"
    for fen in range(1, 100):
        jiao, rest = divmod(fen, 10)
        expected = (digits[jiao] + "角" if jiao else "") + (digits[rest] + "分" if rest else "")
        assert yuan_in_words(fen) == expected
