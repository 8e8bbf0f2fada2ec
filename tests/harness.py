"""Test harness: a central server and workstations wired together in-process."""

from __future__ import annotations

from pathlib import Path

import httpx

from local_db.store import LocalStore
from server.app import create_app
from server.db import make_engine
from sync.client import SyncClient
from sync.engine import SyncEngine
from sync.transports import SwitchableTransport
from workstation.desk import Desk, DeskSettings, enroll_workstation

PASSWORD = "secret-123"


class Central:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.app = create_app(self.engine)
        self.auth = self.app.state.auth
        self.sync = self.app.state.sync

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)

    def clerk(self, username: str, roles: list[str], name: str | None = None) -> str:
        return self.auth.create_clerk(username, name or username, roles, PASSWORD)

    def close(self) -> None:
        self.engine.dispose()


class Station:
    """One workstation: replica, client (through a switchable link), engine, desk."""

    def __init__(
        self,
        central: Central,
        directory: Path,
        name: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.central = central
        self.name = name
        self.store = LocalStore(directory / "replica.db")
        self.network = SwitchableTransport(transport or central.transport())
        self.client = SyncClient("http://central", transport=self.network)
        self.engine = SyncEngine(
            self.store, self.client, interval_s=0.05, base_delay_s=0.01, max_delay_s=0.05
        )
        self.desk = Desk(
            self.store,
            self.client,
            DeskSettings(window_name=name, receipts_dir=directory / "receipts", ack_wait_s=0),
            network=self.network,
            engine=self.engine,
        )

    async def enroll_and_login(self, username: str) -> None:
        code = self.central.auth.create_enrollment_code(self.name)
        await enroll_workstation(self.client, self.store, code, self.name)
        await self.desk.login(username, PASSWORD)
        await self.engine.sync_once()  # bootstrap + number blocks

    def offline(self) -> None:
        self.network.cut = True

    def online(self) -> None:
        self.network.cut = False

    async def close(self) -> None:
        await self.client.aclose()
        self.store.close()
