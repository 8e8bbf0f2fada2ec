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
    """Decode a snapshot stream into its lines, checking the hash at the end."""
    decompressor = zlib.decompressobj(31)
    digest = hashlib.sha256()
    buffer = b""
    ended = False

    def lines_of(data: bytes) -> Iterator[dict[str, Any]]:
        nonlocal buffer, ended
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            item = json.loads(line)
            if item.get("type") == "end":
                if item.get("sha256") != digest.hexdigest():
                    raise ValueError("snapshot hash mismatch")
                ended = True
            else:
                digest.update(line + b"\n")
            yield item

    for chunk in stream:
        yield from lines_of(decompressor.decompress(chunk))
    yield from lines_of(decompressor.flush())
    if not ended:
        raise ValueError("snapshot truncated")
