"""The demo hospital: clerks for every role and a patient register to work on.

Patients come with valid resident ID numbers, phones and addresses; most have a
card, taken from a number block leased to the registration office like any
workstation's, with a first prepayment and sometimes top-ups, so the demo can
swipe real cards and show real balances.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert
from ulid import ULID

from domain.cards import CardRow, CardStatus
from domain.ledger import TransferKind, TransferRow, deposit_account, intake_account
from domain.money import PaymentMethod
from domain.numbers import Series, card_no_for, receipt_no_for
from domain.patients import PatientRow
from domain.rows import Row
from server.auth import AuthService, token_hash
from server.bulk import bulk_load
from server.chain import append_audit
from server.db import devices, utc_now, writer
from server.leases import grant_number_block

from .people import generate_people

# (username, name, roles, demo password): shown on the demo's login screen;
# they pass the password rules (server.passwords) a real site's do
DEMO_CLERKS: tuple[tuple[str, str, list[str], str], ...] = (
    ("cashier", "王芳", ["cashier"], "shoufei-2026"),
    ("admission", "李强", ["admission"], "ruyuan-2026"),
    ("registrar", "赵敏", ["registrar"], "dengji-2026"),
    ("supervisor", "陈静", ["supervisor", "cashier"], "zhuguan-2026"),
    ("admin", "刘洋", ["admin"], "xinxike-2026"),
)

REGISTRY_DEVICE = "registration office (seed)"


@dataclass(frozen=True)
class SeedSummary:
    patients: int
    cards: int
    transfers: int
    sample_cards: list[str]


def create_demo_clerks(engine: Engine) -> None:
    auth = AuthService(engine)
    for username, name, roles, password in DEMO_CLERKS:
        auth.create_clerk(username, name, roles, password)


def _registry_device(engine: Engine) -> str:
    device_id = str(ULID())
    with writer(engine) as conn, conn.begin():
        conn.execute(
            insert(devices).values(
                device_id=device_id,
                name=REGISTRY_DEVICE,
                token_hash=token_hash(secrets.token_urlsafe(32)),  # never handed out
                enrolled_at=utc_now(),
                active=0,
            )
        )
        append_audit(
            conn,
            clerk_id=None,
            device_id=device_id,
            action="register_device",
            target=REGISTRY_DEVICE,
            outcome="ok",
        )
    return device_id


def demo_rows(
    engine: Engine, patients: int, seed: int = 2026, card_share: float = 0.7
) -> Iterator[Row]:
    """Rows for ``patients`` generated people; cards and receipts from real leased
    blocks (leased before the first row is made: the caller may be inside a
    write transaction while it consumes these)."""
    rng = random.Random(seed)
    device_id = _registry_device(engine)
    cards_needed = int(patients * card_share) + 1
    card_first = grant_number_block(engine, Series.CARD, cards_needed, device_id, None).first
    receipt_first = grant_number_block(
        engine, Series.RECEIPT, cards_needed * 2, device_id, None
    ).first
    assert card_first is not None and receipt_first is not None
    return _demo_rows(
        rng, device_id, patients, seed, card_share, card_first, cards_needed, receipt_first
    )


def _demo_rows(
    rng: random.Random,
    device_id: str,
    patients: int,
    seed: int,
    card_share: float,
    card_first: int,
    cards_needed: int,
    receipt_first: int,
) -> Iterator[Row]:
    card_seq, receipt_seq = card_first, receipt_first
    clerk_id = "seed"
    start = datetime(2024, 11, 1, 8, 0, tzinfo=UTC)
    methods = list(PaymentMethod)
    for index, person in enumerate(generate_people(patients, seed)):
        at = start + timedelta(minutes=index * 90 // max(patients // 10_000, 1) + rng.randrange(60))
        when = at.isoformat(timespec="seconds")
        patient_id = str(ULID.from_datetime(at))
        yield PatientRow(
            patient_id=patient_id,
            name=person.name,
            sex=person.sex,
            birth_date=person.birth_date,
            doc_type="resident_id",
            doc_no=person.national_id,
            phone=person.phone,
            address=person.address,
            registered_at=when,
            registered_by=clerk_id,
            registered_device=device_id,
        )
        if rng.random() >= card_share or card_seq >= card_first + cards_needed:
            continue
        card_no = card_no_for(card_seq)
        card_seq += 1
        yield CardRow(
            card_no=card_no,
            patient_id=patient_id,
            status=CardStatus.ACTIVE.value,
            issued_at=when,
            issued_by=clerk_id,
            issued_device=device_id,
            status_changed_at=when,
        )
        for kind, amount in _payments(rng):
            method = rng.choice(methods)
            yield TransferRow(
                transfer_id=str(ULID.from_datetime(at)),
                debit_account=intake_account(method, device_id),
                credit_account=deposit_account(patient_id),
                amount_fen=amount,
                kind=kind.value,
                method=method.value,
                patient_id=patient_id,
                card_no=card_no,
                receipt_no=receipt_no_for(receipt_seq),
                clerk_id=clerk_id,
                device_id=device_id,
                at=when,
                op_id="seed",
            )
            receipt_seq += 1


def _payments(rng: random.Random) -> list[tuple[TransferKind, int]]:
    first = rng.choice((1_000, 5_000, 10_000, 20_000, 50_000, 100_000))
    payments = [(TransferKind.FIRST_PREPAYMENT, first)]
    if rng.random() < 0.3:
        payments.append((TransferKind.TOP_UP, rng.choice((5_000, 10_000, 30_000, 200_000))))
    return payments


def seed_demo_hospital(engine: Engine, patients: int = 10_000, seed: int = 2026) -> SeedSummary:
    create_demo_clerks(engine)
    counts = {"patients": 0, "cards": 0, "transfers": 0}
    samples: list[str] = []

    rows = demo_rows(engine, patients, seed)

    def counted() -> Iterator[Row]:
        for row in rows:
            counts[row.table] += 1
            if isinstance(row, CardRow) and len(samples) < 5:
                samples.append(row.card_no)
            yield row

    bulk_load(engine, counted())
    return SeedSummary(counts["patients"], counts["cards"], counts["transfers"], samples)
