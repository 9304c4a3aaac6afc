"""`pdp audit tail` on a file and on a Redis Stream, with filters and following."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from audit_support import alice_reads, audited_service, bob_reads, git_policy_dir, meta

from pdp.audit import AuditLog, AuditSettings
from pdp.cli import main
from pdp.service import DecisionService


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    return folder


def decide_some(service: DecisionService, count: int) -> None:
    for i in range(count):
        service.check(alice_reads() if i % 2 == 0 else bob_reads(), meta(request_id=f"r{i}"))


def tail(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["audit", "tail", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_tail_a_file_with_filters(policy_dir: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    log_file = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file)))
    decide_some(audited_service(policy_dir, audit), 30)
    audit.close()
    path = str(log_file)

    assert len(tail(capsys, path)) == 10
    everything = tail(capsys, path, "-n", "all")
    assert len(everything) == 30
    first = everything[0]
    assert " ALLOW user:alice read document:42  [viewer-read] viewers read documents  (grpc, " in first
    assert "request r0" in first and "caller spiffe://prod.example/ns/shop/sa/api" in first
    assert len(tail(capsys, path, "-n", "all", "--decision", "deny")) == 15
    assert all(" DENY  user:bob " in line
               for line in tail(capsys, path, "-n", "all", "--subject", "user:bob"))
    assert len(tail(capsys, path, "-n", "all", "--subject", "alice", "--decision", "allow")) == 15
    assert len(tail(capsys, path, "-n", "all", "--subject", "user:*")) == 30
    assert tail(capsys, path, "-n", "all", "--resource", "document:43") == []
    assert len(tail(capsys, path, "-n", "4", "--resource", "document:42")) == 4
    raw = tail(capsys, path, "-n", "2", "--json")
    assert [json.loads(line)["request_id"] for line in raw] == ["r28", "r29"]


def test_tail_a_redis_stream(policy_dir: Path, redis_url: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog(AuditSettings(redis_url=redis_url, redis_stream="audit:tail"))
    decide_some(audited_service(policy_dir, audit), 12)
    audit.close()
    lines = tail(capsys, "--redis", redis_url, "--stream", "audit:tail", "-n", "all",
                 "--decision", "DENY")
    assert len(lines) == 6 and all(" DENY  user:bob read document:42 " in x for x in lines)
    assert len(tail(capsys, "--redis", redis_url, "--stream", "audit:tail", "-n", "3")) == 3


def test_tail_needs_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "tail"]) == 2
    assert main(["audit", "tail", "/nonexistent/audit.jsonl"]) == 1
    assert "No such file" in capsys.readouterr().err


class Follower:
    """`pdp audit tail -f` in a subprocess, its output lines collected by a thread."""

    def __init__(self, *args: str) -> None:
        # -n all: the follower may start after the first records are written.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pdp", "audit", "tail", "-f", "-n", "all", *args],
            stdout=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def take(self, count: int) -> list[str]:
        return [self.lines.get(timeout=30) for _ in range(count)]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_follow_a_file_across_rotation(policy_dir: Path, tmp_path: Path) -> None:
    log_file = tmp_path / "audit.jsonl"
    log_file.touch()
    follower = Follower(str(log_file), "--decision", "deny", "--json")
    try:
        audit = AuditLog(AuditSettings(file=str(log_file), file_max_bytes=3000, file_backups=2,
                                       batch_size=1, flush_interval_s=0.01))
        service = audited_service(policy_dir, audit)
        ids, got = [], []
        for _ in range(20):  # a few records per file: rotations while following
            ids.append(service.check(bob_reads(), meta()).decision_id)
            service.check(alice_reads(), meta())
            got += [json.loads(line)["decision_id"] for line in follower.take(1)]
        audit.close()
    finally:
        follower.stop()
    assert got == ids
    assert (tmp_path / "audit.jsonl.2").exists()


def test_follow_a_redis_stream(policy_dir: Path, redis_url: str) -> None:
    follower = Follower("--redis", redis_url)
    try:
        audit = AuditLog(AuditSettings(redis_url=redis_url))
        service = audited_service(policy_dir, audit)
        decide_some(service, 5)
        audit.close()
        got = follower.take(5)
    finally:
        follower.stop()
    assert [" ALLOW " in line for line in got] == [True, False, True, False, True]
