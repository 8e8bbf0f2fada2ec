"""The workstation's log file, written off the screen's thread.

A record is put on a queue by whichever thread logs it (the app's event loop
included) and written to the file by a thread of its own, so logging never
makes the window wait on the disk.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
from collections.abc import Callable
from pathlib import Path

from local_db.files import private_file

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_file(path: Path, level: int = logging.INFO) -> Callable[[], None]:
    """Send the root logger's records to ``path``; returns the function that
    stops the writer (after writing what is queued)."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    private_file(path)  # it names patients and clerks now and then
    file = logging.FileHandler(path, encoding="utf-8")
    file.setFormatter(logging.Formatter(FORMAT))
    listener = logging.handlers.QueueListener(records, file)
    root = logging.getLogger()
    root.setLevel(level)
    handler = logging.handlers.QueueHandler(records)
    root.addHandler(handler)
    listener.start()

    def stop() -> None:
        root.removeHandler(handler)
        listener.stop()
        file.close()

    return stop
