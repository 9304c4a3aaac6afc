"""Reading audit records back: the last N from a file or a Redis Stream, then follow.

Used by `pdp audit tail`. Each reader yields raw JSON lines. The file
follower notices rotation (the path now names a new file, or the file
shrank) and carries on from the start of the new file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pdp import redisio

_CHUNK = 64 * 1024


def _last_lines(handle: BinaryIO, count: int) -> list[bytes]:
    """The last `count` complete lines, read backwards from the end; leaves `handle`
    just after them (before any line still being written)."""
    end = handle.seek(0, os.SEEK_END)
    data = b""
    pos = end
    while pos > 0 and data.count(b"\n") <= count:
        step = min(_CHUNK, pos)
        pos -= step
        handle.seek(pos)
        data = handle.read(step) + data
    lines = data.split(b"\n")
    partial = lines.pop()  # b"" when the file ends with a newline
    handle.seek(end - len(partial))
    return lines[-count:] if count else []


def _rotated(path: Path, handle: BinaryIO) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False  # between the rename and the new file: keep reading the old one
    mine = os.fstat(handle.fileno())
    return (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev) or now.st_size < handle.tell()


def file_lines(path: str | Path, last: int | None, follow: bool,
               poll_s: float = 0.2) -> Iterator[str]:
    """Lines of an audit file: all (last=None) or the last N, then new ones if following."""
    path = Path(path)
    handle = open(path, "rb")  # noqa: SIM115 - reopened on rotation
    try:
        if last is not None:
            yield from (line.decode() for line in _last_lines(handle, last))
        partial = b""
        while True:
            chunk = handle.readline()
            if chunk:
                partial += chunk
                if partial.endswith(b"\n"):
                    yield partial.decode().rstrip("\n")
                    partial = b""
            elif not follow:
                return
            elif _rotated(path, handle):
                # Lines may have landed in the old file after our last read: finish it first.
                rest = partial + handle.read()
                yield from (line.decode() for line in rest.split(b"\n") if line)
                handle.close()
                handle = open(path, "rb")  # noqa: SIM115
                partial = b""
            else:
                time.sleep(poll_s)
    finally:
        handle.close()


def _record(fields: Any) -> str:
    return str((fields or {}).get("record", ""))


def stream_lines(url: str, stream: str, last: int | None, follow: bool,
                 block_ms: int = 1000) -> Iterator[str]:
    """Records of a Redis Stream: all or the last N, then new ones (XREAD BLOCK) if following."""
    # redis-py's stubs type replies as unions of every RESP shape; read them as Any.
    client: Any = redisio.connect(url, timeout_s=block_ms / 1000 + 5, decode_responses=True)
    try:
        if last is None:
            entries = client.xrange(stream)
        else:
            entries = list(reversed(client.xrevrange(stream, count=last))) if last else []
        yield from (_record(fields) for _, fields in entries)
        if not entries and last == 0:
            entries = client.xrevrange(stream, count=1)
        cursor = entries[-1][0] if entries else "0-0"
        while follow:
            for _, batch in client.xread({stream: cursor}, count=500, block=block_ms) or []:
                for entry_id, fields in batch:
                    cursor = entry_id
                    yield _record(fields)
    finally:
        client.close()
