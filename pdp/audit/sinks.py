"""Where audit records go: stdout, a size-rotated JSON-lines file, a Redis Stream.

A sink writes one batch of JSON lines (bytes) per call and raises when it cannot.
`GuardedSink` wraps each one so that a failure is counted and never
propagates: records that reach a failing sink are lost and counted, and a
failing sink is retried at most once a second so a dead Redis does not hold
the writer.

Sinks run where records are built: in the audit writer process (or on the
writer thread in thread mode). They touch neither metrics nor logs: their
counts travel to the server process as status snapshots, and pdp.audit.status
turns them into metrics, health and one log line per change of state there.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO

import redis

from pdp import redisio
from pdp.audit.tally import Tally

_pack_command: Any  # hiredis.pack_command(args) -> RESP bytes (its stub types args too narrowly)
try:  # installed with redis[hiredis]; without it the sink uses redis-py's pipeline
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover
    _pack_command = None


class Sink(Protocol):
    name: str

    def write(self, lines: Sequence[bytes]) -> None: ...
    def close(self) -> None: ...


class StdoutSink:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def write(self, lines: Sequence[bytes]) -> None:
        stream = self._stream or sys.stdout  # looked up late: tests and daemons swap stdout
        stream.write(b"\n".join(lines).decode() + "\n")
        stream.flush()

    def close(self) -> None:
        pass


class RotatingFileSink:
    """JSON lines; past `max_bytes` the file becomes NAME.1 (NAME.1 -> NAME.2 ...),
    keeping `backups` old files. Flushed once per batch, not fsynced.

    Worker processes may share one file: each batch is written holding an
    exclusive lock (flock on NAME.lock), and a process that finds the path
    naming another file (someone else rotated) reopens it before writing.
    """

    def __init__(self, path: str | Path, max_bytes: int, backups: int) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self._max = max_bytes
        self._backups = backups
        self._file: BinaryIO | None = None
        self._lock_fd: int | None = None

    def write(self, lines: Sequence[bytes]) -> None:
        with self._locked():
            size = self._size()
            buf = bytearray()
            for line in lines:
                data = line + b"\n"
                if size + len(buf) + len(data) > self._max and (size or buf):
                    self._append(buf)
                    buf.clear()
                    self._rotate()
                    size = self._size()
                buf += data
            self._append(buf)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock_fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_path = self.path.with_name(self.path.name + ".lock")
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _size(self) -> int:
        """The current file's size, (re)opening it when it is new or another process rotated it."""
        if self._file is not None:
            try:
                same = os.path.samestat(os.stat(self.path), os.fstat(self._file.fileno()))
            except FileNotFoundError:
                same = False
            if not same:
                self._close_file()
        if self._file is None:
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across batches
        return os.fstat(self._file.fileno()).st_size

    def _append(self, data: bytes | bytearray) -> None:
        if not data or self._file is None:
            return
        try:
            self._file.write(data)
            self._file.flush()
        except OSError:
            self._close_file()  # reopen on the next batch
            raise

    def _rotate(self) -> None:
        self._close_file()
        if self._backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for index in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # a failed flush of a broken file: the batch was already counted lost
            finally:
                self._file = None

    def close(self) -> None:
        self._close_file()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class RedisStreamSink:
    """XADD per record, one round trip per batch, trimmed with MAXLEN ~ so the stream
    stays bounded. Each entry has one field, `record`, holding the JSON.

    On a single server (or Sentinel master) the batch's commands are packed by
    hiredis and sent on one pooled connection: redis-py's pipeline costs about
    twice as much CPU per command, CPU the writer takes from Checks under the
    GIL. A cluster client goes through its pipeline.
    """

    name = "redis"

    def __init__(self, url: str, stream: str, maxlen: int, timeout_s: float = 1.0) -> None:
        # Any URL form pdp.redisio knows (TLS, ACL user, cluster, sentinel); no retries.
        # Typed Any: redis-py's stubs leave pipelines and connections untyped.
        self._client: Any = redisio.connect(url, timeout_s=timeout_s)
        self._stream = stream.encode()
        self._maxlen = str(maxlen).encode()

    def write(self, lines: Sequence[bytes]) -> None:
        # A RedisError is counted as a failure by GuardedSink (and as a Redis fault
        # by pdp.audit.status, in the server process).
        if isinstance(self._client, redis.Redis) and _pack_command is not None:
            self._send_packed(self._client, lines, _pack_command)
        else:
            pipe = self._client.pipeline(transaction=False)
            for line in lines:
                pipe.execute_command(*self._xadd(line))
            pipe.execute()

    def _xadd(self, line: bytes) -> tuple[bytes, ...]:
        return (b"XADD", self._stream, b"MAXLEN", b"~", self._maxlen, b"*", b"record", line)

    def _send_packed(self, client: Any, lines: Sequence[bytes],
                     pack: Callable[[tuple[bytes, ...]], bytes]) -> None:
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(pack(self._xadd(line)) for line in lines)])
            for _ in lines:
                conn.read_response()
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            pool.release(conn)

    def close(self) -> None:
        self._client.close()


class GuardedSink:
    """A sink that never raises: it counts and backs off."""

    def __init__(self, sink: Sink, retry_s: float = 1.0) -> None:
        self.sink = sink
        self.name = sink.name
        self.written = Tally()
        self.lost = Tally()
        self.failures = Tally()
        self.last_error: str | None = None
        self._retry_s = retry_s
        self._retry_at = 0.0
        self._failing = False

    @property
    def healthy(self) -> bool:
        return not self._failing

    def write(self, lines: Sequence[bytes]) -> None:
        now = time.monotonic()
        if self._failing and now < self._retry_at:
            self.lost.add(len(lines))
            return
        try:
            self.sink.write(lines)
        except Exception as exc:  # any sink error is contained here, never raised to a Check
            self.failures.add()
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._retry_at = now + self._retry_s
            self._failing = True
            self.lost.add(len(lines))
            return
        self.written.add(len(lines))
        self._failing = False

    def close(self) -> str | None:
        """Close the sink; the error, if it did not close cleanly."""
        try:
            self.sink.close()
        except Exception as exc:  # closing a broken sink must not stop shutdown
            return f"{type(exc).__name__}: {exc}"
        return None

    def status(self) -> dict[str, object]:
        return {
            "healthy": self.healthy,
            "written": self.written.value,
            "lost": self.lost.value,
            "failures": self.failures.value,
            "last_error": self.last_error,
        }
