"""Replica images on the server: built from the authoritative tables, kept
in a directory, chosen for each bootstrap.

An image is a complete workstation replica file (``local_db.image``: the
server builds it with the workstation's own schema code), gzip'd, beside a
JSON sidecar with its schema id, epoch, cursor, SHA-256 and row count. The
sidecar is written last, so an image without one is not finished.

The newest image of the current epoch is served. With none, one is built in
a background thread while the request waits up to ``wait_s``; after that the
workstation is told to come back (503): a request never holds a server thread
for a whole build. An image more than ``stale_changes`` changes behind the
head, or older than ``stale_age`` with changes since, is still served (the
workstation pulls the rest) while a fresh one is built in the background.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import secrets
import stat
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from domain.areas import ROW_TYPES
from domain.rows import columns_of
from local_db.image import SCHEMA_ID, build_image, fsync_directory

from .db import CHANGE_SEQ, counters, is_sqlite, meta, utc_now

log = logging.getLogger(__name__)

# Measured on the 1,000,000-patient image (998 MB): level 1 compresses in 16 s
# to 337 MB, level 6 in 49 s to 307 MB; unpacking takes 6 s either way. Nine
# per cent more to download is worth a build three times as fast.
GZIP_LEVEL = 1
READ_BATCH = 5_000
CHUNK = 1 << 20
STALE_CHANGES = 100_000
STALE_AGE = timedelta(hours=24)
WAIT_FOR_FIRST_S = 10.0
ABANDONED_S = 3600.0


@dataclass(frozen=True)
class StoredImage:
    """One finished image, as its sidecar describes it."""

    file: str  # the gzip'd image, in the same directory as the sidecar
    schema_id: str
    epoch: str
    cursor: int
    sha256: str
    size: int
    rows: int
    created_at: str
    build_s: float


def _owner_only(directory: Path) -> None:
    """Make ``directory`` if need be and leave it 0700, whatever the umask: an
    image is every patient's record (as the workstation's replica, whose
    files are kept the same way: ``local_db.files``). A directory shared on
    purpose (the sticky bit) or someone else's is left as it is."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    found = directory.stat()
    if not found.st_mode & stat.S_ISVTX and found.st_uid == os.getuid():
        os.chmod(directory, 0o700)


@cache
def _process_directory() -> tempfile.TemporaryDirectory[str]:
    # One per process, removed at exit: images of a server whose database is
    # not a local file, when no directory was configured.
    return tempfile.TemporaryDirectory(prefix="replica-images-")


def default_directory(engine: Engine) -> Path:
    """``<central.db>.snapshots/`` beside a SQLite database file, else a
    temporary directory of this process."""
    database = engine.url.database
    if is_sqlite(engine) and database and database != ":memory:":
        return Path(database + ".snapshots")
    return Path(_process_directory().name)


