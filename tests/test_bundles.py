"""Policy bundles through Redis: `pdp publish`, rollback, verification, and replicas
(in process and `pdp serve` subprocesses) converging on what is current.

Every test runs against a real redis-server on a free loopback port.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc
import pytest
import redis
from conftest import RedisServer
from grpc_support import write_policies
from sync_support import (
    FAILING_TEST,
    POLICY_V1,
    POLICY_V2,
    in_process_replica,
    policy_dir,
    replica,
    served_version,
    wait_until,
)

from pdp.bundles import CHANNEL, CURRENT_KEY, BundleError, BundleStore, bundle_key, decode, make_bundle
from pdp.cli import main
from pdp.client import PdpClient
from pdp.loader import SourceFile, read_sources, version_of


def publish(*args: str) -> int:
    return main(["publish", *args])


def store_for(url: str) -> BundleStore:
    return BundleStore(redis.Redis.from_url(url))


def version_of_dir(folder: Path) -> str:
    return version_of(read_sources(folder))


# ---- pdp publish ----


def test_publish_stores_the_set_under_its_version_and_makes_it_current(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = policy_dir(tmp_path, "v1", POLICY_V1)
    assert publish(str(v1), "--redis-url", redis_url, "--by", "alice@laptop") == 0
    store = store_for(redis_url)
    version = version_of_dir(v1)
    assert store.current_version() == version
    bundle = store.load(version)
    assert bundle.info.published_by == "alice@laptop"
    assert [s.path for s in bundle.sources] == ["main.policy"]
    assert f"published {version}" in capsys.readouterr().out


def test_publish_announces_the_version_on_the_channel(tmp_path: Path, redis_url: str) -> None:
    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    v1 = policy_dir(tmp_path, "v1", POLICY_V1)
    assert publish(str(v1), "--redis-url", redis_url) == 0
    message = wait_until(lambda: pubsub.get_message(timeout=0.1), 10, "announcement")
    assert message["data"].decode() == version_of_dir(v1)


def test_rollback_makes_an_earlier_version_current(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = policy_dir(tmp_path, "v1", POLICY_V1), policy_dir(tmp_path, "v2", POLICY_V2)
    assert publish(str(v1), "--redis-url", redis_url) == 0
    assert publish(str(v2), "--redis-url", redis_url) == 0
    store = store_for(redis_url)
    assert store.current_version() == version_of_dir(v2)

    short = version_of_dir(v1)[:12]
    assert publish("--rollback", short, "--redis-url", redis_url) == 0
    assert store.current_version() == version_of_dir(v1)

    assert main(["bundles", "list", "--redis-url", redis_url]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln[:1] in "* "]
    listed = [ln[2:].split()[0] for ln in lines[-2:]]
    assert listed == [version_of_dir(v1), version_of_dir(v2)]  # oldest first
    assert lines[-2].startswith("* ")  # v1 is current


def test_rollback_to_an_unknown_version_is_refused(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert publish("--rollback", "deadbeef", "--redis-url", redis_url) == 1
    assert "no stored version starts with 'deadbeef'" in capsys.readouterr().err
    assert store_for(redis_url).current_version() is None


def test_a_set_whose_tests_fail_is_not_published_without_force(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = policy_dir(tmp_path, "bad", POLICY_V1 + FAILING_TEST)
    assert publish(str(bad), "--redis-url", redis_url) == 1
    assert "1 test(s) fail (this expectation is wrong); nothing published" in capsys.readouterr().err
    store = store_for(redis_url)
    assert store.current_version() is None
    assert store.list() == []

    assert publish(str(bad), "--redis-url", redis_url, "--force") == 0
    assert "warning: publishing with 1 failing test(s)" in capsys.readouterr().err
    assert store.current_version() == version_of_dir(bad)


def test_a_set_that_does_not_compile_is_not_published(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = policy_dir(tmp_path, "broken", "role broken {\n    allow read on\n}\n")
    assert publish(str(broken), "--redis-url", redis_url, "--force") == 1
    assert "does not compile; nothing published" in capsys.readouterr().err
    assert store_for(redis_url).current_version() is None


def test_publish_without_redis_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import free_port

    v1 = policy_dir(tmp_path, "v1", POLICY_V1)
    assert publish(str(v1), "--redis-url", f"redis://127.0.0.1:{free_port()}/0") == 1
    assert "cannot reach Redis" in capsys.readouterr().err


# ---- verification ----


def test_a_bundle_decodes_only_when_its_files_hash_to_its_version() -> None:
    bundle = make_bundle([SourceFile("main.policy", POLICY_V1.encode())], "me")
    from pdp.bundles import encode

    raw = encode(bundle)
    assert decode(raw, bundle.info.version).sources == bundle.sources
    with pytest.raises(BundleError, match="does not match its version"):
        decode(raw, "0" * 64)
    tampered = json.loads(raw)
    tampered["files"][0]["content"] = "YWxsb3cgKiBvbiAqKg=="  # "allow * on **"
    with pytest.raises(BundleError, match="does not match its version"):
        decode(json.dumps(tampered).encode(), bundle.info.version)
    with pytest.raises(BundleError, match="malformed"):
        decode(b"\x00not json", bundle.info.version)


def _announce(url: str, version: str, raw: bytes) -> None:
    """What a broken or hostile publisher could do: store anything, make it current."""
    client = redis.Redis.from_url(url)
    client.set(bundle_key(version), raw)
    client.set(CURRENT_KEY, version)
    client.publish(CHANNEL, version)


def test_corrupt_or_wrongly_hashed_bundles_are_refused_and_the_old_version_keeps_serving(
    tmp_path: Path, redis_url: str
) -> None:
    v1 = policy_dir(tmp_path, "v1", POLICY_V1)
    assert publish(str(v1), "--redis-url", redis_url) == 0
    good = version_of_dir(v1)
    with in_process_replica(tmp_path, redis_url) as server, \
            PdpClient(f"127.0.0.1:{server.port}") as client:
        assert served_version(client) == good

        corrupt = "c" * 64
        _announce(redis_url, corrupt, b"{\"files\": [")
        info = wait_until(lambda: (i := client.policy_info()).HasField("last_error") and i, 10,
                          "corrupt bundle refused")
        assert corrupt in info.last_error.message and "malformed" in info.last_error.message
        assert info.version == good

        # A well-formed bundle whose files were changed after hashing: a different version.
        v2_sources = [SourceFile("main.policy", POLICY_V2.encode())]
        forged = make_bundle(v2_sources, "mallory")
        from pdp.bundles import encode

        claimed = version_of([SourceFile("main.policy", b"grant approver to user:*\n")])
        raw = json.loads(encode(forged))
        raw["version"] = claimed
        _announce(redis_url, claimed, json.dumps(raw).encode())
        wait_until(lambda: claimed in client.policy_info().last_error.message, 10, "forged refused")
        info = client.policy_info()
        assert "does not match its version" in info.last_error.message
        assert info.version == good
        assert client.check("user:anna", "approve", "invoice:1",
                            resource_properties={"amount": 10}).allowed

        # A good publish after the bad ones is taken, and clears the error.
        v2 = policy_dir(tmp_path, "v2", POLICY_V2)
        assert publish(str(v2), "--redis-url", redis_url) == 0
        wait_until(lambda: served_version(client) == version_of_dir(v2), 10, "v2 served")
        assert not client.policy_info().HasField("last_error")


# ---- replicas ----


def test_three_replicas_converge_on_each_publish_and_rollback(tmp_path: Path, redis_url: str) -> None:
    v1, v2 = policy_dir(tmp_path, "v1", POLICY_V1), policy_dir(tmp_path, "v2", POLICY_V2)
    assert publish(str(v1), "--redis-url", redis_url) == 0
    with replica(redis_url) as a, replica(redis_url) as b, replica(redis_url) as c:
        clients = [PdpClient(f"127.0.0.1:{r.port}") for r in (a, b, c)]
        try:
            for expected in (version_of_dir(v1), None, version_of_dir(v1)):
                if expected is None:  # publish v2
                    assert publish(str(v2), "--redis-url", redis_url) == 0
                    expected = version_of_dir(v2)
                elif expected != served_version(clients[0]):  # roll back to v1
                    assert publish("--rollback", expected, "--redis-url", redis_url) == 0
                for client in clients:
                    wait_until(lambda c=client, e=expected: served_version(c) == e, 30,
                               f"replica serving {expected[:12]}")
                    assert client.policy_info().source_dir == f"redis bundle {expected}"
        finally:
            for client in clients:
                client.close()


def test_a_replica_started_before_any_publish_loads_the_first_one(tmp_path: Path, redis_url: str) -> None:
    with replica(redis_url) as server, PdpClient(f"127.0.0.1:{server.port}") as client:
        assert client.policy_info().version == ""
        v1 = policy_dir(tmp_path, "v1", POLICY_V1)
        assert publish(str(v1), "--redis-url", redis_url) == 0
        wait_until(lambda: served_version(client) == version_of_dir(v1), 30, "first bundle served")


def test_a_replica_that_missed_the_announcement_catches_up_on_reconnect(
    tmp_path: Path, redis_url: str
) -> None:
    v1, v2 = policy_dir(tmp_path, "v1", POLICY_V1), policy_dir(tmp_path, "v2", POLICY_V2)
    assert publish(str(v1), "--redis-url", redis_url) == 0
    # Periodic re-checks far off: only the reconnect can bring v2.
    with in_process_replica(tmp_path, redis_url, redis={"resync_seconds": "3600"}) as server, \
            PdpClient(f"127.0.0.1:{server.port}") as client:
        assert server.sync is not None and server.sync.bundles is not None
        subscription = server.sync.bundles.subscription
        wait_until(subscription.connected.is_set, 10, "subscribed")
        store = store_for(redis_url)
        bundle = make_bundle(read_sources(v2), "me")
        store.store(bundle)
        redis.Redis.from_url(redis_url).set(CURRENT_KEY, bundle.info.version)  # no announcement
        assert served_version(client) == version_of_dir(v1)

        redis.Redis.from_url(redis_url).client_kill_filter(_type="pubsub")
        wait_until(lambda: served_version(client) == bundle.info.version, 10, "caught up")


def test_replicas_catch_up_after_redis_restarts(tmp_path: Path, redis_server: RedisServer) -> None:
    url = redis_server.url
    v1, v2 = policy_dir(tmp_path, "v1", POLICY_V1), policy_dir(tmp_path, "v2", POLICY_V2)
    assert publish(str(v1), "--redis-url", url) == 0
    with replica(url) as a, replica(url) as b:
        clients = [PdpClient(f"127.0.0.1:{r.port}") for r in (a, b)]
        try:
            for client in clients:
                wait_until(lambda c=client: served_version(c) == version_of_dir(v1), 30, "v1 served")
            redis_server.stop()
            # Redis down: the replicas keep serving what they have.
            assert all(c.check("user:anna", "approve", "invoice:1",
                               resource_properties={"amount": 10}).allowed for c in clients)
            redis_server.start()  # empty: no persistence
            assert publish(str(v2), "--redis-url", url) == 0
            for client in clients:
                wait_until(lambda c=client: served_version(c) == version_of_dir(v2), 30, "v2 served")
        finally:
            for client in clients:
                client.close()
        a.msg("redis failing; continuing without it")
        a.msg("redis recovered")


def test_the_periodic_check_catches_up_without_any_announcement(tmp_path: Path, redis_url: str) -> None:
    v1, v2 = policy_dir(tmp_path, "v1", POLICY_V1), policy_dir(tmp_path, "v2", POLICY_V2)
    assert publish(str(v1), "--redis-url", redis_url) == 0
    with in_process_replica(tmp_path, redis_url, redis={"resync_seconds": "0.2"}) as server, \
            PdpClient(f"127.0.0.1:{server.port}") as client:
        bundle = make_bundle(read_sources(v2), "me")
        store_for(redis_url).store(bundle)
        redis.Redis.from_url(redis_url).set(CURRENT_KEY, bundle.info.version)  # no announcement
        wait_until(lambda: served_version(client) == bundle.info.version, 10, "caught up")


def test_a_replica_started_while_redis_is_down_serves_once_it_is_up(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.stop()
    with replica(redis_server.url) as server, PdpClient(f"127.0.0.1:{server.port}") as client:
        reply = client.check("user:anna", "approve", "invoice:1", resource_properties={"amount": 10})
        assert not reply.allowed  # answered (no policy yet: fail closed), not an error
        # the replica tries Redis in the background: its failure shows once it has tried
        wait_until(lambda: client.policy_info().HasField("last_error"), 30, "load failure reported")
        redis_server.start()
        v1 = policy_dir(tmp_path, "v1", POLICY_V1)
        assert publish(str(v1), "--redis-url", redis_server.url) == 0
        wait_until(lambda: served_version(client) == version_of_dir(v1), 30, "v1 served")
        assert not client.policy_info().HasField("last_error")
        assert client.check("user:anna", "approve", "invoice:1",
                            resource_properties={"amount": 10}).allowed


def test_a_corrupted_version_republished_intact_is_served(tmp_path: Path, redis_url: str) -> None:
    v1, v2 = policy_dir(tmp_path, "v1", POLICY_V1), policy_dir(tmp_path, "v2", POLICY_V2)
    assert publish(str(v1), "--redis-url", redis_url) == 0
    with in_process_replica(tmp_path, redis_url) as server, \
            PdpClient(f"127.0.0.1:{server.port}") as client:
        version = version_of_dir(v2)
        _announce(redis_url, version, b"truncated")
        wait_until(lambda: client.policy_info().HasField("last_error"), 10, "refused")
        assert served_version(client) == version_of_dir(v1)
        assert publish(str(v2), "--redis-url", redis_url) == 0  # same version, intact files
        wait_until(lambda: served_version(client) == version, 10, "repaired version served")


def test_the_replica_knows_who_published_the_version_it_serves(tmp_path: Path, redis_url: str) -> None:
    v1 = policy_dir(tmp_path, "v1", POLICY_V1)
    assert publish(str(v1), "--redis-url", redis_url, "--by", "alice@laptop") == 0
    with in_process_replica(tmp_path, redis_url) as server:
        assert server.sync is not None and server.sync.publisher is not None
        published = server.sync.publisher(version_of_dir(v1))
        assert published is not None and published[0] == "alice@laptop"
        assert published[1] == store_for(redis_url).load(version_of_dir(v1)).info.published_at
        assert server.sync.publisher("0" * 64) is None


class CheckLoad:
    """Threads calling Check on every replica until stopped; every failed call is kept."""

    def __init__(self, ports: list[int]) -> None:
        self.failures: list[str] = []
        self.versions: set[str] = set()
        self.calls = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(p,)) for p in ports]

    def __enter__(self) -> CheckLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self, port: int) -> None:
        with PdpClient(f"127.0.0.1:{port}", timeout=5) as client:
            while not self._stop.is_set():
                try:
                    reply = client.check("user:anna", "approve", "invoice:1",
                                         resource_properties={"amount": 10})
                    with self._lock:
                        self.calls += 1
                        self.versions.add(reply.policy_version)
                        if not reply.allowed:
                            self.failures.append(f"denied: {list(reply.reasons)}")
                except grpc.RpcError as exc:
                    with self._lock:
                        self.failures.append(f"{exc.code()}: {exc.details()}")


def test_replicas_under_load_swap_versions_and_ride_out_redis_faults_without_a_failed_check(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url
    v1, v2 = policy_dir(tmp_path, "v1", POLICY_V1), policy_dir(tmp_path, "v2", POLICY_V2)
    assert publish(str(v1), "--redis-url", url) == 0
    with replica(url) as a, replica(url) as b:
        clients = [PdpClient(f"127.0.0.1:{r.port}") for r in (a, b)]
        try:
            for client in clients:
                wait_until(lambda c=client: served_version(c) == version_of_dir(v1), 30, "v1 served")
            with CheckLoad([a.port, b.port]) as load:
                wait_until(lambda: load.calls > 50, 30, "load running")
                assert publish(str(v2), "--redis-url", url) == 0
                for client in clients:
                    wait_until(lambda c=client: served_version(c) == version_of_dir(v2), 30, "v2")
                redis.Redis.from_url(url).client_kill_filter(_type="pubsub")
                redis_server.stop()
                calls = load.calls
                wait_until(lambda: load.calls > calls + 50, 30, "load while Redis is down")
                redis_server.start()
                assert publish("--rollback", version_of_dir(v1), "--redis-url", url) == 1  # empty now
                assert publish(str(v1), "--redis-url", url) == 0
                for client in clients:
                    wait_until(lambda c=client: served_version(c) == version_of_dir(v1), 30, "v1 again")
            assert load.failures == []
            assert load.versions == {version_of_dir(v1), version_of_dir(v2)}
        finally:
            for client in clients:
                client.close()


def test_every_worker_of_a_replica_follows_the_bundle(tmp_path: Path, redis_url: str) -> None:
    from conftest import free_port
    from grpc_support import PdpProcess

    v1, v2 = policy_dir(tmp_path, "v1", POLICY_V1), policy_dir(tmp_path, "v2", POLICY_V2)
    assert publish(str(v1), "--redis-url", redis_url) == 0
    port = free_port()
    args = ["--policy-source", "redis", "--redis-url", redis_url, "--listen", f"127.0.0.1:{port}",
            "--workers", "2"]
    with PdpProcess(args) as server:
        server.msg("policy loaded", count=2)  # one per worker
        assert publish(str(v2), "--redis-url", redis_url) == 0
        server.wait_log(lambda e: e.get("msg") == "policy loaded"
                        and e.get("version") == version_of_dir(v2), count=2, timeout=30)
        pids = {e["pid"] for e in server.logs if e.get("version") == version_of_dir(v2)}
        assert len(pids) == 2
        for _ in range(10):  # new connections land on either worker
            with PdpClient(f"127.0.0.1:{port}") as client:
                assert served_version(client) == version_of_dir(v2)


def test_bundles_show_prints_a_verified_version_and_writes_its_files(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = write_policies(tmp_path / "v1", {"main.policy": POLICY_V1})
    (v1 / "teams").mkdir()
    (v1 / "teams" / "people.subjects.json").write_text("{}")
    assert publish(str(v1), "--redis-url", redis_url, "--by", "alice@laptop") == 0
    capsys.readouterr()
    out_dir = tmp_path / "out"
    version = version_of_dir(v1)
    assert main(["bundles", "show", version[:10], "--files-to", str(out_dir),
                 "--redis-url", redis_url]) == 0
    out = capsys.readouterr().out
    assert f"version: {version}  (current)" in out and "published by alice@laptop" in out
    assert version_of_dir(out_dir) == version

    _announce(redis_url, "e" * 64, b"[]")
    assert main(["bundles", "show", "e" * 64, "--redis-url", redis_url]) == 1
    assert "malformed" in capsys.readouterr().err
