"""The benchmark run: set up, measure, print, write ``bench/results.json``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx

from domain.numbers import Series
from domain.state import Actor, Policy
from local_db.store import LocalStore
from server.app import create_app
from server.checkpoint import QUIET_S, WalCheckpointer
from server.db import make_engine
from server.site import save_policy
from server.snapshots import GZIP_LEVEL
from sync.client import SyncClient
from sync.engine import SyncEngine, SyncReport
from sync.protocol import SnapshotImageInfo
from workstation.builder import build_workstation
from workstation.desk import DeskSettings
from workstation.desk.core import enroll_workstation
from workstation.heap import settle_heap

from .central import BENCH_PASSWORD, BENCH_USER, DATA_DIR, ensure_central, working_copy
from .stats import Results, percentile
from .workload import (
    active_cards,
    ensure_numbers,
    make_ops,
    make_queries,
    people_for,
    top_up_build,
)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results.json"
MB = 1024 * 1024

TOP_UP_P99_MS = 5.0
SEARCH_P99_MS = 10.0
DRAIN_OPS_PER_S = 5_000.0
BOOTSTRAP_S = 30.0
IMAGE_BUILD_PEAK_RSS_MB = 500.0
KEYPRESS_P95_MS = 50.0
RSS_AFTER_SEARCHES_MB = 200.0
RSS_GROWTH_MB = 5.0
IDLE_CPU_PERCENT = 1.0
COLD_START_S = 0.6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    import bench

    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--patients", type=int, default=1_000_000, help="register size")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached server database")
    parser.add_argument("--top-ups", type=int, default=3_000, help="top_up latency samples")
    parser.add_argument("--queries", type=int, default=300, help="search queries per kind")
    parser.add_argument("--drain-ops", type=int, default=10_000, help="outbox size to drain")
    parser.add_argument("--no-http", action="store_true", help="skip the uvicorn drain")
    parser.add_argument(
        "--no-window",
        action="store_true",
        help="skip the window's figures (keypress to results, its memory, cold start, idle CPU)",
    )
    parser.add_argument(
        "--window-keys", type=int, default=500, help="keys typed into the cashier desk's search"
    )
    parser.add_argument("--cold-starts", type=int, default=5, help="cold starts timed")
    parser.add_argument("--idle-s", type=float, default=20.0, help="seconds the idle CPU is read")
    parser.add_argument("--seed", type=int, default=7, help="workload random seed")
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        choices=["top_up", "search"],
        help="cProfile a phase that runs on the main thread; stats go to bench/data/profiles/ "
        "(bootstrap, drain and pull work in threads and another process: use py-spy, e.g. "
        "'.venv/bin/py-spy record -o bench/data/bench.svg -- .venv/bin/python -m bench')",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep this run's server copy and replica afterwards"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    return parser.parse_args(argv)


@contextlib.contextmanager
def profiled(name: str, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        directory = DATA_DIR / "profiles"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.prof"
        profiler.dump_stats(path)
        print(f"  profile of {name}: {path}", flush=True)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


class CountingImage:
    """Wraps ``SyncClient.snapshot_image`` to count the bytes and note when the download ended."""

    def __init__(self, client: SyncClient) -> None:
        self.inner = client.snapshot_image
        self.bytes = 0
        self.done_at: float | None = None

    async def __call__(
        self,
        schema_id: str,
        sink: Callable[[bytes], Awaitable[None]],
        on_size: Callable[[int | None], None] | None = None,
    ) -> SnapshotImageInfo:
        async def counted(chunk: bytes) -> None:
            self.bytes += len(chunk)
            await sink(chunk)

        info = await self.inner(schema_id, counted, on_size)
        self.done_at = time.perf_counter()
        return info


def cpu_probe_ms() -> float:
    """A fixed piece of CPU work of the drain's kind (Python objects, JSON,
    SQLite statements, in memory), median of 5 runs: how fast this machine is
    at the moment. Its speed drifts by tens of percent over a day, so drain
    figures of two runs compare only next to this."""
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
        for i in range(20_000):
            conn.execute("INSERT INTO t VALUES (?, ?)", (f"{i:08d}", json.dumps({"n": i})))
        conn.close()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


CPU_PROBE_WORK = (
    "fixed CPU work: 20,000 json.dumps + SQLite inserts into an in-memory table, median of 5 "
    "(lower is a faster machine; this VM's speed drifts, compare drain figures next to it)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def file_mb(path: Path) -> float:
    return path.stat().st_size / MB if path.exists() else 0.0


def child_output(command: list[str]) -> str:
    """Run a measuring child to its end; its last line of output (JSON)."""
    done = subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    return done.stdout.strip().splitlines()[-1]


@contextlib.asynccontextmanager
async def serving(central_db: Path) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """The central server on ``central_db``, served by uvicorn in another
    process (bench/serve.py), once it answers; stopped afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.serve", "--db", str(central_db), "--port", str(port)],
        cwd=ROOT,
    )
    try:
        probe = SyncClient(url)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    await probe.health()
                    break
                except Exception:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("the uvicorn server did not start") from None
                    await asyncio.sleep(0.2)
        finally:
            await probe.aclose()
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def phase(title: str) -> None:
    print(f"\n== {title}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n = args.patients
        self.results = Results()
        self.rng = random.Random(args.seed)
        self.work_dir = DATA_DIR / f"run-{self.n}"
        self.load_at_start = 0.0
        self.shift_id: str | None = None  # the bench clerk's shift (set at login)

    # -- set-up ---------------------------------------------------------------

    def environment(self) -> None:
        phase("machine")
        probe = DATA_DIR / "fsync-probe"
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        samples = []
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            for _ in range(300):
                os.write(fd, b"x" * 4096)
                started = time.perf_counter()
                os.fsync(fd)
                samples.append((time.perf_counter() - started) * 1000)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
        work = (
            "300 x (write 4 KiB + fsync) on the disk holding bench/data: the floor under a commit"
        )
        self.results.add("disk_fsync_p50_ms", percentile(samples, 50), "ms", work)
        self.results.add("disk_fsync_p99_ms", percentile(samples, 99), "ms", work)
        self.load_at_start = os.getloadavg()[0]
        self.results.add("cpu_probe_ms", cpu_probe_ms(), "ms", CPU_PROBE_WORK)

    def setup_server(self) -> Path:
        phase(f"central server database ({self.n:,} patients)")
        info = ensure_central(self.n, fresh=self.args.fresh)
        how = "built in this run" if info.built_now else "cached from an earlier run"
        self.results.add(
            "setup_server_build_s",
            info.build_s,
            "s",
            f"build the central SQLite database: {info.patients:,} patients, {info.cards:,} cards, "
            f"{info.transfers:,} transfers through server.bulk.bulk_load ({how})",
            digits=1,
        )
        self.results.add(
            "server_db_mb",
            info.size_bytes / MB,
            "MB",
            f"central SQLite file with {info.patients:,} patients (rows + change log + indexes)",
            digits=1,
        )
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        started = time.perf_counter()
        copy = working_copy(info, self.work_dir)
        print(f"  working copy in {time.perf_counter() - started:.1f} s: {copy}", flush=True)
        return copy

    # -- the run --------------------------------------------------------------

    async def run(self) -> None:
        self.environment()
        central_db = self.setup_server()
        engine = make_engine(f"sqlite:///{central_db}")
        app = create_app(engine)
        # the bench leases all its numbers at once, more than a day's ceiling
        save_policy(engine, Policy(lease_grants_per_minute=10**9, lease_numbers_per_day=10**12))
        self.checkpointer: WalCheckpointer = app.state.checkpointer
        station = build_workstation(
            self.work_dir / "replica.db",
            "http://central",
            settings=DeskSettings(receipts_dir=self.work_dir / "receipts", ack_wait_s=0),
            transport=httpx.ASGITransport(app=app),
        )
        store, client, sync, desk = station.store, station.client, station.engine, station.desk
        try:
            code = app.state.auth.create_enrollment_code("bench window")
            await enroll_workstation(client, store, code, "bench window")
            await desk.login(BENCH_USER, BENCH_PASSWORD)
            actor = desk.actor()
            self.shift_id = await desk.current_shift()  # the money the bench takes belongs to it

            self.build_image(central_db)
            await self.bootstrap(sync, client, store)
            drain = self.args.drain_ops
            http_ops = 0 if self.args.no_http else drain
            await ensure_numbers(
                client, store, Series.RECEIPT, self.args.top_ups + 100 + 2 * (drain + http_ops)
            )
            await ensure_numbers(client, store, Series.CARD, (drain + http_ops) // 5 + 10)
            # this process is the workstation and the server: it settles its
            # heap after start-up as both of them do (workstation.heap)
            settle_heap()

            self.top_up(store, actor)
            self.search(store)
            await self.drain(store, sync, actor)
            await self.pull(store, sync)
            if not self.args.no_http:
                await self.drain_http(central_db, store, client, actor)
            # Last: its minutes between the image build and the drains left the
            # server's pages cold for the drain (401 ops/s instead of ~2,300).
            if not self.args.no_window:
                await self.window(central_db, app.state.auth.create_enrollment_code)
        finally:
            await client.aclose()
            store.close()
            engine.dispose()
            if not self.args.keep:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def build_image(self, central_db: Path) -> None:
        phase("replica image: built on the server from its tables, in a process of its own")
        image = json.loads(
            child_output([sys.executable, "-m", "bench.image_build", "--db", str(central_db)])
        )
        self.results.add(
            "snapshot_image_build_s",
            image["build_s"],
            "s",
            f"SnapshotImages.build() on the {self.n:,}-patient SQLite central server, in a "
            f"process of its own (bench/image_build.py, as `workstation admin build-snapshot`): "
            f"{image['rows']:,} rows read in one transaction into a new replica file (indexes "
            f"and FTS search index made after the load), gzip level {GZIP_LEVEL}, SHA-256; made "
            "once (on demand, by `workstation admin build-snapshot` or when stale), not per "
            "workstation",
            digits=1,
        )
        self.results.add(
            "snapshot_image_mb",
            image["size"] / MB,
            "MB",
            f"gzip'd replica image of {image['rows']:,} rows: what a new workstation downloads",
            digits=1,
        )
        self.results.add(
            "image_build_peak_rss_mb",
            image["peak_rss_mb"],
            "MB",
            "peak resident set (ru_maxrss) of the process that built snapshot_image_build_s: "
            f"Python, SQLAlchemy and the server's snapshot code imported "
            f"({image['rss_before_mb']:,.0f} MB before the build), the {self.n:,}-patient "
            "tables read, the replica file written, indexed and gzip'd",
            target=IMAGE_BUILD_PEAK_RSS_MB,
            target_op="<=",
            digits=0,
        )
        self.results.add(
            "image_build_rss_kept_mb",
            image["rss_after_mb"] - image["rss_before_mb"],
            "MB",
            "resident set of that process right after the build minus right before it, its "
            "engine still open: what a server that built an image keeps",
            digits=0,
        )

    async def bootstrap(self, sync: SyncEngine, client: SyncClient, store: LocalStore) -> None:
        phase("bootstrap: replica image download + install into a fresh replica")
        counter = CountingImage(client)
        client.snapshot_image = counter  # type: ignore[method-assign]
        started = time.perf_counter()
        rows = await sync.bootstrap()
        ended = time.perf_counter()
        client.snapshot_image = counter.inner  # type: ignore[method-assign]
        if counter.done_at is None:
            raise RuntimeError("the bootstrap did not use the replica image")
        downloaded = counter.done_at - started
        work = (
            f"SyncEngine.bootstrap() of a new enrolled workstation (fresh LocalStore) from a "
            f"{self.n:,}-patient server over the in-process ASGI transport: replica image of "
            f"{rows:,} rows, {counter.bytes / MB:,.1f} MB gzip'd, built beforehand "
            "(snapshot_image_build_s)"
        )
        self.results.add(
            "bootstrap_s", ended - started, "s", work, target=BOOTSTRAP_S, target_op="<=", digits=2
        )
        self.results.add(
            "bootstrap_download_s",
            downloaded,
            "s",
            "part of bootstrap_s: the server sending the image, the client saving and hashing it",
            digits=2,
        )
        self.results.add(
            "bootstrap_load_s",
            ended - started - downloaded,
            "s",
            "part of bootstrap_s: gunzip, LocalStore.install_image (outbox and other local "
            "tables copied in, replay, rename), WAL checkpoint",
            digits=2,
        )
        replica = Path(store.path)
        self.results.add(
            "replica_mb",
            file_mb(replica),
            "MB",
            f"replica SQLite file after bootstrap ({self.n:,} patients, with FTS index)",
            digits=1,
        )
        self.results.add(
            "replica_wal_mb",
            file_mb(Path(str(replica) + "-wal")),
            "MB",
            "replica's WAL file left on disk after bootstrap (the image is renamed into place)",
            digits=1,
        )

    async def window(self, central_db: Path, enrollment_code: Callable[[str], str]) -> None:
        """The window's own figures, each in processes of their own, against
        the server served by uvicorn in another process: a new workstation
        bootstraps and types into the cashier desk (bench/window.py), then
        `workstation run` is started on its data directory in a terminal
        (bench/terminal.py) to time the cold start and read the idle CPU."""
        data_dir = self.work_dir / "window"
        keys = self.args.window_keys
        async with serving(central_db) as (url, server):
            phase(f"window: a new workstation bootstraps, then {keys} keys typed into its search")
            config = {
                "data_dir": str(data_dir),
                "server_url": url,
                "code": enrollment_code("bench window 2"),
                "device_name": "bench window 2",
                "user": BENCH_USER,
                "password": BENCH_PASSWORD,
                "keys": keys,
                "seed": self.args.seed,
            }
            typed = json.loads(
                child_output([sys.executable, "-m", "bench.window", json.dumps(config)])
            )
            self.typed_into_the_desk(typed)

            runs = self.args.cold_starts
            phase(f"cold start: `workstation run` to its login screen, {runs} times")
            cold = json.loads(
                child_output(
                    [
                        sys.executable,
                        "-m",
                        "bench.terminal",
                        "cold-start",
                        "--data-dir",
                        str(data_dir),
                        "--runs",
                        str(runs),
                    ]
                )
            )
            seconds = cold["seconds"]
            print(
                f"  {', '.join(f'{s:.2f} s' for s in seconds)} (first, not timed: "
                f"{cold['first_s']:.2f} s)",
                flush=True,
            )
            self.results.add(
                "cold_start_s",
                statistics.median(seconds),
                "s",
                f"median of {len(seconds)} starts of `workstation run --data-dir DIR --lang en` "
                "(a fresh process each) in a 120 x 36 pseudo-terminal until the login screen is "
                "drawn (its 'Username' label has reached the terminal): Python start-up, imports "
                f"(bytecode cached), the {self.n:,}-patient replica opened, the app composed and "
                "drawn (bench/terminal.py; one start before them not timed; each run quit with "
                f"Ctrl+Q before the next; {min(seconds):.2f}-{max(seconds):.2f} s)",
                target=COLD_START_S,
                target_op="<=",
                digits=2,
            )

            idle_s = self.args.idle_s
            phase(f"idle: logged in on the cashier desk, nothing typed, for {idle_s:g} s")
            quiet = json.loads(
                child_output(
                    [
                        sys.executable,
                        "-m",
                        "bench.terminal",
                        "idle",
                        "--data-dir",
                        str(data_dir),
                        "--user",
                        BENCH_USER,
                        "--password",
                        BENCH_PASSWORD,
                        "--seconds",
                        str(idle_s),
                        "--server-pid",
                        str(server.pid),
                    ]
                )
            )
        work = (
            f"`workstation run` in a pseudo-terminal (bench/terminal.py), logged in by typing, "
            f"on the cashier desk (F2), {quiet['settle_s']:g} s to settle, then nothing typed for "
            f"{quiet['wall_s']:.1f} s while its sync engine runs against the server (uvicorn, "
            "another process, over HTTP): the workstation process's CPU time (user + system, "
            "all its threads, /proc/PID/stat) over wall time, in per cent of one core; the "
            "server's own CPU is not in it (idle_cpu_percent.server)"
        )
        self.results.add(
            "idle_cpu_percent",
            quiet["app_cpu_s"] / quiet["wall_s"] * 100,
            "%",
            work,
            target=IDLE_CPU_PERCENT,
            target_op="<=",
            digits=2,
        )
        if quiet["server_cpu_s"] is not None:
            self.results.add(
                "idle_cpu_percent.server",
                quiet["server_cpu_s"] / quiet["wall_s"] * 100,
                "%",
                "the server process's CPU time over the same wall time as idle_cpu_percent "
                "(answering that workstation's sync cycles), in per cent of one core",
                digits=2,
            )

    def typed_into_the_desk(self, typed: dict) -> None:
        samples = [ms for _kind, ms in typed["samples"]]
        keys = len(samples)
        by_kind: dict[str, list[float]] = {}
        for kind, ms in typed["samples"]:
            by_kind.setdefault(kind, []).append(ms)
        for kind, values in by_kind.items():
            print(
                f"  {kind}: {len(values)} keys, p50 {percentile(values, 50):.1f} ms, "
                f"p95 {percentile(values, 95):.1f} ms",
                flush=True,
            )
        examples = "; ".join(
            f"{kind}: {', '.join(repr(q) for q in queries)}"
            for kind, queries in typed["examples"].items()
        )
        rss = typed["rss_mb"]
        print(
            f"  bootstrap over HTTP {typed['bootstrap_s']:.1f} s ({typed['rows']:,} rows; "
            f"{typed['pulled']:,} pulled after the typing); "
            f"{typed['searches_run']} searches run by the desk; RSS MB: "
            + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()),
            flush=True,
        )
        work = (
            f"the real app (make_app over build_workstation, run_sync=False) on a new "
            f"workstation's replica of {self.n:,} patients, bootstrapped from the image over HTTP "
            f"in the same process (bench/window.py), driven by Textual's Pilot at 120 x 36 on the cashier "
            f"desk: {typed['queries']} real queries typed one key at a time, F5 before each "
            f"({examples}, ...); {keys} keys timed, each from the key event posted to the app "
            "until the results for the text typed so far are shown: #search holds the text and "
            "the #results table lists, from its top, the patients the desk's search returns for "
            "it (all of them, or as many as the table holds if it holds only the rows in view; "
            "none if none); when those rows are already shown for the text before, once the desk "
            "has also answered a search for the new text. Polled every 1 ms; the next key once "
            f"shown and at least {typed['min_gap_ms']:.0f} ms after the last (never a card "
            "reader's burst)"
        )
        self.results.add(
            "keypress_to_results_p50_ms", percentile(samples, 50), "ms", work, digits=1
        )
        self.results.add(
            "keypress_to_results_p95_ms",
            percentile(samples, 95),
            "ms",
            work,
            target=KEYPRESS_P95_MS,
            target_op="<=",
            digits=1,
        )
        memory = (
            f"resident set (VmRSS) of that app's process (bench/window.py): after its bootstrap "
            f"from the image, before the app ({rss['bootstrap']:.0f} MB), on the cashier desk before typing ({rss['desk']:.0f} MB), "
            f"after {keys // 2} and after {keys} searches, a search being one key typed and its "
            f"results shown ({typed['searches_run']} searches run by the desk)"
        )
        self.results.add("rss_mb_after_bootstrap", rss["bootstrap"], "MB", memory, digits=0)
        self.results.add(
            "rss_mb_after_500_searches",
            rss["end"],
            "MB",
            memory,
            target=RSS_AFTER_SEARCHES_MB,
            target_op="<=",
            digits=0,
        )
        self.results.add(
            "rss_mb_growth_last_250_searches",
            rss["end"] - rss["half"],
            "MB",
            memory,
            target=RSS_GROWTH_MB,
            target_op="<=",
            digits=1,
        )

    def top_up(self, store: LocalStore, actor: Actor) -> None:
        count, warm = self.args.top_ups, 50
        phase(f"top_up: {count:,} LocalStore.execute(TopUp) on distinct cards")
        cards = active_cards(store, count + warm, self.rng)
        for card in cards[:warm]:  # warm the statement cache; not counted
            store.execute(actor, top_up_build(card, self.rng, self.shift_id))
        samples: list[float] = []
        with profiled("top_up", "top_up" in self.args.profile):
            for card in cards[warm:]:
                build = top_up_build(card, self.rng, self.shift_id)
                started = time.perf_counter()
                store.execute(actor, build)
                samples.append((time.perf_counter() - started) * 1000)
        work = (
            f"{len(samples):,} top_up commands (LocalStore.execute: decide + rows + outbox, one "
            f"committed transaction, WAL synchronous=FULL) on {len(samples):,} different cards of "
            f"a {self.n:,}-patient replica, after {warm} warm-up commands"
        )
        self.results.add("top_up_p50_ms", percentile(samples, 50), "ms", work)
        self.results.add(
            "top_up_p99_ms",
            percentile(samples, 99),
            "ms",
            work,
            target=TOP_UP_P99_MS,
            target_op="<=",
        )
        self.results.add("top_up_max_ms", max(samples), "ms", work)

    def search(self, store: LocalStore) -> None:
        per_kind = self.args.queries
        phase(f"search: {per_kind} queries of each kind, limit=50")
        queries = make_queries(store, per_kind, self.rng)
        descriptions = {
            "pinyin_initials": "pinyin initials of real patients' names (first 3 characters, "
            "e.g. 'zsf')",
            "name": "the first 2 characters of real patients' names",
            "id_prefix": "ID-number prefixes of 6-10 digits of real patients",
            "card": "full card numbers of issued cards",
        }
        with profiled("search", "search" in self.args.profile):
            for kind, items in queries.by_kind().items():
                for query in items[:20]:  # warm-up, not counted
                    store.search(query, limit=50)
                samples, hits = [], 0
                for query in items:
                    started = time.perf_counter()
                    found = store.search(query, limit=50)
                    samples.append((time.perf_counter() - started) * 1000)
                    hits += len(found)
                examples = ", ".join(repr(q) for q in items[:3])
                work = (
                    f"{len(items)} LocalStore.search(query, limit=50) on a {self.n:,}-patient "
                    f"replica; queries: {descriptions[kind]} ({examples}, ...); "
                    f"{hits / max(len(items), 1):.1f} hits per query on average"
                )
                self.results.add(f"search_p50_ms.{kind}", percentile(samples, 50), "ms", work)
                self.results.add(
                    f"search_p99_ms.{kind}",
                    percentile(samples, 99),
                    "ms",
                    work,
                    target=SEARCH_P99_MS,
                    target_op="<=",
                )

    def _make_outbox(self, store: LocalStore, actor: Actor, wanted: int, seed: int) -> str:
        """Top the outbox up to ``wanted`` pending ops; says what it holds."""
        pending = store.outbox_stats().pending
        missing = max(wanted - pending, 0)
        cards = active_cards(store, 5_000, self.rng)
        made = make_ops(
            store, actor, missing, self.rng, cards, people_for(seed, missing), self.shift_id
        )
        # A workstation that made these ops offline checkpointed its log after
        # every failed sync cycle (SyncEngine.run); made here in one go, they
        # would leave ~1 GB of log for the drain to read through and the kernel
        # to write back while the drain is measured.
        store.checkpoint(truncate=True)
        print(
            f"  made {made.total:,} ops offline in {made.seconds:.1f} s ({made.describe()}; "
            f"{made.rejected_locally} refused locally); outbox pending: "
            f"{store.outbox_stats().pending:,}",
            flush=True,
        )
        if pending:
            return f"{pending:,} top_up left by the latency test, then {made.describe()}"
        return made.describe()

    async def drain(self, store: LocalStore, sync: SyncEngine, actor: Actor) -> None:
        wanted = self.args.drain_ops
        phase(f"drain: push an outbox of {wanted:,} ops (in-process ASGI)")
        mix = self._make_outbox(store, actor, wanted, seed=9001)
        pending = store.outbox_stats().pending
        self.results.add("cpu_probe_ms.before_drain", cpu_probe_ms(), "ms", CPU_PROBE_WORK)
        report = SyncReport()
        checkpoints_before = self.checkpointer.runs
        started = time.perf_counter()
        await sync._push_all(report)
        seconds = time.perf_counter() - started
        during = self.checkpointer.runs - checkpoints_before
        answered = report.pushed + report.rejected
        work = (
            f"SyncEngine._push_all of {pending:,} pending ops ({report.pushed:,} applied, "
            f"{report.rejected:,} refused; {mix}) in batches of "
            f"{sync.push_batch} over httpx.ASGITransport (in-process) into the SQLite central "
            f"server of {self.n:,} patients (validated, applied, synchronous=FULL; "
            f"{during} background WAL checkpoint(s) during the drain)"
        )
        self.results.add(
            "drain_ops_per_s",
            answered / seconds,
            "ops/s",
            work,
            target=DRAIN_OPS_PER_S,
            target_op=">=",
            digits=0,
        )
        self.results.add("drain_s", seconds, "s", work, digits=2)
        await self.checkpoint_after_drain(checkpoints_before + during)

    async def checkpoint_after_drain(self, runs: int) -> None:
        """The background checkpoint that copies the drain's log into the
        database file once the pushes pause: on no push's path, but work the
        server does for them."""
        checkpointer = self.checkpointer
        deadline = time.monotonic() + 120
        while checkpointer.runs <= runs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if checkpointer.runs <= runs or checkpointer.last is None:
            print("  the background checkpoint did not run within 120 s", flush=True)
            return
        _busy, frames, copied = checkpointer.last
        self.results.add(
            "wal_checkpoint_after_drain_s",
            checkpointer.last_seconds,
            "s",
            f"server.checkpoint.WalCheckpointer: the PASSIVE checkpoint {QUIET_S} s after the "
            f"drain's last push, in the server's background thread: {copied:,} of {frames:,} "
            "log frames copied back into the database file and the file fsync'd (the log "
            "itself was fsync'd at each push's commit)",
            digits=2,
        )

    async def pull(self, store: LocalStore, sync: SyncEngine) -> None:
        phase("pull after the drain: confirm the pushed ops (pull + rebase)")
        report = SyncReport()
        started = time.perf_counter()
        await sync._pull_all(report)
        seconds = time.perf_counter() - started
        self.results.add(
            "pull_after_drain_s",
            seconds,
            "s",
            f"SyncEngine._pull_all right after the drain: {report.pulled:,} rows pulled in pages "
            f"of {sync.pull_limit}, each page applied with LocalStore.apply_pull (undo pending, "
            f"apply, confirm, replay)",
            digits=2,
        )
        print(f"  outbox pending after pull: {store.outbox_stats().pending:,}", flush=True)

    async def drain_http(
        self, central_db: Path, store: LocalStore, asgi_client: SyncClient, actor: Actor
    ) -> None:
        wanted = self.args.drain_ops
        phase(f"drain over HTTP: push an outbox of {wanted:,} ops to uvicorn in another process")
        mix = self._make_outbox(store, actor, wanted, seed=9002)
        pending = store.outbox_stats().pending
        async with serving(central_db) as (url, _server):
            client = SyncClient(url, device_token=asgi_client.device_token)
            client.session_token = asgi_client.session_token
            try:
                await client.health()  # its connection open before the clock starts, as before
                sync = SyncEngine(store, client)
                report = SyncReport()
                started = time.perf_counter()
                await sync._push_all(report)
                seconds = time.perf_counter() - started
            finally:
                await client.aclose()
        answered = report.pushed + report.rejected
        work = (
            f"SyncEngine._push_all of {pending:,} pending ops ({report.pushed:,} applied, "
            f"{report.rejected:,} refused; {mix}) in batches of {sync.push_batch} over real HTTP "
            f"to uvicorn on 127.0.0.1 in another process, same SQLite central server "
            f"({self.n:,} patients, synchronous=FULL)"
        )
        self.results.add(
            "drain_ops_per_s.http",
            answered / seconds,
            "ops/s",
            work,
            target=DRAIN_OPS_PER_S,
            target_op=">=",
            digits=0,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    started = time.perf_counter()
    bench = Bench(args)
    asyncio.run(bench.run())
    total = time.perf_counter() - started
    bench.results.add(
        "load_avg_1m",
        max(bench.load_at_start, os.getloadavg()[0]),
        "",
        f"1-minute load average of this {os.cpu_count()}-core machine (the higher of start and "
        "end of the run): other work competing for the CPU",
        digits=2,
    )
    bench.results.add(
        "bench_total_s",
        total,
        "s",
        f"this whole benchmark run ({args.patients:,} patients)",
        digits=1,
    )
    args.out.write_text("")  # make sure it is writable before printing the table
    bench.results.write(args.out)
    print(f"\n== results ({args.patients:,} patients) -> {args.out}\n")
    print(bench.results.table())
    print("\nwhat was measured:")
    print(bench.results.work_notes())
    missed = [r.metric for r in bench.results.records if r.met is False]
    print(f"\ntargets: {'all met' if not missed else 'NOT met: ' + ', '.join(missed)}")
    return 0
