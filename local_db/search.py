"""Patient search at the window, by what the clerk types.

- letters: pinyin, full or initials (``zsf``, ``zhangsanf``) through the FTS index
- Chinese characters: the name or given name, through the same index
- digits: a card number (exact), an ID-number prefix, a phone prefix, each a
  range scan on its own B-tree index, so a prefix matching millions of numbers
  still returns its first page at once

Every query is bounded by ``limit``; nothing loads the whole table.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from dataclasses import dataclass

from domain.errors import DomainError
from domain.numbers import canonical_number, is_card_no

_FTS_SAFE = re.compile(r"[^0-9a-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_HIT_COLS = (
    "p.patient_id, p.name, p.sex, p.birth_date, p.doc_type, p.doc_no, p.phone, p.pending_op, "
    "(SELECT c.card_no FROM cards c WHERE c.patient_id = p.patient_id AND c.status = 'active' LIMIT 1)"
)


@dataclass(frozen=True)
class PatientHit:
    patient_id: str
    name: str
    sex: str
    birth_date: str
    doc_type: str
    doc_no: str
    phone: str
    pending: bool
    card_no: str | None
    matched: str  # what matched: name, pinyin, card, id, phone


def normalise_query(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().lower()


def _hits(rows: list[sqlite3.Row] | list[tuple], matched: str) -> list[PatientHit]:
    return [
        PatientHit(
            patient_id=r[0],
            name=r[1],
            sex=r[2],
            birth_date=r[3],
            doc_type=r[4],
            doc_no=r[5],
            phone=r[6],
            pending=r[7] is not None,
            card_no=r[8],
            matched=matched,
        )
        for r in rows
    ]


def _prefix_range(
    conn: sqlite3.Connection, column: str, prefix: str, limit: int
) -> list[sqlite3.Row]:
    # [prefix, prefix + U+FFFF) is exactly "starts with" and uses the index
    return conn.execute(
        f"SELECT {_HIT_COLS} FROM patients p WHERE p.{column} >= ? AND p.{column} < ? "
        f"ORDER BY p.{column} LIMIT ?",
        (prefix, prefix + "\uffff", limit),
    ).fetchall()


def search_patients(conn: sqlite3.Connection, query: str, limit: int = 20) -> list[PatientHit]:
    q = normalise_query(query)
    if not q:
        return []
    compact = q.replace(" ", "")
    if compact.isdigit() or (
        compact[:-1].isdigit() and compact.endswith("x") and len(compact) == 18
    ):
        try:  # a number is looked for in the one form it is stored in
            number = canonical_number(compact)
        except DomainError:  # digits of another script: no number has them
            return []
        return _search_digits(conn, number, limit)
    terms = [t for t in _FTS_SAFE.split(q) if t]
    if not terms:
        return []
    match = " ".join(f'"{t}"*' for t in terms)
    rows = conn.execute(
        f"SELECT {_HIT_COLS} FROM patient_search s JOIN patients p ON p.rowid = s.rowid "
        "WHERE patient_search MATCH ? LIMIT ?",
        (match, limit),
    ).fetchall()
    matched = "pinyin" if compact.isascii() else "name"
    return _hits(rows, matched)


def _search_digits(conn: sqlite3.Connection, digits: str, limit: int) -> list[PatientHit]:
    hits: list[PatientHit] = []
    seen: set[str] = set()

    def add(found: list[PatientHit]) -> None:
        for hit in found:
            if hit.patient_id not in seen and len(hits) < limit:
                seen.add(hit.patient_id)
                hits.append(hit)

    if is_card_no(digits):
        add(
            _hits(
                conn.execute(
                    f"SELECT {_HIT_COLS} FROM cards c JOIN patients p ON p.patient_id = c.patient_id "
                    "WHERE c.card_no = ?",
                    (digits,),
                ).fetchall(),
                "card",
            )
        )
    if len(digits) >= 4:
        add(_hits(_prefix_range(conn, "doc_no", digits, limit), "id"))
    if len(digits) >= 3 and len(hits) < limit and digits[0] in "01":
        add(_hits(_prefix_range(conn, "phone", digits, limit - len(hits)), "phone"))
    if len(digits) >= 4 and len(hits) < limit:
        add(
            _hits(
                conn.execute(
                    f"SELECT {_HIT_COLS} FROM cards c JOIN patients p ON p.patient_id = c.patient_id "
                    "WHERE c.card_no >= ? AND c.card_no < ? ORDER BY c.card_no LIMIT ?",
                    (digits, digits + "\uffff", limit - len(hits)),
                ).fetchall(),
                "card",
            )
        )
    return hits


def patients_by_id(conn: sqlite3.Connection, patient_ids: list[str]) -> list[PatientHit]:
    """The search lines of these patients (those that still exist)."""
    hits: list[PatientHit] = []
    for start in range(0, len(patient_ids), 500):  # SQLite's bound-parameter limit
        chunk = patient_ids[start : start + 500]
        rows = conn.execute(
            f"SELECT {_HIT_COLS} FROM patients p WHERE p.patient_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
        hits += _hits(rows, "id")
    return hits
