"""A real three-master Redis Cluster on loopback ports, for the tests that need one.

Three `redis-server --cluster-enabled yes` processes joined by
`redis-cli --cluster create ... --cluster-yes` (redis-cli ships beside
redis-server). Each node also needs its cluster bus port (port + 10000) free.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from conftest import free_port, redis_server_binary


def redis_cli_binary() -> str:
    return str(Path(redis_server_binary()).with_name("redis-cli"))


def _free_pair() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster3:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """All three seeds, in the redis+cluster:// form."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        for index in range(3):
            self.ports.append(_free_pair())
            self._procs.append(self._node(index))
        for port in self.ports:
            _wait(lambda p=port: redis.Redis(port=p, socket_timeout=1).ping())
        subprocess.run(
            [redis_cli_binary(), "--cluster", "create",
             *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )
        for port in self.ports:
            _wait(lambda p=port: _cluster_ok(p))

    def _node(self, index: int) -> subprocess.Popen[bytes]:
        node_dir = self.workdir / f"node{index}"  # nodes.conf there: a restart rejoins
        node_dir.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [redis_server_binary(), "--port", str(self.ports[index]), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--save", "", "--appendonly", "no", "--dir", str(node_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def kill(self, index: int) -> None:
        """Kill one master abruptly; its slots are unserved until it is back."""
        self._procs[index].kill()
        self._procs[index].wait(timeout=10)

    def restart(self, index: int) -> None:
        self._procs[index] = self._node(index)
        for port in self.ports:
            _wait(lambda p=port: _cluster_ok(p))

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self._procs.clear()


def _cluster_ok(port: int) -> bool:
    info = redis.Redis(port=port, socket_timeout=1).cluster("info")
    return info.get("cluster_state") == "ok" if isinstance(info, dict) else b"cluster_state:ok" in info


def _wait(check: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("redis cluster did not become ready")
        time.sleep(0.1)


@contextlib.contextmanager
def running_cluster(workdir: Path) -> Iterator[RedisCluster3]:
    cluster = RedisCluster3(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
