"""Audit records in a real Redis Stream: read back, bounded, and a Redis outage under load."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from audit_support import (
    COOKIE,
    EMAIL,
    TOKEN,
    alice_reads,
    audited_service,
    bob_reads,
    expected_record,
    git_policy_dir,
    hammer,
    meta,
    parse_time,
    wait_until,
)
from conftest import RedisServer

from pdp.audit import AuditLog, AuditSettings, sinks
from pdp.loader import load_policy_dir


def stream_records(url: str, stream: str = "pdp:audit") -> list[dict[str, Any]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [json.loads(fields["record"]) for _, fields in client.xrange(stream)]
    finally:
        client.close()


def test_every_field_read_back_from_the_stream(tmp_path: Path, redis_url: str) -> None:
    folder = tmp_path / "policies"
    commit = git_policy_dir(folder)
    audit = AuditLog(AuditSettings(redis_url=redis_url, attributes=True,
                                   sensitive=("subject.email",)))
    service = audited_service(folder, audit)
    before = datetime.now(UTC)
    allowed = service.check(alice_reads(), meta())
    denied = service.check(bob_reads(), meta())
    audit.close()

    raw = redis.Redis.from_url(redis_url).xrange("pdp:audit")
    assert [set(fields) for _, fields in raw] == [{b"record"}, {b"record"}]
    for secret in (TOKEN, EMAIL, COOKIE):
        assert all(secret.encode() not in fields[b"record"] for _, fields in raw)

    first, second = stream_records(redis_url)
    version = load_policy_dir(folder).version
    for record, outcome in ((first, allowed), (second, denied)):
        assert before - timedelta(seconds=1) <= parse_time(record.pop("time"))
        for part in ("subject", "action", "resource"):
            record[part].pop("attributes")
        record.pop("context")
        assert record == expected_record(outcome, version, folder, commit)


def test_stream_is_trimmed_approximately(tmp_path: Path, redis_url: str) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    audit = AuditLog(AuditSettings(redis_url=redis_url, redis_stream="audit:small",
                                   redis_maxlen=100, batch_size=50))
    service = audited_service(folder, audit)
    for _ in range(2000):
        service.check(bob_reads(), meta())
    audit.close()
    length = redis.Redis.from_url(redis_url).xlen("audit:small")
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default): bounded, not exact.
    assert 100 <= length <= 300
    assert audit.status()["sinks"]["redis"]["written"] == 2000


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def audit_warnings() -> Iterator[list[str]]:
    """Warnings of the pdp.audit logger, whatever the server's log setup did to propagation."""
    handler = Collect()
    logger = logging.getLogger("pdp.audit")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_redis_killed_under_load_fails_no_check(
    tmp_path: Path, redis_server: RedisServer, audit_warnings: list[str]
) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    log_file = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(redis_url=redis_server.url, file=str(log_file)))
    service = audited_service(folder, audit)
    health: list[bool] = []
    audit.on_health = health.append

    assert hammer(service, threads=4, per_thread=250) == []
    wait_until(lambda: audit.status()["sinks"]["redis"]["written"] == 1000)
    assert audit.healthy

    redis_server.stop()
    assert hammer(service, threads=4, per_thread=250) == []  # zero failed checks
    wait_until(lambda: not audit.healthy)
    wait_until(lambda: audit.status()["queue_depth"] == 0)
    status = audit.status()["sinks"]
    assert status["redis"]["healthy"] is False and status["redis"]["lost"] > 0
    assert "ConnectionError" in status["redis"]["last_error"]
    assert status[f"file:{log_file}"]["healthy"] is True  # the other sink carries on

    redis_server.start()
    # A failing sink is retried about once a second; keep deciding until it recovers.
    wait_until(lambda: hammer(service, threads=1, per_thread=20) == [] and audit.healthy)
    audit.close()

    assert len([m for m in audit_warnings if "failing" in m]) == 1  # once per state change
    assert len([m for m in audit_warnings if "recovered" in m]) == 1
    assert health == [False, True]
    assert audit.status()["sinks"]["redis"]["written"] > 1000
    assert len(log_file.read_text().splitlines()) >= 2000  # every decision reached the file


def test_pipeline_path_without_hiredis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "_pack_command", None)  # as on a cluster client
    sink = sinks.RedisStreamSink(redis_url, "audit:pipe", maxlen=1000)
    sink.write([b'{"n":1}', b'{"n":2}'])
    sink.close()
    entries = redis.Redis.from_url(redis_url).xrange("audit:pipe")
    assert [fields for _, fields in entries] == [{b"record": b'{"n":1}'}, {b"record": b'{"n":2}'}]
