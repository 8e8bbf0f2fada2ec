"""The clerks' roles. A command names the roles that may perform it; a clerk
holds one or more."""

from __future__ import annotations

from typing import Literal

Role = Literal["cashier", "admission", "registrar", "supervisor", "admin"]
ROLE_NAMES: dict[str, tuple[str, str]] = {
    "cashier": ("收费员", "cashier"),
    "admission": ("入院登记员", "admission clerk"),
    "registrar": ("医技登记员", "exam registrar"),
    "supervisor": ("主管", "supervisor"),
    "admin": ("系统管理员", "administrator"),
}
ROLES: tuple[str, ...] = tuple(ROLE_NAMES)
