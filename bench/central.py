"""The central server database of N generated patients, built once and cached.

``bench/data/central-<N>.db`` (gitignored) with a JSON sidecar holding how it
was built. Each run works on a copy, so the measurements never change the
cached database.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from server.auth import AuthService
from server.db import make_engine
from server.migrate import migrate
from workstation.demo.seed import seed_demo_hospital

DATA_DIR = Path(__file__).resolve().parent / "data"
BENCH_USER = "bench_cashier"
BENCH_PASSWORD = "bench-secret-123"
SEED = 2026
CACHE_FORMAT = 2  # bump when the cached database's contents change


@dataclass(frozen=True)
class CentralInfo:
    path: Path
    patients: int
    cards: int
    transfers: int
    build_s: float
    size_bytes: int
    built_now: bool


def _paths(patients: int) -> tuple[Path, Path]:
    db = DATA_DIR / f"central-{patients}.db"
    return db, db.with_suffix(".json")


def ensure_central(patients: int, fresh: bool = False) -> CentralInfo:
    """The cached server database for ``patients``, building it if missing."""
    db, sidecar = _paths(patients)
    if not fresh and db.exists() and sidecar.exists():
        info = json.loads(sidecar.read_text())
        if info.get("format") == CACHE_FORMAT:
            # one made by an earlier release: brought to this release's schema
            # (a stamp only, for one of release 0.1.0)
            engine = make_engine(f"sqlite:///{db}")
            try:
                migrate(engine)
            finally:
                engine.dispose()
            return CentralInfo(
                path=db,
                patients=info["patients"],
                cards=info["cards"],
                transfers=info["transfers"],
                build_s=info["build_s"],
                size_bytes=db.stat().st_size,
                built_now=False,
            )
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for stale in (db, sidecar):
        stale.unlink(missing_ok=True)
    tmp = db.with_name(db.name + ".building")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)

    print(f"building the central database: {patients:,} patients -> {db}", flush=True)
    started = time.perf_counter()
    engine = make_engine(f"sqlite:///{tmp}")
    migrate(engine)
    summary = seed_demo_hospital(engine, patients, seed=SEED)
    AuthService(engine).create_clerk(BENCH_USER, "基准收费员", ["cashier"], BENCH_PASSWORD)
    engine.dispose()  # the last connection checkpoints the WAL into the file
    build_s = time.perf_counter() - started
    for suffix in ("-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    os.replace(tmp, db)
    info = {
        "format": CACHE_FORMAT,
        "patients": summary.patients,
        "cards": summary.cards,
        "transfers": summary.transfers,
        "build_s": round(build_s, 2),
        "seed": SEED,
    }
    sidecar.write_text(json.dumps(info, indent=2) + "\n")
    print(
        f"  built in {build_s:.1f} s: {summary.patients:,} patients, {summary.cards:,} cards, "
        f"{summary.transfers:,} transfers",
        flush=True,
    )
    return CentralInfo(
        path=db,
        patients=summary.patients,
        cards=summary.cards,
        transfers=summary.transfers,
        build_s=build_s,
        size_bytes=db.stat().st_size,
        built_now=True,
    )


def working_copy(info: CentralInfo, directory: Path) -> Path:
    """A copy of the cached database for one run to write to, on disk before
    it is used: otherwise the kernel is still writing back its ~2 GB while the
    run measures, and the first checkpoint's fsync waits for all of it (a
    0.8 s push instead of 0.15 s in the drain)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "central.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    shutil.copyfile(info.path, target)
    with open(target, "rb+") as copy:
        os.fsync(copy.fileno())
    return target
