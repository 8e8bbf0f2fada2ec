"""The SQLite server's log is copied back into the file by a thread of its
own (server.checkpoint), after writes pause or every so often under load."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from server.app import create_app
from server.checkpoint import WalCheckpointer
from server.db import make_engine, meta, writer
from server.migrate import migrate


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'central.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def _write(engine: Engine, n: int) -> None:
    with writer(engine) as conn, conn.begin():
        conn.exec_driver_sql("INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{n}", "x" * 2000))


def _wait_for(predicate: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def _log_frames_not_copied(engine: Engine) -> int:
    # a PASSIVE checkpoint of nothing new reports (0, frames, frames copied)
    raw = engine.raw_connection()
    try:
        busy, frames, copied = raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        raw.close()
    assert busy == 0
    return int(frames) - int(copied)


def test_writes_are_copied_back_once_they_pause(engine: Engine) -> None:
    checkpointer = WalCheckpointer(engine, quiet_s=0.1, max_wait_s=30)
    for n in range(20):
        _write(engine, n)
    assert checkpointer.runs == 0  # not on the writer's path
    assert _wait_for(lambda: checkpointer.runs >= 1)
    busy, frames, copied = checkpointer.last or (1, -1, -1)
    assert busy == 0 and frames > 0 and copied == frames
    assert _log_frames_not_copied(engine) == 0
    # nothing more due: the thread ends
    assert _wait_for(lambda: checkpointer._thread is None)


def test_steady_writes_are_copied_back_without_a_pause(engine: Engine) -> None:
    checkpointer = WalCheckpointer(engine, quiet_s=5.0, max_wait_s=0.2)
    deadline = time.monotonic() + 3.0
    n = 0
    while checkpointer.runs == 0 and time.monotonic() < deadline:
        _write(engine, n)  # never a 5 s pause
        n += 1
        time.sleep(0.01)
    assert checkpointer.runs >= 1
    assert checkpointer.last is not None and checkpointer.last[0] == 0


def test_reads_start_no_checkpoint_and_dispose_stops_the_thread(engine: Engine) -> None:
    checkpointer = WalCheckpointer(engine, quiet_s=60, max_wait_s=60)
    with engine.connect() as conn, conn.begin():
        conn.execute(select(meta.c.value)).all()
    assert checkpointer._thread is None
    _write(engine, 1)
    thread = checkpointer._thread
    assert thread is not None and thread.is_alive()
    engine.dispose()  # e.g. before a restore replaces the files
    assert not thread.is_alive()
    assert checkpointer.runs == 0
    # the engine is used again afterwards: so is the checkpointer
    checkpointer.quiet_s = 0.05
    _write(engine, 2)
    assert _wait_for(lambda: checkpointer.runs == 1)


def test_the_sqlite_server_checkpoints_in_the_background(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'central.db'}", migrate=True)
    try:
        checkpointer = app.state.checkpointer
        assert isinstance(checkpointer, WalCheckpointer)
        app.state.auth.create_enrollment_code("window 1")  # a write
        assert _wait_for(lambda: checkpointer.runs >= 1)
    finally:
        app.state.engine.dispose()
