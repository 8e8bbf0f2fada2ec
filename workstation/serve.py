"""``workstation server``: the central server in one process, or in several
(``--workers``, PostgreSQL only) behind one listening socket.

A one-op push costs the server far more in Python (HTTP, JSON, the
decisions) than in PostgreSQL, so one process uses one core and leaves the
others idle; uvicorn's workers each run the whole app with a connection pool
of their own. Nothing a worker keeps in memory decides an answer: devices,
sessions, the epoch and the policy are read in each push's own transaction
(``server.sync_service``), so a device disabled, a session ended or an epoch
started through one worker (or ``workstation admin``) holds at once for all.
Two pushes of one device reaching two workers are applied one after the
other (the device's row is locked); pushes of different devices run side by
side.

SQLite is served by one process: its writers take turns anyway, and the log
is copied back by a thread of that process (``server.checkpoint``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

# what the server processes of ``--workers`` are started with
ENV_DB = "WORKSTATION_SERVER_DB"
ENV_SNAPSHOT_DIR = "WORKSTATION_SERVER_SNAPSHOT_DIR"
ENV_POOL_SIZE = "WORKSTATION_SERVER_POOL_SIZE"
ENV_DOCS = "WORKSTATION_SERVER_DOCS"


@dataclass(frozen=True)
class ServerOptions:
    db: str
    host: str = "127.0.0.1"
    port: int = 8700
    snapshot_dir: Path | None = None
    workers: int = 1
    pool_size: int | None = None
    access_log: bool = False
    # TLS: the server's certificate (with its chain) and private key, PEM; the
    # workstations then use an https:// URL. Without them, plain HTTP: only
    # behind a TLS-terminating proxy, or on a network nobody else can reach.
    certfile: Path | None = None
    keyfile: Path | None = None
    docs: bool = False  # the interactive API pages, /docs and /redoc


def serve(options: ServerOptions) -> None:
    """Run the server until it is stopped (SIGINT/SIGTERM)."""
    import uvicorn

    from server.db import make_engine
    from server.migrate import SchemaError, check_schema

    logging.basicConfig(level=logging.INFO)
    certfile = str(options.certfile) if options.certfile else None
    keyfile = str(options.keyfile) if options.keyfile else None
    if options.workers > 1:
        if options.db.startswith("sqlite"):
            sys.exit("error: SQLite is served by one process: leave out --workers")
        engine = make_engine(options.db)
        try:
            check_schema(engine)  # said once, here, rather than by every worker
        except SchemaError as exc:
            sys.exit(f"error: {exc}")
        finally:
            engine.dispose()
        # one directory of replica images for all the workers, not one each
        shared = None
        if options.snapshot_dir is None:
            shared = Path(tempfile.mkdtemp(prefix="replica-images-"))
        os.environ[ENV_DB] = options.db
        os.environ[ENV_SNAPSHOT_DIR] = str(options.snapshot_dir or shared)
        if options.pool_size is not None:
            os.environ[ENV_POOL_SIZE] = str(options.pool_size)
        if options.docs:
            os.environ[ENV_DOCS] = "1"
        try:
            uvicorn.run(
                "workstation.serve:app_from_environment",
                factory=True,
                host=options.host,
                port=options.port,
                workers=options.workers,
                access_log=options.access_log,
                ssl_certfile=certfile,
                ssl_keyfile=keyfile,
            )
        finally:
            if shared is not None:
                shutil.rmtree(shared, ignore_errors=True)
        return

    from server.app import create_app
    from workstation.heap import settle_heap

    try:
        app = create_app(
            make_engine(options.db, pool_size=options.pool_size),
            snapshot_dir=options.snapshot_dir,
            docs=options.docs,
        )
    except SchemaError as exc:  # e.g. a new release before `admin migrate`
        sys.exit(f"error: {exc}")
    settle_heap()
    try:
        uvicorn.run(
            app,
            host=options.host,
            port=options.port,
            access_log=options.access_log,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
    finally:
        # after a graceful stop: no checkpoint is cut short, and the last
        # connection to close folds the log into the database file
        app.state.engine.dispose()


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``serve`` (uvicorn's factory)."""
    from server.app import create_app
    from server.db import make_engine
    from workstation.heap import settle_heap

    logging.basicConfig(level=logging.INFO)
    pool = os.environ.get(ENV_POOL_SIZE)
    engine = make_engine(os.environ[ENV_DB], pool_size=int(pool) if pool else None)
    app = create_app(
        engine,
        snapshot_dir=Path(os.environ[ENV_SNAPSHOT_DIR]),
        docs=os.environ.get(ENV_DOCS) == "1",
    )
    settle_heap()
    return app
