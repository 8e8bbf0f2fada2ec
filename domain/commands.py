"""The clerk's commands, and the one way their rules run.

A command is one class in one module of its area (``domain/cashier/top_up.py``
...). It carries everything about itself: its kind, the roles that may do it,
its names in both languages, its rule (:meth:`Command.decide`) and a summary of
its arguments for the Sync issues screen and receipts. Defining the class
registers it; the workstation, the sync engine and the server know every
command through :data:`COMMANDS` and need no change for a new one.

``decide(state, command, ctx)`` is pure: it checks the clerk's roles, then runs
the command's rule, which reads only through :class:`~domain.state.DeskState`,
and returns either a :class:`Decision` (the rows to write) or a
:class:`~domain.errors.Rejection`. The workstation runs it against its
replica, the server runs the very same function against the authoritative
store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import DomainError, Rejection
from .numbers import Series
from .roles import ADMIN_ROLE, ROLE_NAMES
from .rows import Row
from .state import DeskState, OpContext

# kind -> command class, in the order they were defined
COMMANDS: dict[str, type[Command]] = {}


@dataclass(frozen=True)
class Fact:
    """One line of what an operation was about, for people: a label and a
    value, each in both languages where they differ."""

    label: tuple[str, str]  # (简体中文, English)
    value: str | tuple[str, str]

    def text(self, lang: str) -> str:
        en = lang.startswith("en")
        value = self.value if isinstance(self.value, str) else self.value[1 if en else 0]
        return f"{self.label[1 if en else 0]} {value}"


@dataclass(frozen=True)
class Decision:
    """What a command does when accepted: rows to write and what to tell the clerk."""

    rows: list[Row]
    outcome: Literal["applied", "applied_modified"] = "applied"
    notice: Rejection | None = None  # for applied_modified: what changed and why
    result: dict[str, Any] = field(default_factory=dict)


Outcome = Decision | Rejection


class Command(BaseModel):
    """A clerk's action. Subclasses set the class variables and implement
    :meth:`decide` and :meth:`summary`; the fields are the arguments, sent to
    the server as they were made at the window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ClassVar[str]
    roles: ClassVar[frozenset[str]]  # who may perform it; checked by decide() on both sides
    names: ClassVar[tuple[str, str]]  # (简体中文, English)
    # the number series (domain.numbers.Series values) its operations take
    # numbers from: who may run it may lease blocks of them (roles_for_numbers)
    numbers: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            return  # a shared base of commands, not a command
        known = COMMANDS.get(cls.kind)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"command kind {cls.kind!r} is defined twice ({known.__name__})")
        unknown = set(cls.roles) - set(ROLE_NAMES)
        if not cls.roles or unknown:
            raise TypeError(f"{cls.__name__}: roles {sorted(cls.roles)} (unknown: {unknown})")
        if not cls.numbers <= {s.value for s in Series}:
            raise TypeError(f"{cls.__name__}: numbers {sorted(cls.numbers)} (not all a Series)")
        if ADMIN_ROLE in cls.roles:
            raise TypeError(
                f"{cls.__name__}: the {ADMIN_ROLE} role (IT) handles no money and no patient data"
            )
        COMMANDS[cls.kind] = cls

    def decide(self, state: DeskState, ctx: OpContext) -> Decision:
        """The rule. Raises DomainError to refuse; never writes."""
        raise NotImplementedError(f"{type(self).__name__} has no rule")

    def summary(self) -> list[Fact]:
        """What the operation was about (patient, card, amount, receipt...),
        for the Sync issues screen and receipts."""
        raise NotImplementedError(f"{type(self).__name__} has no summary")


def roles_for_numbers(series: str) -> frozenset[str]:
    """The roles that may lease blocks of number ``series``: those of the
    commands that take numbers of it (a card number to issue a card, a receipt
    number to take money). A clerk of no such role has no use for them, and
    the server grants them none. Complete once ``domain.areas`` is imported."""
    return frozenset(
        role for command in COMMANDS.values() if series in command.numbers for role in command.roles
    )


def parse_command(kind: str, payload: dict[str, Any]) -> Command:
    """Build a command from its wire form; raise DomainError if it is malformed."""
    command_type = COMMANDS.get(kind)
    if command_type is None:
        raise DomainError("command_unknown", command=kind[:40])
    try:
        return command_type.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise DomainError("command_malformed", detail=f"{where}: {first.get('msg', '')}") from None


def decide(state: DeskState, command: Command, ctx: OpContext) -> Outcome:
    """Run the command's rule. Never raises for a business reason: it returns a Rejection."""
    try:
        authorise(command, ctx)
        return command.decide(state, ctx)
    except DomainError as exc:
        return exc.rejection


def authorise(command: Command, ctx: OpContext) -> None:
    if not (command.roles & ctx.actor.roles):
        raise DomainError(
            "role_forbidden",
            roles=",".join(sorted(ctx.actor.roles)) or "-",
            command_zh=command.names[0],
            command_en=command.names[1],
        )


def require_text_id(value: str, field_name: str) -> None:
    """An id made at the workstation (a ULID): present and short."""
    if not value or len(value) > 40:
        raise DomainError("command_malformed", detail=field_name)
