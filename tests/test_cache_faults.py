"""Redis faults under concurrent gRPC load: every Check answered, logged once per state change.

The server reads level 2 before deciding (`l2_lookup = always`), so Redis is
on the decision path of every level-1 miss, and each request is new (its own
owner attribute), so every Check misses level 1 and goes to Redis.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import redis
from conftest import RedisServer
from grpc_support import make_config, request, running_server, stub, write_policies
from prometheus_client import REGISTRY

from pdp.cache import TieredCache
from pdp.server import Server

POLICY = """
role editor {
    allow edit on document:drafts/** when resource.owner == subject.id
        reason "editors edit their own drafts" as own-drafts
}
grant editor to user:*
"""
DEADLINE_S = 5.0  # a Check slower than this counts as failed


class Load:
    """Client threads calling Check over gRPC until stopped; every answer is verified."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.answered = 0
        self.failures: list[str] = []
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work) for _ in range(threads)]

    def _work(self) -> None:
        channel, decisions = stub(self.port)
        with channel:
            while not self._stop.is_set():
                n = next(self._ids)
                owner = "alice" if n % 2 else f"owner-{n}"
                try:
                    reply = decisions.Check(
                        request("user:alice", "edit", "document:drafts/1",
                                resource_properties={"owner": owner}),
                        timeout=DEADLINE_S)
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code()}: {exc.details()}")
                    continue
                if reply.allowed != (owner == "alice") or reply.HasField("error"):
                    self.failures.append(f"wrong answer for owner {owner}: {reply}")
                self.answered += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def wait_answers(self, count: int, timeout: float = 30) -> None:
        target = self.answered + count
        wait_for(lambda: self.answered >= target, timeout)


class RedisLog(logging.Handler):
    """The cache's Redis state changes, as logged."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "pdp_fields", {}).get("component") == "cache":
            self.messages.append(record.getMessage())

    def count(self, text: str) -> int:
        return sum(1 for m in self.messages if m == text)


def wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@contextlib.contextmanager
def pdp_with_redis(tmp_path: Path, url: str) -> Iterator[tuple[Server, TieredCache, RedisLog]]:
    config = make_config(
        write_policies(tmp_path / "p", {"main.policy": POLICY}),
        cache={"l2_lookup": "always", "redis_timeout_ms": "200", "retry_seconds": "0.2"},
        redis={"url": url, "assignments": "false"},
    )
    handler = RedisLog()
    logger = logging.getLogger("pdp.redis")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with running_server(config) as server:
            cache = server.service.cache
            assert isinstance(cache, TieredCache) and cache.l2 is not None
            yield server, cache, handler
    finally:
        logger.removeHandler(handler)


def faults_metric() -> float:
    return REGISTRY.get_sample_value("pdp_redis_faults_total", {"component": "cache"}) or 0.0


def assert_one_outage_logged_once(cache: TieredCache, log: RedisLog) -> None:
    assert cache.l2 is not None
    tracker = cache.l2.tracker
    wait_for(lambda: tracker.healthy)
    assert tracker.outages == 1 and tracker.faults >= 1
    assert log.count("redis failing; continuing without it") == 1
    assert log.count("redis recovered") == 1


def test_redis_down_at_start_then_started(tmp_path: Path) -> None:
    server_proc = RedisServer(tmp_path)
    with pdp_with_redis(tmp_path, server_proc.url) as (server, cache, log), Load(server.port) as load:
        assert cache.l2 is not None
        load.wait_answers(200)
        assert not cache.l2.tracker.healthy and cache.l2.written == 0
        server_proc.start()
        try:
            assert_one_outage_logged_once(cache, log)
            load.wait_answers(200)
            wait_for(lambda: cache.l2 is not None and cache.l2.written > 0)
        finally:
            server_proc.stop()
    assert load.failures == []


def test_redis_killed_during_load_and_restarted(tmp_path: Path, redis_server: RedisServer) -> None:
    before = faults_metric()
    with pdp_with_redis(tmp_path, redis_server.url) as (server, cache, log), \
            Load(server.port) as load:
        assert cache.l2 is not None
        load.wait_answers(200)
        wait_for(lambda: cache.l2 is not None and cache.l2.written > 0)
        redis_server.stop()
        wait_for(lambda: cache.l2 is not None and not cache.l2.tracker.healthy)
        load.wait_answers(300)
        redis_server.start()
        assert_one_outage_logged_once(cache, log)
        written = cache.l2.written
        load.wait_answers(200)
        wait_for(lambda: cache.l2 is not None and cache.l2.written > written)
    assert load.failures == []
    assert faults_metric() - before >= cache.l2.tracker.faults


def test_redis_paused_during_load(tmp_path: Path, redis_server: RedisServer) -> None:
    with pdp_with_redis(tmp_path, redis_server.url) as (server, cache, log), \
            Load(server.port) as load:
        assert cache.l2 is not None
        load.wait_answers(200)
        redis_server.pause()
        try:
            wait_for(lambda: cache.l2 is not None and not cache.l2.tracker.healthy)
            load.wait_answers(300)
        finally:
            redis_server.resume()
        assert_one_outage_logged_once(cache, log)
        load.wait_answers(200)
    assert load.failures == []


def test_redis_answering_errors(tmp_path: Path, redis_server: RedisServer) -> None:
    admin = redis.Redis(port=redis_server.port)
    admin.acl_setuser("pdp", enabled=True, passwords=["+pw"], keys=["pdp:*"], commands=["+@all"])
    url = f"redis://pdp:pw@127.0.0.1:{redis_server.port}/0"
    with pdp_with_redis(tmp_path, url) as (server, cache, log), Load(server.port) as load:
        assert cache.l2 is not None
        load.wait_answers(200)
        admin.acl_setuser("pdp", enabled=True, reset_keys=True, keys=["other:*"])  # NOPERM
        wait_for(lambda: cache.l2 is not None and not cache.l2.tracker.healthy)
        # Redis first drops the user's connections, then answers NOPERM.
        wait_for(lambda: "NoPermission" in (cache.l2.tracker.last_error or "") if cache.l2 else False)
        load.wait_answers(300)
        admin.acl_setuser("pdp", enabled=True, keys=["pdp:*"])
        assert_one_outage_logged_once(cache, log)
        load.wait_answers(200)
    admin.close()
    assert load.failures == []
