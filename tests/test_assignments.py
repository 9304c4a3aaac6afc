"""Dynamic role assignments: `pdp grant/revoke/subjects`, the in-memory snapshot merged
into each request, the decision cache never serving a decision a change made stale,
and replicas (in process and `pdp serve` subprocesses) converging on each change.

Every test runs against a real redis-server on a free loopback port.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis
from grpc_support import write_policies
from sync_support import POLICY_V1, in_process_replica, policy_dir, replica, wait_until

from pdp.assignments import (
    CHANNEL,
    REV_KEY,
    SUBJECTS_KEY,
    Assignment,
    AssignmentSnapshot,
    AssignmentStore,
)
from pdp.cli import main
from pdp.client import PdpClient
from pdp.engine import decide
from pdp.loader import load_policy_dir, read_sources, version_of
from pdp.model import Request

SMALL_INVOICE = {"amount": 10}


def run(*args: str) -> int:
    return main(list(args))


def store_for(url: str) -> AssignmentStore:
    return AssignmentStore(redis.Redis.from_url(url))


@pytest.fixture
def published(tmp_path: Path, redis_url: str) -> str:
    """POLICY_V1 published as the current bundle; returns the Redis URL."""
    assert run("publish", str(policy_dir(tmp_path, "v1", POLICY_V1)), "--redis-url", redis_url) == 0
    return redis_url


# ---- the commands ----


def test_grant_a_role_the_current_bundle_defines(published: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("grant", "auditor", "user:bob", "--redis-url", published) == 0
    assert "granted auditor to user:bob" in capsys.readouterr().out
    assert store_for(published).get("user:bob").roles == {"auditor"}


def test_a_role_the_policy_does_not_define_is_refused(
    published: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("grant", "admin", "user:bob", "--redis-url", published) == 1
    err = capsys.readouterr().err
    assert "role 'admin' is not defined by the current policy" in err
    assert "defined roles: approver, auditor" in err and "nothing granted" in err
    assert store_for(published).get("user:bob").empty


def test_grant_checks_against_a_folder_when_given(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("grant", "approver", "user:bob", "--redis-url", redis_url) == 1
    assert "no policy bundle is current in Redis" in capsys.readouterr().err
    folder = policy_dir(tmp_path, "local", POLICY_V1)
    assert run("grant", "approver", "user:bob", "--redis-url", redis_url, "--policies", str(folder)) == 0
    assert run("grant", "nobody", "user:bob", "--redis-url", redis_url, "--policies", str(folder)) == 1


def test_revoke_and_the_subject_commands(published: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = ("--redis-url", published)
    assert run("grant", "approver", "user:bob", *url) == 0
    assert run("grant", "auditor", "user:bob", *url) == 0
    assert run("subjects", "set-property", "user:bob", "department", "finance", *url) == 0
    assert run("subjects", "set-property", "user:bob", "level", "3", *url) == 0
    assert run("revoke", "approver", "user:bob", *url) == 0
    assert run("revoke", "approver", "user:bob", *url) == 0  # already gone: says so, succeeds
    capsys.readouterr()

    assert run("subjects", "show", "user:bob", *url) == 0
    assert capsys.readouterr().out.strip() == (
        'user:bob  roles: auditor  properties: {"department": "finance", "level": 3}'
    )
    assert run("subjects", "unset-property", "user:bob", "level", *url) == 0
    assert run("grant", "approver", "user:carol", *url) == 0
    capsys.readouterr()
    assert run("subjects", "list", *url) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == 'user:bob  roles: auditor  properties: {"department": "finance"}'
    assert out[1] == "user:carol  roles: approver  properties: {}"
    assert out[2].startswith("2 subject(s), revision ")

    assert run("subjects", "delete", "user:bob", *url) == 0
    assert store_for(published).read_all()[1].keys() == {"user:carol"}
    assert run("subjects", "show", "bob", *url) == 1
    assert "a subject is TYPE:ID" in capsys.readouterr().err


def test_concurrent_grants_to_one_subject_are_all_kept(redis_url: str) -> None:
    roles = [f"role-{i}" for i in range(16)]
    threads = [threading.Thread(target=store_for(redis_url).grant, args=("user:bob", r)) for r in roles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = store_for(redis_url)
    assert store.get("user:bob").roles == set(roles)
    assert store.rev() == len(roles)


# ---- the merge ----


def test_assigned_roles_join_and_assigned_properties_override_the_request() -> None:
    snapshot = AssignmentSnapshot()
    snapshot.replace_all(1, {"user:bob": Assignment(frozenset({"auditor"}), {"department": "finance"})})
    request = Request("user", "bob", "read", "report", "q3", subject_properties={"department": "sales",
                                                                                 "team": "x"},
                      roles=frozenset({"approver"}))
    merged = snapshot.apply(request)
    assert merged.roles == {"approver", "auditor"}
    assert dict(merged.subject_properties) == {"department": "finance", "team": "x"}
    other = Request("user", "carol", "read", "report", "q3")
    assert snapshot.apply(other) is other


def test_the_policy_directory_wins_over_assigned_properties(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p", {
        "main.policy": POLICY_V1,
        "people.subjects.json": '{"user:dora": {"properties": {"department": "sales"}}}',
    })
    policy = load_policy_dir(folder)
    snapshot = AssignmentSnapshot()
    finance = Assignment(frozenset(), {"department": "finance"})
    snapshot.replace_all(1, {"user:dora": finance, "user:erin": finance})
    for subject, allowed in (("dora", False), ("erin", True)):
        request = snapshot.apply(Request("user", subject, "read", "report", "q3"))
        assert decide(policy, request).allowed is allowed


def test_a_change_is_never_served_stale_from_the_cache(tmp_path: Path, published: str) -> None:
    with in_process_replica(tmp_path, published, cache={"size": "1000"}) as server, \
            PdpClient(f"127.0.0.1:{server.port}") as client:
        assert server.service.cache is not None and server.sync is not None
        follower = server.sync.assignment_follower
        assert follower is not None
        store = store_for(published)

        def applied() -> bool:
            return follower.snapshot.rev == store.rev()

        def approve() -> tuple[bool, bool]:
            reply = client.check("user:bob", "approve", "invoice:1", resource_properties=SMALL_INVOICE)
            return reply.allowed, reply.cached

        def report() -> tuple[bool, bool]:
            reply = client.check("user:bob", "read", "report:q3")
            return reply.allowed, reply.cached

        wait_until(applied, 10, "snapshot loaded")
        assert approve() == (False, False)
        assert approve() == (False, True)  # the DENY is cached
        assert report() == (False, False)
        assert report() == (False, True)

        store.grant("user:bob", "approver")
        wait_until(applied, 10, "grant applied")
        assert approve() == (True, False)  # never the cached DENY
        assert approve() == (True, True)

        store.set_property("user:bob", "department", "finance")
        wait_until(applied, 10, "property applied")
        assert report() == (True, False)

        store.revoke("user:bob", "approver")
        wait_until(applied, 10, "revoke applied")
        assert approve() == (False, True)  # the DENY cached before the grant is right again


# ---- replicas ----


def test_three_replicas_converge_on_a_grant_and_a_revoke(published: str) -> None:
    with replica(published) as a, replica(published) as b, replica(published) as c:
        clients = [PdpClient(f"127.0.0.1:{r.port}") for r in (a, b, c)]
        try:
            def all_answer(allowed: bool) -> None:
                for client in clients:
                    wait_until(lambda c=client: c.check(
                        "user:bob", "approve", "invoice:1", resource_properties=SMALL_INVOICE
                    ).allowed is allowed, 30, f"replica answering allowed={allowed}")

            for client in clients:
                wait_until(lambda c=client: c.policy_info().version, 30, "bundle loaded")
            all_answer(False)
            assert run("grant", "approver", "user:bob", "--redis-url", published) == 0
            all_answer(True)
            assert run("revoke", "approver", "user:bob", "--redis-url", published) == 0
            all_answer(False)
        finally:
            for client in clients:
                client.close()


def test_a_replica_that_missed_changes_catches_up(tmp_path: Path, published: str) -> None:
    with in_process_replica(tmp_path, published, redis={"resync_seconds": "3600"}) as server:
        assert server.sync is not None
        follower = server.sync.assignment_follower
        assert follower is not None
        wait_until(follower.subscription.connected.is_set, 10, "subscribed")
        client = redis.Redis.from_url(published)

        # Written without an announcement: only a reconnect can bring it.
        client.hset(SUBJECTS_KEY, "user:bob", '{"roles":["approver"],"properties":{}}')
        client.incr(REV_KEY)
        assert follower.snapshot.get("user", "bob") is None
        client.client_kill_filter(_type="pubsub")
        wait_until(lambda: follower.snapshot.get("user", "bob") is not None, 10, "caught up on reconnect")

        # An announcement that skips a revision: the replica re-reads everything.
        client.hset(SUBJECTS_KEY, "user:carol", '{"roles":["auditor"],"properties":{}}')
        client.incr(REV_KEY)
        rev = int(client.incr(REV_KEY))
        client.publish(CHANNEL, f'[{rev},"user:dan",""]')
        wait_until(lambda: follower.snapshot.get("user", "carol") is not None, 10, "gap re-read")
        assert follower.snapshot.rev == rev


def test_checks_are_answered_while_redis_is_paused_and_changes_flow_after(
    tmp_path: Path, published: str
) -> None:
    with in_process_replica(tmp_path, published, redis={"resync_seconds": "0.2"}) as server, \
            PdpClient(f"127.0.0.1:{server.port}", timeout=2) as client:
        assert server.sync is not None and server.sync.assignment_follower is not None
        follower = server.sync.assignment_follower
        store = store_for(published)
        store.grant("user:bob", "approver")
        wait_until(lambda: follower.snapshot.rev == store.rev(), 10, "grant applied")

        redis.Redis.from_url(published).client_pause(3000)  # every client's commands wait
        answers = [client.check("user:bob", "approve", "invoice:1", resource_properties=SMALL_INVOICE)
                   for _ in range(50)]
        assert all(a.allowed for a in answers)  # from the snapshot in memory

        store.revoke("user:bob", "approver")  # runs once the pause ends
        wait_until(lambda: not client.check(
            "user:bob", "approve", "invoice:1", resource_properties=SMALL_INVOICE).allowed,
            20, "revoke applied after the pause")


def test_a_replica_has_the_assignments_before_it_serves_its_first_policy(published: str) -> None:
    store_for(published).grant("user:bob", "approver")
    with replica(published) as server, PdpClient(f"127.0.0.1:{server.port}") as client:
        wait_until(lambda: client.policy_info().version, 30, "bundle loaded")
        assert client.check("user:bob", "approve", "invoice:1",
                            resource_properties=SMALL_INVOICE).allowed  # no wait for pub/sub


def test_publishing_a_version_without_an_assigned_role_warns(
    tmp_path: Path, published: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("grant", "auditor", "user:bob", "--redis-url", published) == 0
    renamed = POLICY_V1.replace("role auditor inherits approver", "role reader")
    without = policy_dir(tmp_path, "without", renamed)
    assert run("publish", str(without), "--redis-url", published) == 0
    err = capsys.readouterr().err
    assert "warning: role 'auditor' is assigned to 1 subject(s) (e.g. user:bob) but not defined" in err
    v1 = version_of(read_sources(tmp_path / "v1"))
    assert run("publish", "--rollback", v1, "--redis-url", published) == 0
    assert "warning" not in capsys.readouterr().err


def test_bad_records_and_names_are_refused_or_skipped(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("subjects", "set-property", "user:bob", "roles", '["admin"]', "--redis-url", redis_url) == 1
    assert "roles are not a property: use pdp grant" in capsys.readouterr().err
    client = redis.Redis.from_url(redis_url)
    client.hset(SUBJECTS_KEY, mapping={"user:bad": "[1, 2]", "nocolon": "{}", "user:torn": "{\"ro",
                                       "user:ok": '{"roles":["approver"]}'})
    assert store_for(redis_url).read_all()[1].keys() == {"user:ok"}
