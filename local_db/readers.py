"""Read connections to the replica, for the clerk's screens.

The replica is in WAL mode, so a reader never waits for the writer: it sees
the last committed state while the sync engine holds a transaction open for
seconds (a long pull, a rebase after an outage). The screens read through
these connections and never through the writer's lock.

One thing must wait for the readers: replacing the replica file with a new
one (a bootstrap from a replica image). The old replica leaves WAL mode
first, which SQLite refuses while another connection has it open, so the
swap closes every reader under an exclusive lock, after the reads in progress
have finished (each is a few milliseconds), and new reads wait the moment the
rename takes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

POOL_SIZE = 4  # idle connections kept; a screen rarely runs more than two reads at once


class SwapLock:
    """Many readers at once, or the one swap; a waiting swap goes first. A
    thread that already reads may read again (a read within a read) without
    waiting for a swap that waits for it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._swapping = False
        self._swaps_waiting = 0
        self._mine = threading.local()

    @contextmanager
    def shared(self) -> Iterator[None]:
        depth = getattr(self._mine, "depth", 0)
        with self._cond:
            while depth == 0 and (self._swapping or self._swaps_waiting):
                self._cond.wait()
            self._readers += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._swaps_waiting += 1
            while self._swapping or self._readers:
                self._cond.wait()
            self._swaps_waiting -= 1
            self._swapping = True
        try:
            yield
        finally:
            with self._cond:
                self._swapping = False
                self._cond.notify_all()


class Readers:
    """A small pool of read-only connections to one replica file."""

    def __init__(self, open_connection: Callable[[], sqlite3.Connection]) -> None:
        self._open = open_connection
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        self.swap = SwapLock()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self.swap.shared():
            with self._idle_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._open()
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.rollback()
                with self._idle_lock:
                    keep = len(self._idle) < POOL_SIZE
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    conn.close()

    def close_idle(self) -> None:
        """Close every idle connection (call under ``swap.exclusive()``, when
        no read is in progress, to close them all)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
