"""Leases: what the server lets one workstation use on its own, so that work
done offline on different machines cannot collide.

A lease has a kind, a resource, and either a range of numbers, a set of ids or
a quantity, granted at a time and perhaps expiring. Number blocks (card and
receipt numbers) are the first kind; bed pools, slot quotas and refund
budgets are kinds the window issues add. The server grants leases and checks,
for every operation, that what it used was leased to the device that made it.
"""

from __future__ import annotations

from .numbers import Series
from .state import DeskState

NUMBER_BLOCK = "number_block"  # resource: a number Series; a range [first, last]


def number_leased(state: DeskState, series: Series, sequence: int, device_id: str) -> bool:
    """Whether ``sequence`` of ``series`` lies in a block leased to ``device_id``."""
    return state.leased(NUMBER_BLOCK, series.value, sequence, device_id)
