"""Redis faults under concurrent gRPC load: every Check answered, logged once per state change."""

from __future__ import annotations

from pathlib import Path

import redis
from cache_support import Load, assert_one_outage_logged_once, faults_metric, pdp_with_redis, wait_for
from conftest import RedisServer


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
