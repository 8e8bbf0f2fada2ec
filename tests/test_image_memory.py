"""What building a replica image holds in memory is bounded by constants,
not by the size of the register. The figure itself, at 1,000,000 patients, is
the benchmark's (``image_build_peak_rss_mb``); these catch the obvious ways
to lose the bound, cheaply."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import local_db.image
from local_db.image import build_image
from server.db import MMAP_BYTES
from server.snapshots import _unmapped
from tests.harness import Central

HAN = "张王李赵刘陈杨黄周吴徐孙胡朱高林何郭马罗"
PATIENTS = 10_000  # every one with a name of its own


def patients(count: int) -> Iterator[tuple[str, ...]]:
    for i in range(count):
        name = HAN[i % 20] + HAN[i // 20 % 20] + HAN[i // 400 % 20] + HAN[i // 8000 % 20]
        yield (
            f"P{i:08d}",
            name,
            "F",
            "1990-01-01",
            "resident_id",
            f"{i:018d}",
            "13800000000",
            "",
            "2026-01-01T00:00:00+08:00",
            "C0",
            "D0",
        )


def batches(count: int) -> Iterator[tuple[str, Sequence[Sequence[Any]]]]:
    rows = patients(count)
    while batch := list(itertools.islice(rows, 1_000)):
        yield "patients", batch


def test_the_search_terms_of_a_bounded_number_of_names_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the cache bounded at 64 names, 10,000 distinct names leave
    Python's memory peak at ~0.4 MB; every name's terms cached would take
    ~4 MB here, and ~230 MB at 1,000,000 patients."""
    monkeypatch.setattr(local_db.image, "NAME_TERMS_CACHE", 64)
    tracemalloc.start()
    try:
        count = build_image(tmp_path / "image.db", batches(PATIENTS), cursor=1, epoch="E1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == PATIENTS
    assert peak < 2 * 1024 * 1024


def test_a_sqlite_server_reads_an_image_without_its_memory_map(central_sqlite: Central) -> None:
    """Pages read through the map stay in the process's resident memory while
    the pooled connection lives (~850 MB after reading 1,000,000 patients);
    the map is put back for the requests that come after."""
    with central_sqlite.engine.connect() as conn:
        mapped = conn.exec_driver_sql("PRAGMA mmap_size").scalar()
        assert mapped is not None and 0 < mapped <= MMAP_BYTES  # SQLite caps it at its maximum
        conn.rollback()
        with _unmapped(conn):
            assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == 0
        assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == mapped
