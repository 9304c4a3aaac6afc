"""Helpers for the audit tests: a small policy in a real git checkout, a decision
service auditing to real sinks, and readers for what the sinks wrote."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pdp.audit import AuditLog, directory_source
from pdp.loader import load_policy_dir
from pdp.model import Request
from pdp.service import CallMeta, DecisionService, Outcome, PolicyHolder

POLICY = """\
role viewer {
    allow read on document:** reason "viewers read documents" as viewer-read
}
grant viewer to user:alice
"""
# A real-looking JWT (header.payload.signature); it must never reach a sink.
TOKEN = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJhbGljZSIsImVtYWlsIjoiYWxpY2VAZXhhbXBsZS5jb20ifQ"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)
EMAIL = "alice@example.com"
COOKIE = "session=s3cr3t-cookie-value"
CALLER = "spiffe://prod.example/ns/shop/sa/api"


def git_policy_dir(folder: Path) -> str:
    """Write the policy into a fresh git repository; returns its HEAD commit."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.policy").write_text(POLICY)
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "a.policy"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "policy"], check=True)
    done = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def policy_folder(tmp_path: Path) -> Path:
    """`tmp_path/policies`, the policy committed in a fresh git repository."""
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    return folder


def audited_service(folder: Path, audit: AuditLog) -> DecisionService:
    policy = load_policy_dir(folder)
    audit.policy_loaded(policy.version, directory_source(folder))
    return DecisionService(PolicyHolder(policy), audit=audit)


def alice_reads(**props: Any) -> Request:
    return Request(
        "user", "alice", "read", "document", "42",
        subject_properties={"email": EMAIL, "department": "finance", "token": TOKEN},
        resource_properties={"owner": "alice", "labels": ["a", "b"]},
        action_properties={"reason": "ticket 7"},
        context={
            "headers": {"Authorization": f"Bearer {TOKEN}", "cookie": COOKIE, "x-trace": "trace-7f3a9c"},
            "ip": "10.0.0.1",
            "note": f"forwarded {TOKEN}",
            **props,
        },
    )


def bob_reads() -> Request:
    return Request("user", "bob", "read", "document", "42")


def meta(request_id: str | None = "req-1") -> CallMeta:
    return CallMeta("grpc", caller=CALLER, request_id=request_id)


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def parse_time(text: str) -> datetime:
    assert text.endswith("Z") and len(text) == len("2026-11-25T12:00:00.123456Z"), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def expected_record(outcome: Outcome, version: str, folder: Path, commit: str,
                    request_id: str | None = "req-1") -> dict[str, Any]:
    """The whole record for alice reading document:42 or bob being denied."""
    allowed = outcome.decision.allowed
    return {
        "decision_id": outcome.decision_id,
        "request_id": request_id,
        "frontend": "grpc",
        "caller": CALLER,
        "policy": {
            "version": version,
            "source": {"kind": "git", "path": str(folder.resolve()), "commit": commit,
                       "dirty": False},
        },
        "subject": {"type": "user", "id": "alice" if allowed else "bob",
                    "roles": ["viewer"] if allowed else []},
        "action": {"name": "read"},
        "resource": {"type": "document", "id": "42"},
        "decision": "ALLOW" if allowed else "DENY",
        "reasons": [r.to_dict() for r in outcome.decision.reasons],
        "cached": False,
        "latency_us": round(outcome.latency_s * 1e6, 1),
    }


class GatedSink:
    """A sink that holds every write until released: makes a full queue certain."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()  # the writer is holding a batch
        self.lines: list[bytes] = []

    def write(self, lines: Sequence[bytes]) -> None:
        self.entered.set()
        self.gate.wait(30)
        self.lines.extend(lines)

    def close(self) -> None:
        pass


def hammer(service: DecisionService, threads: int, per_thread: int) -> list[BaseException]:
    """Run checks from several threads; returns every exception a check raised."""
    errors: list[BaseException] = []

    def run() -> None:
        for i in range(per_thread):
            try:
                outcome = service.check(alice_reads() if i % 2 else bob_reads(), meta())
                assert outcome.decision.allowed == bool(i % 2)
            except BaseException as exc:
                errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors
