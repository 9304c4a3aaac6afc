"""A PDP under concurrent gRPC load with Redis as level 2, for the fault tests.

The server reads level 2 before deciding (`l2_lookup = always`), so Redis is
on the decision path of every level-1 miss, and half the requests are new (their
own owner attribute), so they miss level 1 and go to Redis.
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
