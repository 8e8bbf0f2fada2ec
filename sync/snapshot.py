"""Reading the server's snapshot stream: gzip'd NDJSON, a header line, row
batches, and an end line carrying the row count and the SHA-256 of every line
before it. A truncated or altered stream raises ValueError."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator
from typing import Any


def read_snapshot(stream: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Decode a snapshot stream into its lines, checking count and hash at the end."""
    decompressor = zlib.decompressobj(31)
    digest = hashlib.sha256()
    pending = b""
    rows = 0
    ended = False

    def lines_of(data: bytes) -> Iterator[dict[str, Any]]:
        nonlocal pending, rows, ended
        *complete, pending = (pending + data).split(b"\n")
        for line in complete:
            if ended:
                raise ValueError("snapshot has data after its end line")
            try:
                item = json.loads(line)
            except ValueError:
                raise ValueError("snapshot line is not JSON") from None
            if not isinstance(item, dict):
                raise ValueError("snapshot line is not an object")
            if item.get("type") == "end":
                if item.get("sha256") != digest.hexdigest() or item.get("count") != rows:
                    raise ValueError("snapshot hash or row count mismatch")
                ended = True
            else:
                digest.update(line + b"\n")
                rows += len(item.get("rows", ()))
            yield item

    try:
        for chunk in stream:
            yield from lines_of(decompressor.decompress(chunk))
        yield from lines_of(decompressor.flush())
    except zlib.error as exc:
        raise ValueError(f"snapshot is not a valid gzip stream: {exc}") from None
    if not ended or pending.strip():
        raise ValueError("snapshot truncated")
