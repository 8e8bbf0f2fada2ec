"""Hospital card (就诊卡) states.

active -> lost (loss report) -> replaced (a new card took over the balance);
cancelled is a card withdrawn for good. Only an active card pays or takes money.
"""

from __future__ import annotations

from enum import StrEnum


class CardStatus(StrEnum):
    ACTIVE = "active"
    LOST = "lost"
    REPLACED = "replaced"
    CANCELLED = "cancelled"

    @property
    def names(self) -> tuple[str, str]:
        return _NAMES[self]


_NAMES: dict[CardStatus, tuple[str, str]] = {
    CardStatus.ACTIVE: ("在用", "active"),
    CardStatus.LOST: ("已挂失", "reported lost"),
    CardStatus.REPLACED: ("已补换", "replaced"),
    CardStatus.CANCELLED: ("已注销", "cancelled"),
}
