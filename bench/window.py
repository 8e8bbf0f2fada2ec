"""A window of its own for the benchmark's UI figures, in a process of its
own (the benchmark's process holds a server and another replica).

    python -m bench.window CONFIG_JSON

The process is a new workstation: it enrols with the code it is given, keeps
its device token where ``workstation run`` finds it (so the data directory is
ready for the cold-start and idle figures, ``bench.terminal``), logs in, and
bootstraps its replica from the server over HTTP. Then the real app
(``workstation.app.make_app`` on that desk, ``run_sync=False``) is driven
headless by Textual's Pilot at 120 x 36: home screen, F2 to the cashier desk,
and real queries typed one key at a time (pinyin initials, names, ID-number
and phone prefixes, card numbers, all from the replica), F5 before each query
as a clerk does to type over the last one.

Each key press is timed until the results for the text typed so far are
shown: the ``#search`` field holds the text, and the ``#results`` table lists,
from its top, the patients the desk's search returns for that text (all of
them, or as many as the table holds if it holds only the rows in view; none
if there are none). When those are the rows already shown for the text
before, the table has nothing to change, and the key counts as shown once the
desk has answered a search for the new text. Keys are posted to the app as
the terminal driver posts them: Pilot's ``press`` then waits for the app to
be idle for at least 40 ms, which would be timed too. The next key comes once
the results are shown and at least ``MIN_GAP_S`` after the last: a quick
clerk's pace, slower than a card reader's burst (``workstation.desk.scan``),
which the screen takes for a swipe.

Last, it runs the sync cycle the app's engine would have run after the
bootstrap (the changes since the image, number blocks), so the data directory
is up to date for ``bench.terminal``. Prints one JSON line: the samples (kind,
ms), the resident set at points of the run, and what was typed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import events
from textual.widgets import DataTable, Input

import screens.cashier
from local_db.search import search_patients
from screens.cashier import CashierScreen
from workstation.app import WindowApp, make_app
from workstation.builder import build_workstation
from workstation.config import Settings
from workstation.desk import DeskSettings
from workstation.desk.core import enroll_workstation
from workstation.heap import settle_heap
from workstation.secrets import open_secret_store

from .workload import phone_prefixes, queries_from

MIN_GAP_S = 0.08
POLL_S = 0.001
KEY_TIMEOUT_S = 10.0
SIZE = (120, 36)
KINDS = ("pinyin_initials", "name", "id_prefix", "phone_prefix", "card")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Typed:
    samples: list[tuple[str, float]] = field(default_factory=list)  # (kind, ms) per key
    queries: int = 0
    rss_mb: dict[str, float] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)


def typing_plan(replica: Path, keys: int, seed: int) -> list[tuple[str, str]]:
    """(kind, query) in turn of kind, enough for ``keys`` key presses."""
    rng = random.Random(seed)
    per_kind = keys // 10 + 10
    conn = sqlite3.connect(replica.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        made = queries_from(conn, per_kind, rng).by_kind()
        made["phone_prefix"] = phone_prefixes(conn, per_kind, rng)
    finally:
        conn.close()
    plan: list[tuple[str, str]] = []
    total = 0
    while total < keys:
        kind = KINDS[len(plan) % len(KINDS)]
        query = made[kind][len(plan) // len(KINDS)]
        plan.append((kind, query))
        total += len(query)
    return plan


def expected_results(
    replica: Path, plan: list[tuple[str, str]], limit: int
) -> dict[str, list[str]]:
    """The patient ids the search returns for every text the plan types, read
    on a connection of its own before the app starts (so its page cache stays
    cold for the app)."""
    conn = sqlite3.connect(replica.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        texts = {""} | {query[: i + 1] for _, query in plan for i in range(len(query))}
        return {t: [h.patient_id for h in search_patients(conn, t, limit)] for t in texts}
    finally:
        conn.close()


def shows(table: DataTable[Any], expected: list[str]) -> bool:
    """Whether ``table`` lists ``expected`` from its top (see the module's docstring)."""
    count = table.row_count
    if not expected:
        return count == 0
    if count == 0 or count > len(expected):
        return False
    # the rows in view: the table's region inside its scrollbars, less the header
    in_view = max(table.scrollable_content_region.height - (1 if table.show_header else 0), 1)
    if count < min(len(expected), in_view):
        return False
    return [row.key.value for row in table.ordered_rows] == expected[:count]


async def until(condition: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def type_queries(
    app: WindowApp,
    plan: list[tuple[str, str]],
    expected: dict[str, list[str]],
    answered: list[str],
    keys: int,
) -> Typed:
    screen = app.screen
    search = screen.query_one("#search", Input)
    table: DataTable[Any] = screen.query_one("#results", DataTable)
    typed = Typed()
    typed.rss_mb["desk"] = rss_mb()
    before = ""  # the text in the field before the key
    last_press = 0.0
    for kind, query in plan:
        if len(typed.samples) == keys:
            break
        typed.queries += 1
        typed.examples.setdefault(kind, [])
        if len(typed.examples[kind]) < 3:
            typed.examples[kind].append(query)
        if before:
            app.post_message(events.Key("f5", None))  # focus the field, select its text
            await until(
                lambda: search.selection.start == 0 and search.selection.end == len(search.value),
                "F5 to select the search text",
                KEY_TIMEOUT_S,
            )
        for i, char in enumerate(query):
            if len(typed.samples) == keys:
                break
            text = query[: i + 1]
            wait = last_press + MIN_GAP_S - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            unchanged = expected[text] == expected[before]
            answers = len(answered)
            started = last_press = time.perf_counter()
            app.post_message(events.Key(char, char))
            while True:
                await asyncio.sleep(POLL_S)
                now = time.perf_counter()
                if (
                    search.value == text
                    and shows(table, expected[text])
                    and (not unchanged or text in answered[answers:])
                ):
                    break
                if now - started > KEY_TIMEOUT_S:
                    raise RuntimeError(
                        f"the results for {text!r} were not shown within {KEY_TIMEOUT_S} s"
                    )
            typed.samples.append((kind, (now - started) * 1000))
            before = text
            if len(typed.samples) == keys // 2:
                typed.rss_mb["half"] = rss_mb()
    typed.rss_mb["end"] = rss_mb()
    return typed


async def run(config: dict[str, Any]) -> dict[str, Any]:
    data_dir = Path(config["data_dir"])
    data_dir.mkdir(parents=True, exist_ok=True)
    replica = data_dir / "workstation.db"
    station = build_workstation(
        replica,
        config["server_url"],
        settings=DeskSettings(
            window_name=config["device_name"], receipts_dir=data_dir / "receipts"
        ),
    )
    try:
        token = await enroll_workstation(
            station.client, station.store, config["code"], config["device_name"]
        )
        open_secret_store("file", data_dir).set("device_token", token)
        Settings(
            server_url=config["server_url"],
            device_name=config["device_name"],
            window_name=config["device_name"],
            secrets="file",
            language="en",
        ).save(data_dir)
        await station.desk.login(config["user"], config["password"])
        started = time.perf_counter()
        rows = await station.engine.bootstrap()
        bootstrap_s = time.perf_counter() - started
        rss_bootstrap = rss_mb()

        keys = int(config["keys"])
        limit = getattr(screens.cashier, "SEARCH_LIMIT", 50)
        plan = typing_plan(replica, keys, int(config["seed"]))
        expected = expected_results(replica, plan, limit)

        answered: list[str] = []  # the texts the desk was asked to search, in order
        inner = station.desk.search

        def search(query: str, limit: int = 20) -> Any:
            hits = inner(query, limit)
            answered.append(query)
            return hits

        station.desk.search = search  # type: ignore[method-assign]
        settle_heap()  # as workstation.app.run_app does
        app = make_app(station.desk, language="en", run_sync=False)
        async with app.run_test(size=SIZE) as pilot:
            app.logged_in()  # the desk's clerk logged in above
            await until(lambda: type(app.screen).__name__ == "HomeScreen", "the home screen")
            await pilot.press("f2")
            await until(lambda: isinstance(app.screen, CashierScreen), "the cashier desk")
            await pilot.pause()
            typed = await type_queries(app, plan, expected, answered, keys)
        # Then the first sync cycle, which the running app's engine would have
        # run at once (not measured): the changes since the image pulled and
        # number blocks leased, so that bench.terminal starts on an up-to-date
        # replica and its idle figure is not a catch-up.
        report = await station.engine.sync_once()
        station.store.checkpoint(truncate=True)
    finally:
        await station.aclose()
    return {
        "rows": rows,
        "pulled": report.pulled,
        "bootstrap_s": bootstrap_s,
        "samples": typed.samples,
        "queries": typed.queries,
        "searches_run": len(answered),
        "examples": typed.examples,
        "rss_mb": {"bootstrap": rss_bootstrap, **typed.rss_mb},
        "min_gap_ms": MIN_GAP_S * 1000,
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(config)), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
