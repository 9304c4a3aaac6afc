"""Two `pdp serve` replicas sharing level 2 through one real redis-server."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import redis
from grpc_support import PdpProcess, request, stub, write_policies

from pdp import config as settings

POLICY = """
role editor {
    allow edit on document:drafts/** when resource.owner == subject.id
        reason "editors edit their own drafts" as own-drafts
}
grant editor to user:*
"""


def replica(policies: Path, redis_url: str) -> PdpProcess:
    return PdpProcess([
        "--policies", str(policies), "--listen", "127.0.0.1:0", "--redis-url", redis_url,
        "--cache-l2-lookup", "always", "--redis-assignments", "false",
        "--redis-timeout-ms", "500",  # a loaded test machine must not turn a hit into a timeout
    ])


def wait_for_keys(client: redis.Redis, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(client.keys("pdp:dc:*")) < count:
        assert time.monotonic() < deadline, "the write-behind never reached Redis"
        time.sleep(0.02)


def test_a_decision_made_by_one_replica_is_served_cached_by_the_other(
    tmp_path: Path, redis_url: str,
) -> None:
    policies = write_policies(tmp_path / "p", {"main.policy": POLICY})
    client = redis.Redis.from_url(redis_url)
    with replica(policies, redis_url) as one, replica(policies, redis_url) as two:
        (c1, a), (c2, b) = stub(one.port), stub(two.port)
        one.msg("policy loaded"), two.msg("policy loaded")
        mine = request("user:alice", "edit", "document:drafts/1",
                       resource_properties={"owner": "alice"})
        first = a.Check(mine, timeout=10)
        assert first.allowed and not first.cached
        wait_for_keys(client, 1)
        shared = b.Check(mine, timeout=10)  # b's level 1 is empty: this is level 2
        assert shared.allowed and shared.cached
        assert shared.policy_version == first.policy_version

        theirs = request("user:bob", "edit", "document:drafts/1",
                         resource_properties={"owner": "alice"})
        assert not b.Check(theirs, timeout=10).cached
        wait_for_keys(client, 2)
        back = a.Check(theirs, timeout=10)
        assert back.cached and not back.allowed
        c1.close()
        c2.close()
    client.close()


def test_cache_settings_from_flags_and_environment() -> None:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    args = parser.parse_args(["--cache-size", "0", "--cache-ttl", "30",
                              "--redis-timeout-ms", "2.5", "--redis-url", "redis://127.0.0.1:1"])
    config = settings.from_args(args, env={"PDP_CACHE_L2_LOOKUP": "never"})
    assert (config.cache.size, config.cache.ttl, config.cache.redis_timeout_ms) == (0, 30.0, 2.5)
    assert config.cache.l2_lookup == "never" and config.redis.url == "redis://127.0.0.1:1"


def test_a_bad_lookup_mode_is_refused_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pdp", "serve", "--policies", str(tmp_path),
         "--cache-l2-lookup", "sometimes"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "cache.l2_lookup" in done.stderr
