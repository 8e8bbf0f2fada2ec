"""One workstation process per data directory.

Two processes on one replica would each believe they own the outbox and the
leased number blocks; the second one started (a clerk opening the app twice,
or an app left running in a closed terminal) is refused at once, with the
process that holds the directory. The lock is the operating system's
(``flock``): it goes away with the process, however the process ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from local_db.files import private_directory

LOCK_FILE = "workstation.lock"


class AlreadyRunning(Exception):
    def __init__(self, data_dir: Path, pid: str) -> None:
        self.data_dir = data_dir
        self.pid = pid
        super().__init__(self.message())

    def message(self) -> str:
        return (
            f"本工作站已在另一个窗口运行（进程 {self.pid}，数据目录 {self.data_dir}）。"
            f"请切换到那个窗口，或先关闭它。\n"
            f"This workstation is already running in another window (process {self.pid}, "
            f"data directory {self.data_dir}). Switch to it, or close it first."
        )


@contextlib.contextmanager
def single_instance(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir`` for this process; raises AlreadyRunning if another
    process (or another holder in this one) has it."""
    private_directory(data_dir)  # the replica's, the secrets', the receipts': the owner's alone
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise AlreadyRunning(data_dir, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
