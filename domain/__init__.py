"""The hospital's rules, decided once for both sides: value types, rows,
commands and their ``decide()``. Imports no other layer of the project.

Importing ``domain`` imports every area, so that each command and row type
has registered itself (``domain.commands.COMMANDS``,
``domain.rows.ROWS_BY_TABLE``) before anyone looks one up.
"""

from . import areas as _areas  # noqa: F401  (registration)
