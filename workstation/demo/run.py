"""``workstation demo``: a whole hospital on one machine.

Starts the central server on SQLite on a free local port, seeds a demo
hospital on first start (clerks for every role, 10,000 patients), enrolls this
workstation (its token in the explicit file secrets store, as the login screen
says) and opens the workstation. F12 cuts and restores the link to the server.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from local_db.files import private_database, private_directory
from server.app import create_app
from server.auth import AuthService
from server.db import make_engine
from workstation.app import make_app, run_app
from workstation.builder import Workstation, build_workstation
from workstation.desk import DeskSettings
from workstation.desk.core import enroll_workstation
from workstation.desk.i18n import default_language
from workstation.instance import LOCK_FILE
from workstation.logs import log_to_file
from workstation.secrets import FileSecretStore

from .seed import DEMO_CLERKS, seed_demo_hospital

log = logging.getLogger(__name__)

DEVICE_NAME = "演示收费窗口 Demo cashier window"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedServer:
    """The central server in a background thread of this process."""

    def __init__(self, app: FastAPI, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="central-server", daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout_s: float = 20.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the embedded central server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def prepare(data_dir: Path, patients: int, reset: bool) -> tuple[EmbeddedServer, Engine]:
    if reset and data_dir.exists():
        for entry in data_dir.iterdir():  # all but the lock this process holds
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    private_directory(data_dir)
    central_db = data_dir / "central.db"
    fresh = not central_db.exists()
    private_database(central_db)  # the demo's clerks' password hashes, its patients
    engine = make_engine(f"sqlite:///{central_db}")
    app = create_app(engine, migrate=True)  # a demo database migrates itself
    if fresh:
        print(f"Seeding the demo hospital ({patients:,} patients)…", flush=True)
        summary = seed_demo_hospital(engine, patients)
        print(
            f"  {summary.patients:,} patients, {summary.cards:,} cards, {summary.transfers:,} payments.",
            flush=True,
        )
    server = EmbeddedServer(app, free_port())
    server.start()
    return server, engine


def run_demo(
    data_dir: Path, *, patients: int = 10_000, language: str | None = None, reset: bool = False
) -> None:
    data_dir = data_dir.resolve()
    private_directory(data_dir)
    stop_logging = log_to_file(data_dir / "workstation.log")
    server, engine = prepare(data_dir, patients, reset)
    secrets = FileSecretStore(
        data_dir / "secrets.json"
    )  # the demo's explicit choice; said on screen
    station: Workstation | None = None
    try:
        token = secrets.get("device_token")
        if token is None:
            code = AuthService(engine).create_enrollment_code(DEVICE_NAME)
            enrolling = build_workstation(data_dir / "workstation.db", server.url)

            async def enroll() -> str:
                try:
                    return await enroll_workstation(
                        enrolling.client, enrolling.store, code, DEVICE_NAME
                    )
                finally:
                    await enrolling.aclose()

            token = asyncio.run(enroll())
            secrets.set("device_token", token)
        station = build_workstation(
            data_dir / "workstation.db",
            server.url,
            device_token=token,
            settings=DeskSettings(window_name=DEVICE_NAME, receipts_dir=data_dir / "receipts"),
            switchable=True,
        )
        from screens.login import DemoInfo

        demo = DemoInfo(
            accounts=[(u, p, tuple(roles)) for u, _, roles, p in DEMO_CLERKS],
            secrets_description=(secrets.description_zh, secrets.description),
        )
        app = make_app(
            station.desk,
            cashier=station.cashier,
            language=language or default_language(),
            demo=demo,
        )
        run_app(app)
    finally:
        if station is not None:
            station.store.close()
        server.stop()
        engine.dispose()  # stops the log checkpointer; the last connection folds the log in
        stop_logging()