class SnapshotImages:
    def __init__(
        self,
        engine: Engine,
        directory: Path | None = None,
        *,
        stale_changes: int = STALE_CHANGES,
        stale_age: timedelta = STALE_AGE,
        wait_s: float = WAIT_FOR_FIRST_S,
    ) -> None:
        self.engine = engine
        self.directory = directory or default_directory(engine)
        self.stale_changes = stale_changes
        self.stale_age = stale_age
        self.wait_s = wait_s
        self._lock = threading.RLock()  # choosing, opening and removing images; the builder
        self._build_lock = threading.Lock()  # one build at a time
        self._builder: threading.Thread | None = None

    # -- serving ---------------------------------------------------------------

    def open_current(self) -> tuple[StoredImage, BinaryIO] | None:
        """The image to send now, with its file open (so a newer build may
        remove it meanwhile); None if the first image of this epoch is still
        being built after ``wait_s``."""
        found = self._open_newest()
        if found is None:
            self._start_build().join(self.wait_s)
            found = self._open_newest()
        return found

    def _open_newest(self) -> tuple[StoredImage, BinaryIO] | None:
        head, epoch = self._head()
        with self._lock:
            image = self.newest(epoch, head)
            if image is None or self._stale(image, head):
                self._start_build()
            if image is None:
                return None
            return image, open(self.directory / image.file, "rb")

    def newest(self, epoch: str, head: int) -> StoredImage | None:
        """The newest finished image of this schema and epoch, not beyond the
        head (an image from before a restore that nobody marked with a new
        epoch would hold rows the server no longer has)."""
        usable = [
            image
            for image in self._finished()
            if image.schema_id == SCHEMA_ID and image.epoch == epoch and image.cursor <= head
        ]
        return max(usable, key=lambda i: (i.cursor, i.created_at), default=None)

    def _stale(self, image: StoredImage, head: int) -> bool:
        behind = head - image.cursor
        age = datetime.now(UTC) - datetime.fromisoformat(image.created_at)
        return behind > self.stale_changes or (behind > 0 and age > self.stale_age)

    def _start_build(self) -> threading.Thread:
        """The background build, started unless one is running."""
        with self._lock:
            if self._builder is None or not self._builder.is_alive():
                self._builder = threading.Thread(
                    target=self._build_logged, name="replica-image", daemon=True
                )
                self._builder.start()
            return self._builder

    def _build_logged(self) -> None:
        try:
            self.build()
        except Exception:
            log.exception("building a replica image failed")

    # -- building --------------------------------------------------------------

    def build(self) -> StoredImage:
        """Build an image of the current state, publish it and remove all but
        the two newest images (the one before may still be sent to someone)."""
        with self._build_lock:
            _owner_only(self.directory)
            self._remove_abandoned()
            started = time.perf_counter()
            created_at = utc_now()
            work = f".building-{secrets.token_hex(8)}"  # hidden until published
            db_path = self.directory / f"{work}.db"
            gz_path = self.directory / f"{work}.db.gz"
            sidecar = self.directory / f"{work}.json"
            try:
                try:
                    cursor, epoch, rows = self._write_image(db_path)
                finally:
                    _return_freed_memory()
                sha256, size = _compress(db_path, gz_path)
                os.chmod(gz_path, 0o600)
                name = f"replica-{epoch}-{cursor}-{secrets.token_hex(4)}"
                image = StoredImage(
                    file=f"{name}.db.gz",
                    schema_id=SCHEMA_ID,
                    epoch=epoch,
                    cursor=cursor,
                    sha256=sha256,
                    size=size,
                    rows=rows,
                    created_at=created_at,
                    build_s=round(time.perf_counter() - started, 2),
                )
                os.replace(gz_path, self.directory / image.file)
                sidecar.write_text(json.dumps(asdict(image), indent=2) + "\n")
                os.replace(sidecar, self.directory / f"{name}.json")  # now it is finished
                fsync_directory(self.directory)
            finally:
                for leftover in (db_path, gz_path, sidecar):
                    leftover.unlink(missing_ok=True)
        log.info(
            "replica image %s: %d rows at cursor %d, %.1f MB, built in %.1f s",
            image.file,
            rows,
            cursor,
            size / 1e6,
            image.build_s,
        )
        self._remove_old(keep=2)
        return image

    def _write_image(self, path: Path) -> tuple[int, str, int]:
        """Read the replicated tables at one consistent cursor (one read
        transaction; REPEATABLE READ on PostgreSQL, as the row snapshot) into a
        new replica file. Returns (cursor, epoch, rows)."""
        conn = self.engine.connect()
        if not is_sqlite(conn):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            with _unmapped(conn):
                transaction = conn.begin()
                head, epoch = _head_and_epoch(conn)

                def batches() -> Generator[tuple[str, Sequence[Sequence[Any]]]]:
                    for row_type in ROW_TYPES:
                        cols = ", ".join(name for name, _ in columns_of(row_type))
                        with contextlib.closing(_raw_cursor(conn, row_type.table)) as cursor:
                            cursor.execute(
                                f"SELECT {cols} FROM {row_type.table} ORDER BY {row_type.key}"
                            )
                            while rows := cursor.fetchmany(READ_BATCH):
                                yield row_type.table, rows
                    # Every row is read: end the read transaction before the
                    # indexes and the search index are built.
                    transaction.commit()

                reader = batches()
                try:
                    rows = build_image(path, reader, cursor=head, epoch=epoch)
                finally:
                    reader.close()  # its cursor, before the connection, if the build failed
        finally:
            conn.close()
        return head, epoch, rows

    def _remove_abandoned(self) -> None:
        """Remove work files of builds that died with their process (a build
        writes its files continuously; one untouched for ABANDONED_S is dead).
        Another process's live build (``admin build-snapshot``) is left alone."""
        cutoff = time.time() - ABANDONED_S
        for work in self.directory.glob(".building-*"):
            with contextlib.suppress(FileNotFoundError):
                if work.stat().st_mtime < cutoff:
                    work.unlink()
                    log.info("removed %s, left by a replica image build that did not finish", work)

    def _finished(self) -> list[StoredImage]:
        images = []
        for sidecar in self.directory.glob("replica-*.json"):
            try:
                images.append(StoredImage(**json.loads(sidecar.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # removed meanwhile, or not ours
        return images

    def _remove_old(self, keep: int) -> None:
        with self._lock:
            images = sorted(self._finished(), key=lambda i: i.created_at, reverse=True)
            for image in images[keep:]:
                sidecar = image.file.removesuffix(".db.gz") + ".json"
                for name in (sidecar, image.file):  # the sidecar first: unfinished from now
                    (self.directory / name).unlink(missing_ok=True)

    def _head(self) -> tuple[int, str]:
        with self.engine.connect() as conn:
            return _head_and_epoch(conn)


def _head_and_epoch(conn: Connection) -> tuple[int, str]:
    """The change-log head and the server epoch, as ``conn`` sees them."""
    head = conn.execute(select(counters.c.value).where(counters.c.name == CHANGE_SEQ)).scalar_one()
    epoch = conn.execute(select(meta.c.value).where(meta.c.key == "epoch")).scalar_one()
    return int(head), str(epoch)


@contextlib.contextmanager
def _unmapped(conn: Connection) -> Iterator[None]:
    """On SQLite, read without the server's memory map (``server.db``) while
    the image is built: every page read through it stays mapped into this
    process as long as the pooled connection lives, ~850 MB of the process's
    resident memory after reading the 1,000,000-patient tables. Read with
    read() instead, the pages go through the connection's small page cache
    and the kernel's. Set outside any transaction, and put back afterwards
    for the requests the connection serves next."""
    if not is_sqlite(conn):
        yield
        return
    dbapi: Any = conn.connection.dbapi_connection
    size = dbapi.execute("PRAGMA mmap_size").fetchone()[0]
    dbapi.execute("PRAGMA mmap_size=0")
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()  # a build that failed while reading
        dbapi.execute(f"PRAGMA mmap_size={int(size)}")


def _raw_cursor(conn: Connection, name: str) -> Any:
    """A DB-API cursor in ``conn``'s transaction: rows come as plain tuples,
    without SQLAlchemy's per-row work. On PostgreSQL a named (server-side)
    cursor, so a million rows are fetched in batches, not all at once."""
    dbapi: Any = conn.connection.dbapi_connection
    return dbapi.cursor() if is_sqlite(conn) else dbapi.cursor(name=f"image_{name}")


def _return_freed_memory() -> None:
    """Hand the memory a build freed back to the system. glibc's malloc keeps
    freed small blocks (SQLite's cached pages, the search terms of recent
    names) for reuse wherever a live block sits above them in the heap, and
    the server process, which built the image, kept ~100 MB more than
    before the build for good; trimmed, ~30 MB (pypinyin's dictionaries,
    loaded by the first build). Elsewhere there is nothing to do."""
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return
    trim(0)


def _compress(source: Path, target: Path) -> tuple[str, int]:
    """gzip ``source`` into ``target``; returns (SHA-256 of the gzip'd bytes, size)."""
    digest = hashlib.sha256()
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip container
    with open(source, "rb") as src, open(target, "wb") as out:

        def put(data: bytes) -> None:
            digest.update(data)
            out.write(data)

        while block := src.read(CHUNK):
            put(compressor.compress(block))
        put(compressor.flush())
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), target.stat().st_size


def image_chunks(file: BinaryIO) -> Iterator[bytes]:
    """An opened image's bytes, for a streamed response; closes the file."""
    with file:
        while chunk := file.read(CHUNK):
            yield chunk
