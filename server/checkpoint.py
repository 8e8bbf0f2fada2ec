"""Copying the SQLite server's write-ahead log back into the database file,
in a thread of its own so that no push waits for it.

With ``wal_autocheckpoint`` alone, the commit that takes the log past the
threshold does the copy itself: on the 1,000,000-patient benchmark database one
push in fourteen waited ~425 ms for ~10,000 pages (most of them random leaves of
the ``transfers_credit`` and patient indexes) to be written back and the file
fsync'd, a third of a 10,000-op drain. Here a thread runs a PASSIVE checkpoint
when the writes pause (a workstation draining its outbox after an outage is a
burst of pushes), and at least every ``MAX_WAIT_S`` under steady load. A
PASSIVE checkpoint takes no lock a writer needs (writers go on appending to the
log meanwhile), and SQLite does the work without holding Python's GIL.

Durability does not depend on it: a commit is durable once its log frames are
fsync'd (``synchronous=FULL``), checkpoint or not. The connections keep
``wal_autocheckpoint`` as a backstop (see ``server.db``), so the log stays
bounded if this thread falls behind or is not running (the admin commands).

PostgreSQL does its own checkpoints; this is for SQLite only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

QUIET_S = 0.5
MAX_WAIT_S = 2.0


class WalCheckpointer:
    """Checkpoints ``engine``'s SQLite log in the background after writes:
    once writes pause for ``quiet_s``, and at least every ``max_wait_s`` while
    they keep coming.

    The thread starts on the first write and ends once a checkpoint left
    nothing due, so an idle server (or a test's short-lived one) keeps no
    thread; disposing of the engine stops it."""

    def __init__(
        self, engine: Engine, quiet_s: float = QUIET_S, max_wait_s: float = MAX_WAIT_S
    ) -> None:
        self.engine = engine
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self.runs = 0
        # (busy, frames in the log, frames copied back) of the last checkpoint
        self.last: tuple[int, int, int] | None = None
        self.last_seconds = 0.0
        self._lock = threading.Lock()
        self._due_since: float | None = None  # first write not yet copied back
        self._last_write = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        event.listen(engine, "commit", self._committed)
        event.listen(engine, "engine_disposed", self._disposed)

    def _committed(self, conn: Any) -> None:
        if not conn.get_execution_options().get("writer", False):
            return  # a read transaction (pull, snapshot) leaves nothing to copy back
        now = time.monotonic()
        with self._lock:
            self._last_write = now
            if self._due_since is None:
                self._due_since = now
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="wal-checkpoint", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.quiet_s / 2)
            with self._lock:
                if stopping or self._due_since is None:
                    self._thread = None
                    return
                now = time.monotonic()
                if (
                    now - self._last_write < self.quiet_s
                    and now - self._due_since < self.max_wait_s
                ):
                    continue  # a burst of pushes is going on: let it finish
                self._due_since = None
            result = self.checkpoint()
            if result is not None and result[0]:
                # another checkpoint (a writer's backstop) held the lock: again later
                with self._lock:
                    self._due_since = self._due_since or time.monotonic()

    def checkpoint(self) -> tuple[int, int, int] | None:
        """One PASSIVE checkpoint now; (busy, log frames, frames copied back)."""
        started = time.perf_counter()
        try:
            # the driver's own connection, outside any transaction: SQLite
            # refuses to checkpoint from a connection with one open
            raw = self.engine.raw_connection()
            try:
                cursor: Any = raw.cursor()
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                busy, frames, copied = cursor.fetchone()
                cursor.close()
            finally:
                raw.close()
        except Exception:
            # the backstop (wal_autocheckpoint) still bounds the log
            log.exception("background WAL checkpoint failed")
            return None
        self.last_seconds = time.perf_counter() - started
        self.last = (int(busy), int(frames), int(copied))
        self.runs += 1
        return self.last

    def close(self) -> None:
        """Stop the thread now (the engine is being disposed: its files may
        be replaced next, as a restore does). What is still in the log is
        copied back by SQLite when the last connection closes, or by the
        thread that the next write starts."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._lock:
            self._stop.clear()

    def _disposed(self, _engine: Engine) -> None:
        self.close()
