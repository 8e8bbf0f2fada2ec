"""Rules for a patient's registration details."""

from __future__ import annotations

import re
import unicodedata
from datetime import date

from ..errors import DomainError
from ..identity import OLDEST_AGE_YEARS, DocumentType, parse_national_id, validate_document
from ..numbers import canonical_number

NAME_MAX = 30
ADDRESS_MAX = 100
PHONE_MAX = 20

SEXES = ("M", "F", "U")
SEX_NAMES: dict[str, tuple[str, str]] = {
    "M": ("男", "male"),
    "F": ("女", "female"),
    "U": ("未知", "unknown"),
}

# CJK ideographs (with extensions), Latin letters, the middle dots used in
# transliterated names, spaces, apostrophes and hyphens (foreign names).
_NAME_CHARS = re.compile(
    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134fA-Za-z·•・ '\-]+"
)
_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_LANDLINE = re.compile(r"0[0-9]{2,3}-?[0-9]{7,8}(-[0-9]{1,6})?")

FIELD_NAMES: dict[str, tuple[str, str]] = {
    "name": ("姓名", "Name"),
    "address": ("地址", "Address"),
    "phone": ("电话", "Phone"),
}


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") for ch in text)


def _check_length(field: str, text: str, limit: int) -> None:
    if len(text) > limit:
        zh, en = FIELD_NAMES[field]
        raise DomainError("field_too_long", field_zh=zh, field_en=en, limit=limit, length=len(text))


def clean_name(text: str) -> str:
    if _has_control(text):
        raise DomainError("name_control")
    name = " ".join(unicodedata.normalize("NFKC", text).split())
    name = name.replace("•", "·").replace("・", "·")
    if not name:
        raise DomainError("name_empty")
    _check_length("name", name, NAME_MAX)
    if not _NAME_CHARS.fullmatch(name):
        raise DomainError("name_characters")
    return name


def clean_phone(text: str) -> str:
    if _has_control(text):
        zh, en = FIELD_NAMES["phone"]
        raise DomainError("field_control", field_zh=zh, field_en=en)
    phone = re.sub(r"[()]", "", canonical_number(text)).removeprefix("+86")
    if not phone:
        raise DomainError("phone_empty")
    _check_length("phone", phone, PHONE_MAX)
    if _MOBILE.fullmatch(phone):
        return phone
    landline = _LANDLINE.fullmatch(phone)
    if landline is None:
        raise DomainError("phone_format")
    # stored as digits (010-87654321 -> 01087654321) so a clerk finds it by what they type;
    # an extension keeps its hyphen
    main, extension = (
        phone[: landline.start(1)] if landline.group(1) else phone,
        landline.group(1) or "",
    )
    return main.replace("-", "") + extension


def clean_address(text: str) -> str:
    if _has_control(text):
        zh, en = FIELD_NAMES["address"]
        raise DomainError("field_control", field_zh=zh, field_en=en)
    address = " ".join(unicodedata.normalize("NFKC", text).split())
    _check_length("address", address, ADDRESS_MAX)
    return address


def parse_birth_date(text: str, today: date) -> date:
    cleaned = canonical_number(text)
    match = re.fullmatch(r"([0-9]{4})[-/.]?([0-9]{1,2})[-/.]?([0-9]{1,2})", cleaned)
    if match is None:
        raise DomainError("birth_date_format")
    try:
        born = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise DomainError("birth_date_impossible", date=cleaned) from None
    if born > today or today.year - born.year > OLDEST_AGE_YEARS:
        raise DomainError("birth_date_impossible", date=cleaned)
    return born


def check_sex(sex: str) -> str:
    if sex not in SEXES:
        raise DomainError("sex_unknown")
    return sex


def check_document(doc_type: str, doc_no: str, sex: str, birth_date: date, today: date) -> str:
    """Validate the document; a resident ID must agree with sex and birth date."""
    number = validate_document(doc_type, doc_no, today)
    if doc_type == DocumentType.RESIDENT_ID:
        nid = parse_national_id(number, today)
        if nid.birth_date != birth_date:
            raise DomainError("birth_date_mismatch", expected=nid.birth_date.isoformat())
        if sex != "U" and nid.sex != sex:
            raise DomainError("sex_mismatch")
    return number
