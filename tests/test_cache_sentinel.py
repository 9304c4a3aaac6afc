"""Level 2 through Sentinel: a real master, replica and sentinel; the master fails over."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import free_port, redis_server_binary

from pdp.cache import TieredCache
from pdp.engine import decide
from pdp.model import Request
from pdp.rediscache import RedisCache
from tests.policy_helpers import load

POLICY = """
role editor {
    allow edit on document:drafts/** when resource.owner == subject.id as own-drafts
}
grant editor to user:*
"""


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        self.procs[name] = subprocess.Popen(
            [redis_server_binary(), *args, "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ExitedAtStart(f"{name} exited with {proc.returncode}")


class ExitedAtStart(Exception):
    """A redis process ended while starting: most likely another socket took the
    port that free_port() found free, before the process could bind it."""


def wait_until(check: Callable[[], object], timeout: float = 30,
               alive: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if alive is not None:
            alive()
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port)


def start_trio(procs: Processes, folder: Path) -> tuple[int, int, int]:
    """A master, its replica and a sentinel watching them, ready; their ports."""
    master, replica, sentinel = free_port(), free_port(), free_port()
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    procs.start("master", "--port", str(master), *common)
    procs.start("replica", "--port", str(replica), "--replicaof", "127.0.0.1", str(master),
                *common)
    conf = folder / "sentinel.conf"
    conf.write_text(
        f"port {sentinel}\nbind 127.0.0.1\n"
        f"sentinel monitor main 127.0.0.1 {master} 1\n"
        f"sentinel known-replica main 127.0.0.1 {replica}\n"  # no 10 s wait to discover it
        "sentinel down-after-milliseconds main 500\n"
        "sentinel failover-timeout main 2000\n"
    )
    procs.start("sentinel", str(conf), "--sentinel")
    # Until replication and the sentinel are set up, the fields are not there yet.
    wait_until(lambda: client(replica).info("replication").get("master_link_status") == "up",
               alive=procs.check_alive)
    wait_until(lambda: client(sentinel).sentinel_masters().get("main", {})
               .get("num-slaves", 0) >= 1, alive=procs.check_alive)
    return master, replica, sentinel


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[tuple[Processes, int, int, int]]:
    for attempt in range(3):  # new ports when one was taken before its process bound it
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        procs = Processes(folder)
        try:
            ports = start_trio(procs, folder)
            break
        except ExitedAtStart:
            procs.stop_all()
            if attempt == 2:
                raise
    try:
        yield (procs, *ports)
    finally:
        procs.stop_all()


def test_decisions_are_shared_through_sentinel_and_survive_a_failover(
    sentinel_setup: tuple[Processes, int, int, int], tmp_path: Path,
) -> None:
    procs, _master, replica, sentinel = sentinel_setup
    policy = load(tmp_path / "p", {"p.policy": POLICY})
    url = f"redis+sentinel://127.0.0.1:{sentinel}/main/0"
    cache = TieredCache(0, RedisCache(url, ttl_s=60, timeout_s=0.5, retry_s=0.2), "always")
    asked = [Request("user", f"u{i}", "edit", "document", "drafts/1",
                     resource_properties={"owner": "u1"}) for i in range(20)]
    try:
        for request in asked[:10]:
            cache.put(policy, request, decide(policy, request))
        assert cache.l2 is not None and cache.l2.flush() and cache.l2.written == 10
        assert cache.get(policy, asked[0]) is not None

        wait_until(lambda: client(replica).dbsize() == 10)  # replicated
        procs.kill("master")
        wait_until(lambda: client(replica).info("replication")["role"] == "master")
        # Every lookup is answered (a miss while the master is gone), then the
        # client finds the promoted replica through the sentinel on its own.
        wait_until(lambda: cache.get(policy, asked[1]) is not None)
        for request in asked[10:]:
            assert cache.get(policy, request) is None
            cache.put(policy, request, decide(policy, request))
        assert cache.l2.flush()
        # Healthy once lookups have succeeded for a retry interval again.
        wait_until(lambda: cache.get(policy, asked[-1]) is not None and cache.l2 is not None
                   and cache.l2.tracker.healthy)
        assert cache.l2.tracker.outages == 1
    finally:
        cache.close()
