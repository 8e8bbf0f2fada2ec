"""Build a replica image of a central SQLite database in this process, as
``workstation admin build-snapshot`` does, and say what it took: the
benchmark runs it as a child process so the build's memory is measured on its
own (``image_build_peak_rss_mb``), not mixed with the benchmark's.

    python -m bench.image_build --db PATH

Prints one JSON line: build_s, rows, size, peak_rss_mb (the whole process's
peak, ``ru_maxrss``), rss_before_mb (after imports, right before the build)
and rss_after_mb (right after it).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from server.db import make_engine
from server.snapshots import SnapshotImages

MB = 1024 * 1024


def rss_mb() -> float:
    """This process's resident set now (VmRSS), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    engine = make_engine(f"sqlite:///{args.db}")
    images = SnapshotImages(engine)  # the directory the server itself uses
    before = rss_mb()
    started = time.perf_counter()
    image = images.build()
    seconds = time.perf_counter() - started
    after = rss_mb()
    engine.dispose()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "build_s": seconds,
                "rows": image.rows,
                "size": image.size,
                "peak_rss_mb": peak_kib / 1024,
                "rss_before_mb": before,
                "rss_after_mb": after,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
