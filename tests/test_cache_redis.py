"""Level 2 of the decision cache against a real redis-server: sharing, keys, TTL, bad values."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import RedisServer

from pdp import redisio
from pdp.cache import TieredCache
from pdp.engine import decide, decision_key
from pdp.model import Request
from pdp.policy import CompiledPolicy
from pdp.rediscache import RedisCache, digest, redis_key
from tests.policy_helpers import load

POLICY = """
role editor {
    allow edit on document:drafts/** when resource.owner == subject.id
        reason "editors edit their own drafts" as own-drafts
}
grant editor to user:*
"""


def edit(owner: str, subject: str = "alice") -> Request:
    return Request("user", subject, "edit", "document", "drafts/1",
                   resource_properties={"owner": owner})


@pytest.fixture
def policy(tmp_path: Path) -> CompiledPolicy:
    return load(tmp_path, {"p.policy": POLICY})


class Replicas:
    """Caches made in this test, closed at its end."""

    def __init__(self) -> None:
        self.made: list[TieredCache] = []

    def cache(self, url: str, size: int = 0, lookup: str = "always", **kw: float) -> TieredCache:
        cache = TieredCache(size, RedisCache(url, ttl_s=kw.pop("ttl_s", 60), timeout_s=0.5, **kw),
                            lookup)
        self.made.append(cache)
        return cache


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    made = Replicas()
    yield made
    for cache in made.made:
        cache.close()


def decide_through(cache: TieredCache, policy: CompiledPolicy, request: Request) -> bool:
    """What DecisionService does; returns whether the answer came from the cache."""
    if cache.get(policy, request) is not None:
        return True
    cache.put(policy, request, decide(policy, request))
    return False


def test_a_decision_written_by_one_replica_is_a_level_2_hit_for_another(
    redis_url: str, policy: CompiledPolicy, replicas: Replicas,
) -> None:
    one, two = replicas.cache(redis_url, size=10), replicas.cache(redis_url, size=10)
    request = edit("alice")
    assert not decide_through(one, policy, request)
    assert one.l2 is not None and one.l2.flush()
    found = two.get(policy, request)
    assert found == decide(policy, request)
    assert (two.counts.l1_misses, two.counts.l2_hits) == (1, 1)
    assert two.get(policy, request) == found and two.counts.l1_hits == 1  # now in its level 1


def test_the_key_is_one_tagged_digest_with_a_ttl(
    redis_url: str, policy: CompiledPolicy, replicas: Replicas,
) -> None:
    cache = replicas.cache(redis_url, ttl_s=30)
    request = edit("alice")
    decide_through(cache, policy, request)
    assert cache.l2 is not None and cache.l2.flush()
    client = redis.Redis.from_url(redis_url)
    keys = client.keys("pdp:dc:*")
    expected = redis_key(digest(decision_key(policy, request)))
    assert keys == [expected.encode()] and expected.startswith("pdp:dc:{")
    assert 0 < client.pttl(expected) <= 30_000
    client.close()


def test_the_digest_is_the_same_in_every_process_and_ignores_set_order() -> None:
    one = ("v", frozenset({"b", "a", "c"}), (("str", "x"),))
    two = ("v", frozenset({"c", "a", "b"}), (("str", "x"),))
    assert digest(one) == digest(two)
    assert digest(one) != digest(("v", frozenset({"a"}), (("str", "x"),)))


def test_a_new_policy_version_misses_level_2(
    redis_url: str, tmp_path: Path, policy: CompiledPolicy, replicas: Replicas,
) -> None:
    stricter = load(tmp_path / "new", {"p.policy": POLICY.replace("user:*", "user:alice")})
    cache = replicas.cache(redis_url)
    request = edit("carol", "carol")
    decide_through(cache, policy, request)
    assert cache.l2 is not None and cache.l2.flush()
    assert cache.get(policy, request) is not None
    assert cache.get(stricter, request) is None


def test_a_corrupt_or_foreign_value_is_a_miss_not_an_error(
    redis_url: str, policy: CompiledPolicy, replicas: Replicas,
) -> None:
    cache = replicas.cache(redis_url)
    client = redis.Redis.from_url(redis_url)
    bad = edit("alice", "mallory")
    client.set(redis_key(digest(decision_key(policy, bad))), b"not json")
    other = edit("alice", "trent")
    client.set(redis_key(digest(decision_key(policy, other))), b'[1,"another-version",[],[]]')
    assert cache.get(policy, bad) is None and cache.get(policy, other) is None
    assert cache.l2 is not None and cache.l2.corrupt == 2
    assert cache.l2.tracker.healthy
    client.close()


def test_an_acl_user_and_password_in_the_url(
    redis_server: RedisServer, policy: CompiledPolicy, replicas: Replicas,
) -> None:
    port = redis_server.port
    admin = redis.Redis(port=port)
    admin.acl_setuser("pdp", enabled=True, passwords=["+s3cret/pw"], keys=["pdp:*"],
                      commands=["+get", "+set", "+ping"])
    url = f"redis://pdp:s3cret%2Fpw@127.0.0.1:{port}/0"
    one, two = replicas.cache(url), replicas.cache(url)
    decide_through(one, policy, edit("alice"))
    assert one.l2 is not None and one.l2.flush() and one.l2.written == 1
    assert two.get(policy, edit("alice")) is not None
    wrong = replicas.cache(f"redis://pdp:nope@127.0.0.1:{port}/0")
    assert wrong.get(policy, edit("alice")) is None
    assert wrong.l2 is not None and wrong.l2.tracker.faults == 1
    assert "nope" not in redisio.redact(f"redis://pdp:nope@127.0.0.1:{port}/0")
    admin.close()


def test_writes_beyond_the_queue_are_dropped_and_counted(
    redis_url: str, policy: CompiledPolicy,
) -> None:
    l2 = RedisCache(redis_url, ttl_s=60, queue_size=0)
    try:
        l2.put(decision_key(policy, edit("alice")), decide(policy, edit("alice")))
        assert l2.dropped == 1 and l2.pending() == 0
    finally:
        l2.close()


def test_auto_measures_both_costs_and_chooses_by_them(
    redis_url: str, policy: CompiledPolicy, replicas: Replicas,
) -> None:
    cache = replicas.cache(redis_url, lookup="auto")
    assert not cache.reads_l2  # nothing measured yet: decide locally
    deadline = time.monotonic() + 10
    while cache.local_cost_ns is None or cache.l2_cost_ns is None:
        assert time.monotonic() < deadline, cache.stats()
        decide_through(cache, policy, edit(f"o{time.monotonic()}"))
        time.sleep(0.05)
    assert cache.reads_l2 == (cache.local_cost_ns > cache.l2_cost_ns)


def test_never_only_writes(redis_url: str, policy: CompiledPolicy, replicas: Replicas) -> None:
    writer, reader = replicas.cache(redis_url), replicas.cache(redis_url, lookup="never")
    decide_through(writer, policy, edit("alice"))
    assert writer.l2 is not None and writer.l2.flush()
    assert reader.get(policy, edit("alice")) is None
    assert reader.counts.l2_misses == 0 and reader.counts.l2_hits == 0


def test_auto_writes_only_while_it_reads(
    redis_url: str, policy: CompiledPolicy, replicas: Replicas,
) -> None:
    cache = replicas.cache(redis_url, lookup="auto")
    assert not cache.reads_l2  # nothing measured yet: decide locally
    decide_through(cache, policy, edit("alice"))
    assert cache.l2 is not None and cache.l2.flush()
    assert cache.l2.written == 0 and cache.l2.pending() == 0
