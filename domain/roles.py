"""The clerks' roles. A command names the roles that may perform it; a clerk
holds one or more.

``admin`` is the IT department's: it manages clerks and workstations (at the
server, ``workstation admin``) and handles no money and no patient data. No
command names it (``domain.commands`` refuses one that does), and the server
gives a session of only that role no patient data and takes no pushes from it.
"""

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
# the roles that work with patients and money: a session needs one of them
# to pull, push or lease at the central server
ADMIN_ROLE = "admin"
DATA_ROLES: frozenset[str] = frozenset(ROLES) - {ADMIN_ROLE}
