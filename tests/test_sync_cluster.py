"""Bundles and role assignments on a real three-master Redis Cluster: every
operation stays on one slot (hash tags), and a replica follows both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import RedisCluster3, running_cluster
from sync_support import POLICY_V1, POLICY_V2, policy_dir, replica, served_version, wait_until

from pdp import redisio
from pdp.assignments import AssignmentStore
from pdp.bundles import BundleStore
from pdp.cli import main
from pdp.client import PdpClient
from pdp.loader import read_sources, version_of


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def test_publish_rollback_and_grant_through_a_cluster(tmp_path: Path, redis_cluster: RedisCluster3) -> None:
    url = redis_cluster.url
    v1, v2 = policy_dir(tmp_path, "v1", POLICY_V1), policy_dir(tmp_path, "v2", POLICY_V2)
    assert main(["publish", str(v1), "--redis-url", url]) == 0
    with replica(url) as server, PdpClient(f"127.0.0.1:{server.port}") as client:
        wait_until(lambda: served_version(client) == version_of(read_sources(v1)), 30, "v1 served")

        assert main(["publish", str(v2), "--redis-url", url]) == 0
        wait_until(lambda: served_version(client) == version_of(read_sources(v2)), 30, "v2 served")
        assert main(["publish", "--rollback", version_of(read_sources(v1)), "--redis-url", url]) == 0
        wait_until(lambda: served_version(client) == version_of(read_sources(v1)), 30, "rolled back")

        def approves() -> bool:
            return bool(client.check("user:bob", "approve", "invoice:1",
                                     resource_properties={"amount": 10}).allowed)

        assert not approves()
        assert main(["grant", "approver", "user:bob", "--redis-url", url]) == 0
        wait_until(approves, 30, "grant seen")
        assert main(["revoke", "approver", "user:bob", "--redis-url", url]) == 0
        wait_until(lambda: not approves(), 30, "revoke seen")

    client_ = redisio.connect(url, timeout_s=5)
    assert [i.version for i in BundleStore(client_).list()] == [
        version_of(read_sources(v1)), version_of(read_sources(v2))]
    assert AssignmentStore(client_).read_all()[0] == 2
