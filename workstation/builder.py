"""One builder for a workstation's parts: the replica, the HTTP client (on a
link the demo and the tests can cut), the sync engine and the desk, wired
together the same way for ``workstation run``, the demo, the benchmark and
the tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from local_db.store import LocalStore, local_now
from sync.client import SyncClient
from sync.engine import PROBE_INTERVAL_S, SyncEngine
from sync.transports import SwitchableTransport

from .desk import CashierDesk, Desk, DeskSettings


@dataclass(frozen=True)
class SyncTiming:
    """How often the engine syncs when idle, how it backs off when the server
    is busy, and how often it probes the link while offline."""

    interval_s: float = 3.0
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    probe_interval_s: float = PROBE_INTERVAL_S


@dataclass
class Workstation:
    store: LocalStore
    client: SyncClient
    engine: SyncEngine
    desk: Desk  # the core every window shares
    cashier: CashierDesk  # the cashier window's desk, on that core
    network: SwitchableTransport | None  # None on a real workstation: no switch

    async def aclose(self) -> None:
        await self.client.aclose()
        self.store.close()


def build_workstation(
    replica: Path | str,
    server_url: str,
    *,
    device_token: str | None = None,
    settings: DeskSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    switchable: bool = False,
    clock: Callable[[], datetime] = local_now,
    timing: SyncTiming | None = None,
    cafile: str | None = None,
) -> Workstation:
    """The parts of one workstation. ``switchable`` puts the link on a switch
    (the demo's network key, the tests' outages); ``transport`` replaces the
    network (the tests' in-process server); ``cafile`` is a private CA's
    certificate for an https:// server (``sync.client.SyncClient``)."""
    store = LocalStore(replica, clock=clock)
    network = SwitchableTransport(transport) if switchable else None
    client = SyncClient(
        server_url, device_token=device_token, transport=network or transport, cafile=cafile
    )
    timing = timing or SyncTiming()
    engine = SyncEngine(
        store,
        client,
        interval_s=timing.interval_s,
        base_delay_s=timing.base_delay_s,
        max_delay_s=timing.max_delay_s,
        probe_interval_s=timing.probe_interval_s,
    )
    desk = Desk(store, client, settings, network=network, engine=engine)
    return Workstation(store, client, engine, desk, CashierDesk(desk), network)
