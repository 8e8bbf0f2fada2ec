"""DeskState over plain dicts, for rule tests: the third implementation the
contract test (tests/test_desk_state_contract.py) holds to the same answers
as the replica and the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from domain.commands import Decision
from domain.leases import Lease
from domain.rows import Row, check_columns
from domain.state import Policy, R, Value


@dataclass
class FakeState:
    # table -> key -> (row, written by a pending operation)
    tables: dict[str, dict[str, tuple[Row, bool]]] = field(default_factory=dict)
    granted: list[Lease] = field(default_factory=list)
    the_policy: Policy = field(default_factory=Policy)

    # -- filling it ------------------------------------------------------------

    def put(self, row: Row, *, pending: bool = False) -> None:
        self.tables.setdefault(row.table, {})[row.key_value] = (row, pending)

    def apply(self, decision: Decision, *, pending: bool = False) -> None:
        for row in decision.rows:
            self.put(row, pending=pending)

    def lease(self, kind: str, resource: str, first: int, last: int, device_id: str) -> None:
        """A range of ``resource`` leased to ``device_id``."""
        self.granted.append(
            Lease(
                lease_id=f"L{len(self.granted) + 1}",
                kind=kind,
                resource=resource,
                device_id=device_id,
                granted_at="2026-01-01T00:00:00+00:00",
                first=first,
                last=last,
            )
        )

    def rows(self, row_type: type[R]) -> list[R]:
        return [cast(R, row) for row, _ in self.tables.get(row_type.table, {}).values()]

    # -- DeskState ---------------------------------------------------------------

    def _matching(self, row_type: type[Row], where: dict[str, Value]) -> list[tuple[Row, bool]]:
        check_columns(row_type, where)
        if not where or any(v is None for v in where.values()):
            raise ValueError(f"bad look-up {where}")
        return [
            (row, pending)
            for row, pending in self.tables.get(row_type.table, {}).values()
            if all(getattr(row, k) == v for k, v in where.items())
        ]

    def get(self, row_type: type[R], key: str) -> R | None:
        found = self.tables.get(row_type.table, {}).get(key)
        return cast(R, found[0]) if found is not None else None

    def find(self, row_type: type[R], **where: Value) -> R | None:
        matches = sorted(self._matching(row_type, where), key=lambda m: m[1])  # confirmed first
        return cast(R, matches[0][0]) if matches else None

    def exists(self, row_type: type[Row], **where: Value) -> bool:
        return bool(self._matching(row_type, where))

    def sum(
        self, row_type: type[Row], column: str, *, pending: bool | None = None, **where: Value
    ) -> int:
        check_columns(row_type, {column: 0})
        return sum(
            int(getattr(row, column))
            for row, is_pending in self._matching(row_type, where)
            if pending is None or is_pending == pending
        )

    def leases(self, kind: str, resource: str, device_id: str) -> list[Lease]:
        return [
            lease
            for lease in self.granted
            if (lease.kind, lease.resource, lease.device_id) == (kind, resource, device_id)
        ]

    def policy(self) -> Policy:
        return self.the_policy
