"""The sync engine: runs in the background and never loses an operation.

One cycle: push every pending operation (oldest first, in batches), then pull
until caught up, rebasing the local view, then top up the number blocks.
Failures back off exponentially with full jitter; a local command pokes the
engine so that, online, its operation leaves within a moment. SQLite work runs
in a thread so the clerk's screen never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import os
import random
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, BinaryIO

from domain.commands import roles_for_numbers
from domain.leases import NUMBER_BLOCK
from domain.numbers import Series
from local_db.image import SCHEMA_ID
from local_db.store import LocalStore, OutboxEntry, ServerResult

from .client import (
    Offline,
    Refused,
    ReplicaMark,
    ServerBusy,
    SyncClient,
    SyncError,
    Unauthorised,
)
from .protocol import (
    EPOCH_CHANGED,
    MAX_BODY_BYTES,
    MAX_OPS_PER_PUSH,
    PULL_LIMIT_MAX,
    SERVER_BEHIND,
    PushRequest,
)
from .snapshot import read_snapshot

log = logging.getLogger(__name__)


def _gunzip(source: str, target: str, progress: Callable[[int], None] | None = None) -> None:
    """Unpack a gzip file onto disk (fsynced: it is about to become the replica),
    telling ``progress`` how many packed bytes are read. Raises ValueError if
    it is not valid gzip (the CRC is checked too)."""
    try:
        with open(source, "rb") as raw, gzip.open(raw, "rb") as packed, open(target, "wb") as out:
            while block := packed.read(1 << 20):
                out.write(block)
                if progress is not None:
                    progress(raw.tell())
            out.flush()
            os.fsync(out.fileno())
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"replica image is not valid gzip: {exc}") from None


class _Download:
    """A file being downloaded, written and hashed in a thread a megabyte at a
    time, so the event loop never waits on the disk."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = 0
        self._digest = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._file: BinaryIO | None = None

    def __enter__(self) -> _Download:
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed in __exit__)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._file is not None:
            self._file.close()

    async def write(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        self.size += len(chunk)
        if self._buffered >= DOWNLOAD_BLOCK:
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        await asyncio.to_thread(self._put, data)

    def _put(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._digest.update(data)

    def sha256(self) -> str:
        return self._digest.hexdigest()


DOWNLOAD_BLOCK = 1 << 20
PROGRESS_EVERY_S = 0.25  # the progress bar moves at most this often
PREPARING_RETRY_S = 5.0  # the server builds the image a new workstation waits for
# While offline the link is probed (GET /health) this often, with jitter: a
# link that comes back is noticed within seconds whatever the outage's length,
# and fifty windows probing cost the server a few tiny requests a second.
PROBE_INTERVAL_S = 3.0
PROBE_TIMEOUT_S = 2.0
# Cycles in a row in which the server deferred this device's operations,
# waiting for one this workstation cannot send, before the alarm.
STUCK_CYCLES = 5
STUCK_ZH = "同步已停滞：中心服务器在等本机第 {seq} 号操作，本机无法补发。请联系信息科。"
STUCK_EN = (
    "Sync is stuck: the server waits for this workstation's operation {seq}, which it "
    "cannot send. Call IT."
)

# (refill when fewer than this many are left, how many to ask for)
NUMBER_STOCK: dict[Series, tuple[int, int]] = {Series.CARD: (50, 200), Series.RECEIPT: (200, 1000)}
# a number block refused without a Retry-After: asked for again after this long
LEASE_RETRY_S = 60.0


# The server ended the session for good (an administrator's revocation, a
# lockout, a disabled clerk or workstation): the clerk is told and goes back
# to the login screen; logging in again by itself (reauthenticate) is only
# for a session that ran out.
SESSION_ENDED_CODES = frozenset({"session_ended", "clerk_disabled", "device_unknown"})


class NotLoggedIn(Exception):
    """No clerk session with the server: nothing can be pushed or pulled yet."""


@dataclass(frozen=True)
class Progress:
    """How far a bootstrap has come, for the clerk's progress bar."""

    phase: str  # "preparing" (the server builds the image), "download", "unpack", "install"
    started: float  # time.monotonic() when the phase began
    done: int = 0  # bytes so far
    total: int | None = None  # bytes in all, if known

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(self.done / self.total, 1.0)

    def seconds_left(self, now: float) -> float | None:
        """By the rate so far; None until there is one."""
        elapsed = now - self.started
        if not self.total or self.done <= 0 or elapsed < 0.5:
            return None
        return max(self.total - self.done, 0) * elapsed / self.done


@dataclass(frozen=True)
class SyncStatus:
    online: bool | None = None  # None until the first attempt
    has_session: bool = False
    last_success_at: datetime | None = None
    error_code: str | None = None
    error_zh: str | None = None
    error_en: str | None = None
    failures: int = 0
    retry_in_s: float | None = None
    clock_skew_s: float = 0.0
    clock_skew_flagged: bool = False
    busy: str | None = None  # "bootstrap" while loading a snapshot
    # the replica holds the server's data (bootstrapped once); until then the
    # window is not "online" whatever the link, and search cannot be trusted
    replica_ready: bool = True
    progress: Progress | None = None  # while bootstrapping


@dataclass
class SyncReport:
    pushed: int = 0
    rejected: int = 0
    pulled: int = 0
    bootstrapped: bool = False
    leased: list[str] = field(default_factory=list)
    # the server waits for this device's operation of this sequence number
    # before the ones it deferred; None if nothing was deferred
    waits_for: int | None = None
    # the server refused number blocks of a series this workstation has none left of
    out_of_numbers: SyncError | None = None


# A push stays well under the server's body limit (413 above it) whatever its
# ops hold, so no batch of large ops can keep the outbox from draining.
PUSH_BYTES = MAX_BODY_BYTES // 2
# an Operation's field names, quotes, colons, commas, braces and its sequence number
_WIRE_OP_FRAME = 240


def wire_bytes_bound(entry: OutboxEntry) -> int:
    """At least the length of ``op``'s JSON in a push. The payload is JSON text
    written by the command's model (control characters already escaped), so
    each of its bytes takes at most two inside the push (a quote or a
    backslash is escaped again); any byte of the other fields at most six
    (``\\u00XX``); the hash is hex."""
    op = entry.op
    others = op.op_id + (op.device_id or "") + op.kind + op.clerk_id + op.at + op.hlc
    return (
        2 * len(op.payload.encode()) + 6 * len(others.encode()) + len(op.args_hash) + _WIRE_OP_FRAME
    )


def within_bytes(batch: list[OutboxEntry], budget: int) -> list[OutboxEntry]:
    """The first ops of ``batch`` whose JSON stays within ``budget`` bytes
    (by :func:`wire_bytes_bound`). The first op always goes, so the outbox
    moves on whatever its size."""
    total = 0
    for i, op in enumerate(batch):
        total += wire_bytes_bound(op)
        if total > budget and i > 0:
            return batch[:i]
    return batch


class SyncEngine:
    def __init__(
        self,
        store: LocalStore,
        client: SyncClient,
        *,
        reauthenticate: Callable[[], Awaitable[bool]] | None = None,
        on_status: Callable[[SyncStatus], None] | None = None,
        on_issues: Callable[[int], None] | None = None,
        on_session_ended: Callable[[SyncError], None] | None = None,
        rng: random.Random | None = None,
        push_batch: int = MAX_OPS_PER_PUSH,
        push_bytes: int = PUSH_BYTES,
        pull_limit: int = 1000,
        interval_s: float = 3.0,
        base_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self.store = store
        self.client = client
        self.reauthenticate = reauthenticate
        self.on_status = on_status
        self.on_issues = on_issues
        self.on_session_ended = on_session_ended
        self.rng = rng or random.Random()
        self.push_batch = push_batch
        self.push_bytes = push_bytes
        self.pull_limit = pull_limit
        self.interval_s = interval_s
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.probe_interval_s = probe_interval_s
        self._offline = False  # the last cycle could not reach the server: probe until it can
        self.status = SyncStatus(has_session=client.session_token is not None)
        self._wake = asyncio.Event()
        self._stopped = False
        self._cycle_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        # op id -> the server's answer, awaited by the window that committed it
        self._answers: dict[str, asyncio.Future[ServerResult]] = {}
        self._progress_shown = 0.0
        self._deferred_cycles = 0  # cycles in a row whose ops the server deferred
        # number blocks refused by the server: not asked for again before this
        # (time.monotonic()), nor in the same session after a 403; the refusal
        self.lease_retry: dict[Series, float] = {}
        self._lease_refused: dict[Series, SyncError] = {}
        self._lease_session: str | None = None
        # blocks to tell the server again (after a restore), not before this
        self._blocks_untold = False
        self._tell_after = 0.0

    # -- status --------------------------------------------------------------

    def _set_status(self, **changes: Any) -> None:
        self.status = replace(self.status, **changes)
        if self.on_status is not None:
            self.on_status(self.status)

    def backoff_delay(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^(failures-1))]."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** max(failures - 1, 0)))
        return self.rng.uniform(0, ceiling)

    def probe_delay(self) -> float:
        """While offline, the next probe of the link: the probe interval with
        jitter (half to one and a half of it), so that the windows of a
        hospital whose link came back do not all ask at the same moment."""
        return self.rng.uniform(0.5, 1.5) * self.probe_interval_s

    # -- the loop ------------------------------------------------------------

    def poke(self) -> None:
        """Sync soon: a clerk just committed an operation. Safe from any thread."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(self._wake.set)
        else:
            self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self.poke()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._check_replica()
        while not self._stopped:
            delay = self.interval_s
            # cleared before the cycle, not after: a commit during the cycle
            # pokes again, and its op leaves in the next cycle, at once
            self._wake.clear()
            if self._offline and not await self.client.reachable(PROBE_TIMEOUT_S):
                # the link is still down: no cycle, no failure counted (a
                # clerk's commit pokes a probe, not another failed cycle)
                delay = self.probe_delay()
                self._set_status(online=False, retry_in_s=round(delay, 1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            try:
                await self.sync_once()
                self._offline = False
            except NotLoggedIn:
                self._set_status(has_session=False, retry_in_s=None)
            except Offline as exc:
                # from now on a cheap probe of the link, every few seconds with
                # jitter, until it answers; then a cycle at once
                self._offline = True
                delay = self.probe_delay()
                self._set_status(
                    online=False,
                    has_session=self.client.session_token is not None,
                    error_code=exc.code,
                    error_zh=exc.message_zh,
                    error_en=exc.message_en,
                    failures=self.status.failures + 1,
                    retry_in_s=round(delay, 1),
                )
            except SyncError as exc:
                failures = self.status.failures + 1
                delay = self.backoff_delay(failures)
                if exc.code == "snapshot_preparing":
                    # the server is building the image a new workstation needs:
                    # ask again soon, whatever the failures so far
                    delay = min(delay, PREPARING_RETRY_S)
                self._set_status(
                    online=True,  # it answered, if only to say no
                    has_session=not isinstance(exc, Unauthorised)
                    and self.client.session_token is not None,
                    error_code=exc.code,
                    error_zh=exc.message_zh,
                    error_en=exc.message_en,
                    failures=failures,
                    retry_in_s=round(delay, 1),
                )
            except Exception as exc:  # never let the engine die: the outbox waits
                log.exception("sync cycle failed")
                failures = self.status.failures + 1
                delay = self.backoff_delay(failures)
                self._set_status(
                    error_code="internal",
                    error_zh=f"同步出错：{exc}",
                    error_en=f"Sync failed: {exc}",
                    failures=failures,
                    retry_in_s=round(delay, 1),
                )
            try:
                await asyncio.to_thread(self.store.checkpoint)
            except Exception:
                log.exception("checkpoint failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def sync_once(self) -> SyncReport:
        async with self._cycle_lock:
            return await self._cycle()

    async def _check_replica(self) -> bool:
        ready = await asyncio.to_thread(self.store.get_meta, "epoch") is not None
        if ready != self.status.replica_ready:
            self._set_status(replica_ready=ready)
        return ready

    async def _cycle(self) -> SyncReport:
        if self.client.session_token is None and (
            self.reauthenticate is None or not await self.reauthenticate()
        ):
            raise NotLoggedIn
        report = SyncReport()
        try:
            if not await self._check_replica():
                await self.bootstrap()
                report.bootstrapped = True
            await self._push_all(report)
            await self._pull_all(report)
            if self._blocks_untold and time.monotonic() >= self._tell_after:
                await self._tell_number_blocks()
            await self._replenish_numbers(report)
        except Unauthorised as exc:
            self.client.session_token = None
            if exc.code in SESSION_ENDED_CODES and self.on_session_ended is not None:
                self.on_session_ended(exc)
            raise
        self._deferred_cycles = self._deferred_cycles + 1 if report.waits_for else 0
        stuck = self._deferred_cycles >= STUCK_CYCLES and report.waits_for is not None
        if stuck:
            # nothing here to send what the server waits for: say so, loudly
            await asyncio.to_thread(self.store.note_stuck, report.waits_for or 0)
        out = report.out_of_numbers
        self._set_status(
            online=True,
            has_session=True,
            last_success_at=datetime.now().astimezone(),
            error_code="ops_stuck" if stuck else out.code if out else None,
            error_zh=STUCK_ZH.format(seq=report.waits_for)
            if stuck
            else out.message_zh
            if out
            else None,
            error_en=STUCK_EN.format(seq=report.waits_for)
            if stuck
            else out.message_en
            if out
            else None,
            failures=0,
            retry_in_s=None,
        )
        if report.rejected and self.on_issues is not None:
            self.on_issues(report.rejected)
        return report

    # -- push ----------------------------------------------------------------

    async def _replica_mark(self) -> ReplicaMark | None:
        def read() -> ReplicaMark | None:
            epoch = self.store.get_meta("epoch")
            if epoch is None:
                return None
            return ReplicaMark(
                epoch=epoch,
                cursor=int(self.store.get_meta("cursor", "0") or 0),
                mark=self.store.get_meta("cursor_mark"),
                confirmed=self.store.answered_through(),
                newest_lease=self.store.newest_lease(),
            )

        return await asyncio.to_thread(read)

    async def _push_all(self, report: SyncReport) -> None:
        reloaded = False
        while True:
            batch = await asyncio.to_thread(self.store.ops_to_push, self.push_batch)
            if not batch:
                return
            batch = within_bytes(batch, self.push_bytes)
            request = PushRequest(
                device_time=self.store.clock().isoformat(timespec="milliseconds"),
                ops=[entry.op for entry in batch],
            )
            try:
                answer = await self.client.push(request, await self._replica_mark())
            except Refused as exc:
                if exc.code not in (EPOCH_CHANGED, SERVER_BEHIND) or reloaded:
                    raise
                # the server was restored from a backup: load the data again and
                # tell it our number blocks before anything is pushed, so that no
                # op is refused for a block the restore forgot
                cursor = int(await asyncio.to_thread(self.store.get_meta, "cursor", "0") or 0)
                await self._reload(cursor, exc.detail or {}, restored=exc.code == SERVER_BEHIND)
                report.bootstrapped = reloaded = True
                continue
            except SyncError:
                # answered ops count their attempt in record_results; these were not answered
                await asyncio.to_thread(
                    self.store.note_attempt, [entry.op.op_id for entry in batch]
                )
                raise
            results = [
                ServerResult(
                    op_id=r.op_id,
                    status=r.status,
                    code=r.code,
                    params=r.params,
                    server_seq=r.server_seq,
                    result=r.result,
                )
                for r in answer.results
            ]
            await asyncio.to_thread(self.store.record_results, results)
            self._answer(results)
            self._set_status(
                online=True,
                clock_skew_s=answer.clock_skew_s,
                clock_skew_flagged=answer.clock_skew_flagged,
            )
            report.pushed += sum(1 for r in results if r.status in ("applied", "applied_modified"))
            report.rejected += sum(1 for r in results if r.status in ("rejected", "needs_review"))
            deferred = [r for r in results if r.status == "deferred"]
            if not deferred:
                continue
            gap = next((r for r in deferred if r.code == "sequence_gap"), None)
            expected = int((gap.params or {}).get("expected", 0)) if gap is not None else 0
            # the server lost operations of this device (a restore): send them
            # again from the one it waits for, and push on at once
            if expected and await asyncio.to_thread(self.store.heal_gap, expected):
                log.warning("the server waits for op %d of this device: sending again", expected)
                continue
            report.waits_for = expected or None
            return  # the server wants something else first; the next cycle retries

    # -- answers for the window -------------------------------------------------

    def answer_for(self, op_id: str) -> asyncio.Future[ServerResult]:
        """A future the engine resolves with the server's answer to ``op_id``
        (applied, applied_modified, rejected or needs_review; a deferred op
        is still waiting). Call on the engine's event loop; cancel it (or let
        it time out) when no longer interested."""
        future = self._answers.get(op_id)
        if future is None or future.done():
            future = self._answers[op_id] = asyncio.get_running_loop().create_future()
            future.add_done_callback(self._forget_answer(op_id))
        return future

    def _forget_answer(self, op_id: str) -> Callable[[asyncio.Future[ServerResult]], None]:
        def forget(future: asyncio.Future[ServerResult]) -> None:
            if self._answers.get(op_id) is future:
                del self._answers[op_id]

        return forget

    def _answer(self, results: list[ServerResult]) -> None:
        if not self._answers:
            return
        for result in results:
            future = self._answers.get(result.op_id)
            if future is not None and not future.done() and result.status != "deferred":
                future.set_result(result)

    # -- pull ----------------------------------------------------------------

    async def _pull_all(self, report: SyncReport) -> None:
        cursor = int(await asyncio.to_thread(self.store.get_meta, "cursor", "0") or 0)
        epoch = await asyncio.to_thread(self.store.get_meta, "epoch")
        confirmed = int(await asyncio.to_thread(self.store.get_meta, "device_last_seq", "0") or 0)
        # what the server must know of this device: every op it answered, pulled or not
        answered = await asyncio.to_thread(self.store.answered_through)
        mark = await asyncio.to_thread(self.store.get_meta, "cursor_mark")
        # Every page rebases (undo pending effects, replay what is unconfirmed): after a
        # long outage ask for pages big enough to confirm the backlog in one or two.
        unconfirmed = await asyncio.to_thread(self.store.unconfirmed_count)
        limit = min(PULL_LIMIT_MAX, max(self.pull_limit, 3 * unconfirmed))
        while True:
            try:
                page = await self.client.pull(
                    cursor, limit, mark=mark, confirmed=max(answered, confirmed), epoch=epoch
                )
            except Refused as exc:
                if exc.code != SERVER_BEHIND:
                    raise
                await self._reload(cursor, exc.detail or {}, restored=True)
                report.bootstrapped = True
                return
            if epoch is not None and page.epoch != epoch:
                log.warning("server epoch changed (%s -> %s): re-bootstrapping", epoch, page.epoch)
                await self._reload(cursor, {}, restored=False)
                report.bootstrapped = True
                return
            if page.head < cursor or page.device_last_seq < confirmed:
                # a server that does not check marks: the same signs, seen here
                await self._reload(
                    cursor,
                    {"head": page.head, "device_last_seq": page.device_last_seq},
                    restored=True,
                )
                report.bootstrapped = True
                return
            self.store.hlc.observe_wall(page.server_time)
            changes = [(c.table, c.row, c.key) for c in page.changes]
            mark = page.mark  # the server's mark of the entry at the new cursor
            report.pulled += await asyncio.to_thread(
                self.store.apply_pull,
                changes,
                next_cursor=page.next_cursor,
                epoch=page.epoch,
                device_last_seq=page.device_last_seq,
                mark=mark,
            )
            cursor, confirmed = page.next_cursor, page.device_last_seq
            if not page.has_more:
                return

    async def _reload(self, cursor: int, found: dict[str, Any], *, restored: bool) -> None:
        """The server was restored from a backup: with a new epoch, or
        (``restored``) without one, found behind this replica. Recover the same
        way: load the data again (the outbox is kept and sent again), then tell
        the server the number blocks this workstation holds, which it may have
        forgotten. A restore found behind leaves a Sync issue saying so."""
        if restored:
            log.warning("the server is behind this replica (%s): re-bootstrapping", found)
            await asyncio.to_thread(
                self.store.note_server_restored,
                int(found.get("head", 0)),
                cursor,
                int(found.get("device_last_seq", 0)),
            )
        if found.get("reason") != "lease_lost":
            # only a lease grant lost (the change log and this device's ops
            # are whole): telling the blocks again is enough
            await self.bootstrap()
        await self._tell_number_blocks()

    async def _tell_number_blocks(self) -> None:
        """Tell the server the blocks held. Refused for the device's lease
        limits (429): told again in a later cycle, once Retry-After passed."""
        self._blocks_untold = True
        held = await asyncio.to_thread(self.store.number_blocks_held)
        if not held:
            self._blocks_untold = False
            return
        try:
            answer = await self.client.leases_held(held)
        except ServerBusy as exc:
            if exc.status != 429:
                raise
            log.warning("number blocks not told again yet: %s", exc)
            self._tell_after = time.monotonic() + (exc.retry_after or LEASE_RETRY_S)
            return
        self._blocks_untold = False
        if answer.refused:
            # granted again to another since the restore: stop using them; an op
            # already made with one of their numbers is refused and shown
            log.warning("number blocks held by another since the restore: %s", answer.refused)
            await asyncio.to_thread(self.store.stop_using, answer.refused)

    # -- bootstrap -----------------------------------------------------------

    async def bootstrap(self) -> int:
        """Load the server's snapshot; the outbox is kept and replayed on top.
        The replica image comes first; the row snapshot is the fallback when
        the server has no image for this workstation's schema (409, or 404
        from an older server) or the image arrived damaged. Returns the rows
        loaded. Its progress is in ``status.progress``; nothing here blocks
        the event loop (files are written and read in threads)."""
        self._set_status(busy="bootstrap", progress=self._progress("preparing"))
        try:
            loaded = None
            if self.store.path != ":memory:":
                try:
                    loaded = await self._bootstrap_from_image()
                except Refused as exc:
                    if exc.status not in (404, 409):
                        raise
                    log.info("no replica image for this workstation (%s): loading rows", exc.code)
                except ValueError as exc:
                    log.warning("replica image unusable (%s): loading rows instead", exc)
            if loaded is None:
                loaded = await self._bootstrap_from_rows()
            self._set_status(progress=self._progress("install"))
            await asyncio.to_thread(self.store.checkpoint, True)
            self._set_status(replica_ready=True)
            return loaded
        finally:
            self._set_status(busy=None, progress=None)

    def _progress(self, phase: str, total: int | None = None) -> Progress:
        return Progress(phase=phase, started=time.monotonic(), total=total)

    def _advance(self, done: int) -> None:
        """Report bytes done, at most every PROGRESS_EVERY_S (a redraw each)."""
        progress = self.status.progress
        if progress is None:
            return
        now = time.monotonic()
        if done < (progress.total or 0) and now - self._progress_shown < PROGRESS_EVERY_S:
            return
        self._progress_shown = now
        self._set_status(progress=replace(progress, done=done))

    def _temp_file(self, prefix: str, suffix: str) -> str:
        """A new file beside the replica: an image is renamed over the replica,
        which only works within one file system."""
        directory = (
            os.path.dirname(os.path.abspath(self.store.path))
            if self.store.path != ":memory:"
            else None
        )
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        os.close(fd)
        return path

    async def _bootstrap_from_image(self) -> int:
        """Download the image while hashing it, check the hash, unpack, install.
        Raises ValueError, with the replica untouched, if the image is damaged."""
        download = self._temp_file("image-", ".db.gz")
        unpacked = self._temp_file("image-", ".db")
        try:
            with _Download(download) as out:

                def sized(total: int | None) -> None:
                    self._set_status(progress=self._progress("download", total))

                async def save(chunk: bytes) -> None:
                    await out.write(chunk)
                    self._advance(out.size)

                info = await self.client.snapshot_image(SCHEMA_ID, save, sized)
                await out.flush()
            self._advance(out.size)
            if out.sha256() != info.sha256:
                raise ValueError("replica image does not match its SHA-256")
            packed = out.size
            self._set_status(progress=self._progress("unpack", packed))
            loop = asyncio.get_running_loop()

            def unpacking(done: int) -> None:
                loop.call_soon_threadsafe(self._advance, done)

            await asyncio.to_thread(_gunzip, download, unpacked, unpacking)
            self._set_status(progress=self._progress("install"))
            await asyncio.to_thread(
                self.store.install_image,
                unpacked,
                cursor=info.cursor,
                epoch=info.epoch,
                device_last_seq=info.device_last_seq,
            )
            return info.rows
        finally:
            for path in (download, unpacked):  # unpacked is gone once installed
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    async def _bootstrap_from_rows(self) -> int:
        path = self._temp_file("snapshot-", ".ndjson.gz")
        try:
            self._set_status(progress=self._progress("download"))
            with _Download(path) as out:
                async for chunk in self.client.snapshot():
                    await out.write(chunk)
                    self._advance(out.size)
                await out.flush()
            self._set_status(progress=self._progress("install"))
            return await asyncio.to_thread(self._load_snapshot_file, path)
        finally:
            os.unlink(path)

    def _load_snapshot_file(self, path: str) -> int:
        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    yield block

        items = read_snapshot(chunks())
        header = next(items)
        if header.get("type") != "header":
            raise ValueError("snapshot has no header")

        def batches() -> Iterator[tuple[str, list[dict[str, Any]]]]:
            for item in items:
                if item.get("type") == "rows":
                    yield item["table"], item["rows"]

        return self.store.load_snapshot(
            batches(),
            cursor=int(header["cursor"]),
            epoch=str(header["epoch"]),
            device_last_seq=int(header["device_last_seq"]),
        )

    # -- number blocks -------------------------------------------------------

    async def _replenish_numbers(self, report: SyncReport) -> None:
        """Ask for a block of each series running low. A refusal (the clerk's
        roles use no such numbers: 403; the device's limits reached: 429)
        fails nothing: the workstation goes on with the numbers it holds and
        asks again after the server's Retry-After (after a 403: in the next
        clerk's session); a series it has none left of is said on the status
        bar, with the server's reason."""
        if self.client.session_token != self._lease_session:  # another clerk: ask afresh
            self._lease_session = self.client.session_token
            self.lease_retry.clear()
            self._lease_refused.clear()
        roles = self.client.roles
        for series, (low, count) in NUMBER_STOCK.items():
            left = await asyncio.to_thread(self.store.numbers_left, series)
            if left >= low:
                self._lease_refused.pop(series, None)
                continue
            if roles is not None and not roles & roles_for_numbers(series):
                continue  # this clerk takes no numbers of the series: nothing to ask for
            if time.monotonic() >= self.lease_retry.get(series, 0.0):
                try:
                    lease = await self.client.lease(NUMBER_BLOCK, series.value, count)
                except (Refused, ServerBusy) as exc:
                    if isinstance(exc, ServerBusy) and exc.status != 429:
                        raise  # the server is unwell: the cycle backs off
                    log.warning("no %s numbers leased: %s", series.value, exc)
                    wait = float("inf") if exc.status == 403 else exc.retry_after or LEASE_RETRY_S
                    self.lease_retry[series] = time.monotonic() + wait
                    self._lease_refused[series] = exc
                else:
                    self._lease_refused.pop(series, None)
                    await asyncio.to_thread(self.store.add_lease, lease)
                    report.leased.append(f"{lease.resource}:{lease.first}-{lease.last}")
                    continue
            if left == 0 and series in self._lease_refused:
                report.out_of_numbers = self._lease_refused[series]
