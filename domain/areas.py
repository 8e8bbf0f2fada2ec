"""Every area of the domain, imported so that its commands and row types
register themselves, in this order. A new area (``admission``, ``exams``) is
added here."""

from __future__ import annotations

from . import patients  # isort: skip
from . import cards, ledger, shifts  # isort: skip
from .cashier import cancel_card, issue_card, top_up
from .commands import COMMANDS
from .patients import register
from .rows import row_types

__all__ = [
    "cancel_card",
    "cards",
    "issue_card",
    "ledger",
    "patients",
    "register",
    "shifts",
    "top_up",
]

# every row type and every command, now that all areas have registered theirs
ROW_TYPES = row_types()
COMMAND_TYPES = tuple(COMMANDS.values())
