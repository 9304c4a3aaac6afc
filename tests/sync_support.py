"""Replicas following Redis for the bundle and assignment tests: policy sets,
`pdp serve --policy-source redis` subprocesses, and an in-process replica."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from grpc_support import PdpProcess, make_config, write_policies

from pdp.client import PdpClient
from pdp.server import Server, build_server

POLICY_V1 = """\
role approver {
    allow approve on invoice:** when resource.amount <= 1000
        reason "approvers approve up to 1000" as approve-small
}
role auditor inherits approver {
    allow read on audit-log:** reason "auditors read the audit log" as audit-read
}
allow read on report:** when subject.department == "finance"
    reason "finance reads reports" as finance-reports
grant approver to user:anna

test "anna approves small invoices" {
    expect allow user:anna approve invoice:1 given resource.amount = 10
    expect deny  user:bob approve invoice:1 given resource.amount = 10
}
"""

# V1 plus one rule: a different version, same roles.
POLICY_V2 = POLICY_V1 + """
allow ping on health:** reason "anyone may ping" as ping
"""

FAILING_TEST = """
test "this expectation is wrong" {
    expect allow user:bob approve invoice:1 given resource.amount = 10
}
"""


def policy_dir(root: Path, name: str, text: str) -> Path:
    return write_policies(root / name, {"main.policy": text})


def wait_until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `check` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.02)


def replica(redis_url: str, *extra: str) -> PdpProcess:
    return PdpProcess([
        "--policy-source", "redis", "--redis-url", redis_url, "--listen", "127.0.0.1:0",
        "--redis-resync-seconds", "1", *extra,
    ])


def served_version(client: PdpClient) -> str:
    return str(client.policy_info().version)


@contextlib.contextmanager
def in_process_replica(tmp_path: Path, redis_url: str, **sections: dict[str, Any]) -> Iterator[Server]:
    """The real server in this process, following Redis (bundles and assignments)."""
    sections.setdefault("policy", {})
    sections["policy"] = {"source": "redis", **sections["policy"]}
    sections["redis"] = {"url": redis_url, "resync_seconds": "1", **sections.get("redis", {})}
    server = build_server(make_config(tmp_path / "unused", **sections))
    assert server.sync is not None
    server.grpc_server.start()
    server.sync.start(server.reloader)  # as `pdp serve` does: before the first load
    server.reloader.reload("test")
    try:
        yield server
    finally:
        server.sync.stop()
        server.stop(1.0)
