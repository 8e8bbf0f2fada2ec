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

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import DomainError, Rejection
from .numbers import Series
from .roles import ADMIN_ROLE, ROLE_NAMES
from .rows import Row
from .state import DeskState, OpContext
from .text import check_storable, unstorable

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


# how a field is named to the clerk where its name is not plain enough
_FIELD_LABELS: dict[str, tuple[str, str]] = {
    "name": ("姓名", "Name"),
    "address": ("地址", "Address"),
    "phone": ("电话", "Phone"),
    "reason": ("原因", "Reason"),
    "doc_no": ("证件号码", "Document number"),
}


class Arguments(BaseModel):
    """A command's arguments (and their parts, e.g. a card's first
    prepayment), as strict as the wire allows: an ``int`` is a JSON integer,
    not ``"1000"``, ``1000.0`` or ``true``; no field unknown; no text that a
    database cannot store (NUL, lone surrogates). The server validates an
    operation's payload against these before any rule runs, and refuses what
    fails (``command_malformed``) instead of failing on it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @model_validator(mode="after")
    def _storable(self) -> Any:
        # one call a model, not one a field: the push validates up to 500 of these
        for name, value in self.__dict__.items():
            if isinstance(value, str) and not unstorable(value):
                continue  # the common case, without a call more
            try:
                check_storable(value)
            except ValueError:
                # a DomainError passes through pydantic as it is: the clerk at
                # the desk and the server's rejection say the same
                zh, en = _FIELD_LABELS.get(name, (name, name))
                raise DomainError("field_control", field_zh=zh, field_en=en) from None
        return self


class Command(Arguments):
    """A clerk's action. Subclasses set the class variables and implement
    :meth:`decide` and :meth:`summary`; the fields are the arguments, sent to
    the server as they were made at the window."""

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


def parse_command(kind: str, payload: str | dict[str, Any]) -> Command:
    """Build a command from its wire form (the JSON text an operation carries,
    or its parsed object); raise DomainError if it is malformed.

    JSON text is parsed by pydantic's own parser, which stops at 200 levels
    of nesting: ``json.loads`` of a payload nested thousands deep raised
    RecursionError, which the server took for its own failure."""
    command_type = COMMANDS.get(kind)
    if command_type is None:
        raise DomainError("command_unknown", command=kind[:40])
    try:
        if isinstance(payload, str):
            return command_type.model_validate_json(payload)
        return command_type.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
        raise DomainError("command_malformed", detail=detail[:200]) from None


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
