"""The central server over one SQLite file, served by uvicorn: the benchmark
starts it in its own process for ``drain_ops_per_s.http``.

    python -m bench.serve --db PATH --port PORT
"""

from __future__ import annotations

import argparse

import uvicorn

from server.app import create_app
from server.db import make_engine
from workstation.heap import settle_heap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    engine = make_engine(f"sqlite:///{args.db}")
    app = create_app(engine)
    settle_heap()  # as `workstation server` does
    try:
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
