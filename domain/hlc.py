"""A hybrid logical clock: wall-clock milliseconds plus a counter, so the
operations of one device carry increasing timestamps even when the PC clock
steps back. It is a hint for people reading the log; ordering authority is the
server's change-log sequence."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import datetime


class HybridClock:
    def __init__(self, wall_ms: Callable[[], int] | None = None) -> None:
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._last_ms = 0
        self._counter = 0
        self._lock = threading.Lock()

    def now(self) -> str:
        with self._lock:
            wall = self._wall_ms()
            if wall > self._last_ms:
                self._last_ms, self._counter = wall, 0
            else:
                self._counter += 1
            return format_hlc(self._last_ms, self._counter)

    def observe(self, remote: str) -> None:
        """Move forward past a timestamp seen from elsewhere (the server)."""
        ms, counter = parse_hlc(remote)
        with self._lock:
            if ms > self._last_ms or (ms == self._last_ms and counter > self._counter):
                self._last_ms, self._counter = ms, counter

    def observe_wall(self, iso_time: str) -> None:
        """Move forward past a wall-clock time seen from elsewhere (ISO 8601)."""
        try:
            ms = int(datetime.fromisoformat(iso_time).timestamp() * 1000)
        except ValueError:
            return
        self.observe(format_hlc(ms, 0))


def format_hlc(ms: int, counter: int) -> str:
    return f"{ms:013d}.{counter:05d}"


# what format_hlc writes: ms since the epoch (13 digits until the year 2286)
# and a counter (5 digits, more after 99,999 ticks in one ms), ASCII digits only
_HLC = re.compile(r"[0-9]{13,16}\.[0-9]{5,9}", re.ASCII)


def is_hlc(text: str) -> bool:
    """Whether ``text`` is a timestamp this clock writes (the server refuses
    an op whose ``hlc`` is not one)."""
    return _HLC.fullmatch(text) is not None


def parse_hlc(text: str) -> tuple[int, int]:
    ms, _, counter = text.partition(".")
    return int(ms), int(counter or 0)
