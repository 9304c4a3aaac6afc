"""Level 2 of the decision cache on a real three-master Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cache_support import Load, assert_one_outage_logged_once, pdp_with_redis, wait_for
from cluster_support import RedisCluster3, running_cluster
from conftest import free_port

from pdp import redisio
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


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def requests(count: int) -> list[Request]:
    return [Request("user", f"u{i}", "edit", "document", "drafts/1",
                    resource_properties={"owner": f"u{i % 3}"}) for i in range(count)]


def test_replicas_share_decisions_through_the_cluster_spread_over_its_masters(
    redis_cluster: RedisCluster3, tmp_path: Path,
) -> None:
    policy = load(tmp_path, {"p.policy": POLICY})
    one_seed = f"redis://127.0.0.1:{redis_cluster.ports[1]}?cluster=true"
    writer = TieredCache(0, RedisCache(redis_cluster.url, ttl_s=60, timeout_s=0.5), "always")
    reader = TieredCache(0, RedisCache(one_seed, ttl_s=60, timeout_s=0.5), "always")
    asked = requests(60)
    try:
        for request in asked:
            assert writer.get(policy, request) is None
            writer.put(policy, request, decide(policy, request))
        assert writer.l2 is not None and writer.l2.flush() and writer.l2.written == 60
        assert all(reader.get(policy, r) == decide(policy, r) for r in asked)
        assert reader.counts.l2_hits == 60
        assert writer.l2.tracker.faults == 0 and reader.l2 is not None
        assert reader.l2.tracker.faults == 0
    finally:
        writer.close()
        reader.close()
    sizes = [redis.Redis(port=p).dbsize() for p in redis_cluster.ports]
    assert sum(sizes) == 60 and sum(1 for s in sizes if s) >= 2, sizes


def test_a_cluster_down_at_start_is_a_counted_fault_not_a_crash(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": POLICY})
    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    cache = TieredCache(0, RedisCache(url, ttl_s=60, timeout_s=0.05, retry_s=60), "always")
    try:
        request = requests(1)[0]
        assert cache.get(policy, request) is None
        assert cache.get(policy, request) is None  # skipped until the next probe
        assert cache.l2 is not None and cache.l2.tracker.faults == 1
        assert not cache.l2.tracker.healthy and cache.l2.skipped == 1
    finally:
        cache.close()


def test_cluster_url_forms() -> None:
    target = redisio.parse("rediss+cluster://user:pw@10.0.0.1:7000,10.0.0.2:7001")
    assert target.kind == "cluster" and target.options["ssl"] is True
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert target.options["username"] == "user"
    assert redisio.parse("redis://h:1?cluster=true").kind == "cluster"
    sentinel = redisio.parse("redis+sentinel://s1:26379,s2:26379/main/2")
    assert (sentinel.kind, sentinel.service, sentinel.options["db"]) == ("sentinel", "main", 2)


def test_a_master_killed_and_restarted_under_load(tmp_path: Path) -> None:
    """A third of the slots go dark: every Check is still answered, the partial
    outage is logged once (not once per probe) and the cache follows the master back."""
    with running_cluster(tmp_path / "cluster") as cluster, \
            pdp_with_redis(tmp_path, cluster.url) as (server, cache, log), \
            Load(server.port) as load:
        assert cache.l2 is not None
        load.wait_answers(200)
        wait_for(lambda: cache.l2 is not None and cache.l2.written > 0)
        cluster.kill(1)
        wait_for(lambda: cache.l2 is not None and not cache.l2.tracker.healthy)
        load.wait_answers(300)
        cluster.restart(1)
        assert_one_outage_logged_once(cache, log)
        written = cache.l2.written
        load.wait_answers(300)
        wait_for(lambda: cache.l2 is not None and cache.l2.written > written)
    assert load.failures == []
