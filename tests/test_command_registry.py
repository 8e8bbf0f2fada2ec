"""Every registered command is complete: a rule, both languages, a summary, at
least one role, and the server accepts it. A new command that misses one of
these fails here, one test per command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from domain.cashier.cancel_card import CancelCard
from domain.cashier.issue_card import IssueCard, Prepayment
from domain.cashier.top_up import TopUp
from domain.commands import COMMANDS, Command
from domain.operation import Operation
from domain.patients.register import RegisterPatient
from domain.roles import ROLE_NAMES, ROLES
from domain.shifts import OpenShift
from sync.protocol import PushRequest
from tests.harness import Central, Station
from workstation.cli import main
from workstation.desk.i18n import I18n

# One valid example of each command: a new command adds its own here.
EXAMPLES: dict[str, Command] = {
    e.kind: e
    for e in (
        RegisterPatient(
            patient_id="01KEXAMPLE0000000000000001",
            name="张三丰",
            sex="F",
            birth_date="1949-12-31",
            doc_type="resident_id",
            doc_no="11010519491231002X",
            phone="13812345678",
        ),
        IssueCard(
            card_no="1000000008",
            patient_id="01KEXAMPLE0000000000000001",
            prepayment=Prepayment(
                transfer_id="01KEXAMPLE0000000000000002",
                amount_fen=5_000,
                method="cash",
                receipt_no="R000000001",
            ),
        ),
        TopUp(
            transfer_id="01KEXAMPLE0000000000000003",
            card_no="1000000008",
            amount_fen=12_345,
            method="wechat",
            receipt_no="R000000002",
        ),
        CancelCard(card_no="1000000008", reason="damaged"),
        OpenShift(shift_id="01KEXAMPLE0000000000000004"),
    )
}
HAN = re.compile(r"[\u4e00-\u9fff]")


def test_every_command_has_an_example() -> None:
    assert sorted(EXAMPLES) == sorted(COMMANDS)


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_command_is_complete(kind: str) -> None:
    command = COMMANDS[kind]
    assert command.decide is not Command.decide, "no rule"
    assert command.summary is not Command.summary, "no summary"
    assert command.__doc__ and len(command.__doc__.split()) >= 8, "the docstring states the rule"
    zh, en = command.names
    assert HAN.search(zh) and en.isascii() and en.strip(), command.names
    assert command.roles and set(command.roles) <= set(ROLE_NAMES)
    facts = EXAMPLES[kind].summary()
    assert facts
    for fact in facts:
        assert fact.text("zh") and fact.text("en")
        assert HAN.search(fact.label[0]) and fact.label[1].isascii()
    assert I18n("en").command(kind) == en and I18n("zh").command(kind) == zh


def test_workstation_commands_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    main(["commands"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["kind", "中文", "English", "roles"]
    for kind, command in COMMANDS.items():
        [line] = [line for line in out if line.startswith(kind + " ")]
        assert command.names[0] in line and command.names[1] in line
        for role in command.roles:
            assert f"{role} {ROLE_NAMES[role][0]}" in line


async def test_the_server_accepts_every_command(central_sqlite: Central, tmp_path: Path) -> None:
    """Pushed by a clerk holding every role, no command is unknown, malformed
    or refused for its role (the rules may still say no, e.g. to a card the
    server has not seen)."""
    central_sqlite.clerk("everyone", list(ROLES))
    station = Station(central_sqlite, tmp_path / "a", "a")
    await station.enroll_and_login("everyone")
    clerk = station.desk.clerk
    assert clerk is not None
    made_here = max(entry.op.client_seq for entry in station.store.outbox())  # the login's shift
    ops = [
        Operation.of(
            command,
            op_id=f"01KOP{seq:021d}",
            device_id=station.store.device_id,
            client_seq=seq,
            clerk_id=clerk.clerk_id,
            at="2026-03-01T09:30:00+08:00",
            hlc="0001772328600000.00000",
        ).signed_by(station.desk._key, station.store.device_id)  # type: ignore[arg-type]
        for seq, command in enumerate(EXAMPLES.values(), start=made_here + 1)
    ]
    answer = await station.client.push(
        PushRequest(device_time="2026-03-01T09:30:00+08:00", ops=ops)
    )
    results = {op.kind: result for op, result in zip(ops, answer.results, strict=True)}
    for kind, result in results.items():
        assert result.code not in ("command_unknown", "command_malformed", "role_forbidden"), (
            kind,
            result,
        )
    assert results["register_patient"].status == "applied"
    await station.close()
