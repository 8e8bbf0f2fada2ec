"""Identity documents: the resident ID number (GB 11643-1999) and the others a
window accepts.

A resident ID number is 18 characters: a 6-digit region code, the birth date
as YYYYMMDD, a 3-digit sequence whose last digit is odd for men and even for
women, and an ISO 7064 MOD 11-2 check character (0-9 or X).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from .errors import DomainError
from .numbers import canonical_number, is_ascii_digits

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"

# Provinces, autonomous regions, municipalities; 71 Taiwan, 81 Hong Kong,
# 82 Macau, 83 residence permits for Taiwan residents (830000).
PROVINCE_CODES = frozenset(
    {
        "11", "12", "13", "14", "15",
        "21", "22", "23",
        "31", "32", "33", "34", "35", "36", "37",
        "41", "42", "43", "44", "45", "46",
        "50", "51", "52", "53", "54",
        "61", "62", "63", "64", "65",
        "71", "81", "82", "83",
    }
)  # fmt: skip

OLDEST_AGE_YEARS = 150


class DocumentType(StrEnum):
    RESIDENT_ID = "resident_id"  # 居民身份证
    PASSPORT = "passport"  # 护照
    HK_MACAU_PERMIT = "hk_macau_permit"  # 港澳居民来往内地通行证
    TAIWAN_PERMIT = "taiwan_permit"  # 台湾居民来往大陆通行证
    FOREIGNER_PR = "foreigner_pr"  # 外国人永久居留身份证


DOCUMENT_NAMES: dict[DocumentType, tuple[str, str]] = {
    DocumentType.RESIDENT_ID: ("居民身份证", "resident ID card"),
    DocumentType.PASSPORT: ("护照", "passport"),
    DocumentType.HK_MACAU_PERMIT: ("港澳居民来往内地通行证", "Hong Kong/Macau permit"),
    DocumentType.TAIWAN_PERMIT: ("台湾居民来往大陆通行证", "Taiwan permit"),
    DocumentType.FOREIGNER_PR: ("外国人永久居留身份证", "foreigner permanent residence card"),
}

_DOCUMENT_PATTERNS: dict[DocumentType, re.Pattern[str]] = {
    DocumentType.PASSPORT: re.compile(r"[A-Z0-9]{5,17}"),
    # H/M + 8 digits (current) or + 10 digits (older booklets)
    DocumentType.HK_MACAU_PERMIT: re.compile(r"[HM][0-9]{8}([0-9]{2})?"),
    # 8 digits (card since 2015), or older 10-character forms
    DocumentType.TAIWAN_PERMIT: re.compile(r"[0-9]{8}|[0-9]{10}|[A-Z][0-9]{9}"),
    # 2004 card: 3 letters + 12 digits; 2023 card: 18 characters starting with 9
    DocumentType.FOREIGNER_PR: re.compile(r"[A-Z]{3}[0-9]{12}|9[0-9]{16}[0-9X]"),
}


def normalise_document_number(text: str) -> str:
    """Full-width to half-width, spaces removed, upper case; digits of other
    scripts refused (``domain.numbers.canonical_number``)."""
    return canonical_number(text)


def check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


@dataclass(frozen=True)
class NationalId:
    number: str
    birth_date: date
    sex: str  # "M" or "F"

    @property
    def region(self) -> str:
        return self.number[:6]


def parse_national_id(text: str, today: date | None = None) -> NationalId:
    """Validate a resident ID number; raise DomainError with the precise reason."""
    number = normalise_document_number(text)
    if not number:
        raise DomainError("id_empty")
    if len(number) == 15 and is_ascii_digits(number):
        raise DomainError("id_legacy_15")
    if len(number) != 18:
        raise DomainError("id_length", length=len(number))
    if not (is_ascii_digits(number[:17]) and (is_ascii_digits(number[17]) or number[17] == "X")):
        raise DomainError("id_characters")
    if (
        number[:2] not in PROVINCE_CODES
        or number[2:6] == "0000"
        and number[:2] not in {"71", "81", "82", "83"}
    ):
        raise DomainError("id_region", region=number[:6])
    raw_date = number[6:14]
    try:
        born = date(int(raw_date[:4]), int(raw_date[4:6]), int(raw_date[6:8]))
    except ValueError:
        raise DomainError("id_birth_date", date=raw_date) from None
    today = today or date.today()
    if born > today or today.year - born.year > OLDEST_AGE_YEARS:
        raise DomainError("id_birth_date", date=raw_date)
    expected = check_char(number[:17])
    if number[17] != expected:
        raise DomainError("id_check_char", expected=expected)
    sex = "M" if int(number[16]) % 2 == 1 else "F"
    return NationalId(number=number, birth_date=born, sex=sex)


def validate_document(doc_type: str, text: str, today: date | None = None) -> str:
    """Return the normalised document number or raise DomainError."""
    try:
        kind = DocumentType(doc_type)
    except ValueError:
        raise DomainError("document_type_unknown", doc_type=doc_type) from None
    if kind is DocumentType.RESIDENT_ID:
        return parse_national_id(text, today).number
    number = normalise_document_number(text)
    if not number:
        raise DomainError("id_empty")
    if not _DOCUMENT_PATTERNS[kind].fullmatch(number):
        zh, en = DOCUMENT_NAMES[kind]
        raise DomainError("document_format", doc_name_zh=zh, doc_name_en=en)
    return number
