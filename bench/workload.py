"""What the benchmark asks of a workstation: realistic queries drawn from the
replica's own patients and cards, and clerk commands made offline."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ulid import ULID

from domain.cashier.issue_card import IssueCard, Prepayment
from domain.cashier.top_up import TopUp
from domain.leases import NUMBER_BLOCK
from domain.money import PaymentMethod
from domain.numbers import Series
from domain.patients.register import RegisterPatient
from domain.state import Actor
from local_db.pinyin import readings
from local_db.store import CommandRejected, LocalStore
from sync.client import SyncClient
from workstation.demo.people import Person, generate_people

METHODS = [m.value for m in PaymentMethod]
TOP_UP_AMOUNTS_FEN = (5_000, 10_000, 20_000, 30_000, 50_000, 100_000, 200_000)
LEASE_MAX = 10_000  # the server's largest block per request


def sample_rows(
    conn: sqlite3.Connection, table: str, columns: str, count: int, rng: random.Random, where: str
) -> list[tuple]:
    """``count`` distinct random rows (by rowid) of ``table`` matching ``where``."""
    top = conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0] or 0
    found: dict[int, tuple] = {}
    attempts = 0
    while len(found) < count and attempts < count * 50:
        attempts += 1
        rowid = rng.randint(1, top)
        if rowid in found:
            continue
        row = conn.execute(
            f"SELECT {columns} FROM {table} WHERE rowid = ? AND {where}", (rowid,)
        ).fetchone()
        if row is not None:
            found[rowid] = tuple(row)
    return list(found.values())


def _han_only(name: str) -> bool:
    return all("\u4e00" <= ch <= "\u9fff" for ch in name)


def initials_of(name: str, letters: int = 3) -> str:
    """What a clerk types for 张三丰: ``zsf`` (the common reading of each character)."""
    return "".join(readings(ch)[0][0] for ch in name[:letters])


@dataclass
class Queries:
    pinyin_initials: list[str]
    name: list[str]
    id_prefix: list[str]
    card: list[str]

    def by_kind(self) -> dict[str, list[str]]:
        return {
            "pinyin_initials": self.pinyin_initials,
            "name": self.name,
            "id_prefix": self.id_prefix,
            "card": self.card,
        }


def make_queries(store: LocalStore, per_kind: int, rng: random.Random) -> Queries:
    return queries_from(store.conn, per_kind, rng)


def queries_from(conn: sqlite3.Connection, per_kind: int, rng: random.Random) -> Queries:
    """``make_queries`` on any connection to a replica (bench.window reads
    its own, so the app's page cache is not warmed by making them)."""
    people = sample_rows(conn, "patients", "name, doc_no", per_kind * 3, rng, "1")
    han = [(n, d) for n, d in people if len(n) >= 2 and _han_only(n)]
    rng.shuffle(han)
    initials = [initials_of(n) for n, _ in han[:per_kind]]
    names = [n[:2] for n, _ in han[per_kind : 2 * per_kind]]
    if len(names) < per_kind:  # tiny replicas: reuse names
        names += [n[:2] for n, _ in han[: per_kind - len(names)]]
    id_prefixes = [d[: rng.randint(6, 10)] for _, d in people[:per_kind]]
    cards = [
        r[0] for r in sample_rows(conn, "cards", "card_no", per_kind, rng, "status = 'active'")
    ]
    return Queries(initials, names, id_prefixes, cards)


def phone_prefixes(conn: sqlite3.Connection, count: int, rng: random.Random) -> list[str]:
    """The first 7-11 digits of real patients' phone numbers."""
    rows = sample_rows(conn, "patients", "phone", count, rng, "phone != ''")
    return [phone[: rng.randint(7, 11)] for (phone,) in rows]


def active_cards(store: LocalStore, count: int, rng: random.Random) -> list[str]:
    rows = sample_rows(
        store.conn, "cards", "card_no", count, rng, "status = 'active' AND pending_op IS NULL"
    )
    return [r[0] for r in rows]


async def ensure_numbers(
    client: SyncClient, store: LocalStore, series: Series, needed: int
) -> None:
    """Lease number blocks (online) until ``needed`` numbers of ``series`` are at hand."""
    while (left := store.numbers_left(series)) < needed:
        lease = await client.lease(NUMBER_BLOCK, series.value, min(LEASE_MAX, needed - left))
        store.add_lease(lease)


def top_up_build(card_no: str, rng: random.Random, shift_id: str | None):  # noqa: ANN201 - a LocalStore build callback
    amount = rng.choice(TOP_UP_AMOUNTS_FEN)
    method = rng.choice(METHODS)

    def build(store: LocalStore) -> TopUp:
        return TopUp(
            transfer_id=str(ULID()),
            card_no=card_no,
            amount_fen=amount,
            method=method,
            receipt_no=store.take_number(Series.RECEIPT),
            shift_id=shift_id,
        )

    return build


@dataclass
class OpsMade:
    kinds: dict[str, int] = field(default_factory=dict)
    rejected_locally: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def describe(self) -> str:
        return ", ".join(f"{n:,} {k}" for k, n in sorted(self.kinds.items(), key=lambda i: -i[1]))


def people_for(seed: int, count: int) -> Iterator[Person]:
    """New patients (valid IDs) not in the seeded register (another seed)."""
    return generate_people(count, seed)


def make_ops(
    store: LocalStore,
    actor: Actor,
    count: int,
    rng: random.Random,
    cards: list[str],
    people: Iterator[Person],
    shift_id: str | None,
) -> OpsMade:
    """``count`` clerk ops committed locally (offline): of every 10, one new
    patient registered, one card issued to them with a first prepayment and
    eight top-ups on existing cards."""
    made = OpsMade()
    started = time.perf_counter()

    def run(kind: str, build) -> dict | None:  # noqa: ANN001
        try:
            executed = store.execute(actor, build)
        except CommandRejected:
            made.rejected_locally += 1
            return None
        made.kinds[kind] = made.kinds.get(kind, 0) + 1
        return executed.decision.result

    while made.total < count:
        if made.total % 10 == 0 and count - made.total >= 2:
            person = next(people)
            command = RegisterPatient(
                patient_id=str(ULID()),
                name=person.name,
                sex=person.sex,
                birth_date=person.birth_date,
                doc_type="resident_id",
                doc_no=person.national_id,
                phone=person.phone,
                address=person.address,
            )
            result = run("register_patient", lambda _s, c=command: c)
            if result is None or result.get("mapped"):
                run("top_up", top_up_build(rng.choice(cards), rng, shift_id))
                continue
            patient_id = result["patient_id"]
            amount = rng.choice((1_000, 5_000, 10_000, 50_000))
            method = rng.choice(METHODS)

            def issue(
                s: LocalStore, pid: str = patient_id, fen: int = amount, how: str = method
            ) -> IssueCard:
                prepayment = Prepayment(
                    transfer_id=str(ULID()),
                    amount_fen=fen,
                    method=how,
                    receipt_no=s.take_number(Series.RECEIPT),
                    shift_id=shift_id,
                )
                return IssueCard(
                    card_no=s.take_number(Series.CARD), patient_id=pid, prepayment=prepayment
                )

            run("issue_card", issue)
            continue
        run("top_up", top_up_build(rng.choice(cards), rng, shift_id))
    made.seconds = time.perf_counter() - started
    return made
