"""The replica's files are its owner's alone.

A replica holds patients' names, document numbers and balances, and the
password hashes of the clerks who logged in at the window (for offline
login): another account on the machine must not read them. Its directory is
made 0700 and its files 0600 when they are made, whatever the process's
umask, and a replica of an older release (0644 in 0755) is tightened when it
is opened. SQLite makes the write-ahead log and its index with the mode of
the database file, so they follow.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600
# beside a database file: its write-ahead log, the log's index, a rollback journal
SIDE_FILES = ("-wal", "-shm", "-journal")


def private_directory(path: str | Path) -> None:
    """Make ``path`` (and missing parents) if need be, and leave it 0700. A
    directory shared on purpose (the sticky bit, like /tmp) or someone
    else's is left as it is: the files in it are still the owner's alone."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    found = path.stat()
    if found.st_mode & stat.S_ISVTX or found.st_uid != os.getuid():
        return
    if stat.S_IMODE(found.st_mode) != PRIVATE_DIRECTORY:
        os.chmod(path, PRIVATE_DIRECTORY)


def private_file(path: str | Path) -> None:
    """Make ``path`` empty if it does not exist, and leave it 0600."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # the umask left out, or an older file's mode
    finally:
        os.close(fd)


def private_database(path: str | Path) -> None:
    """A SQLite database file and whatever lies beside it, and its directory,
    the owner's alone (before SQLite opens it)."""
    path = Path(path)
    private_directory(path.parent)
    private_file(path)
    for suffix in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", PRIVATE_FILE)
