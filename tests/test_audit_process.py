"""The audit writer process: records built and written there, a child killed under load,
and close draining everything into it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import redis
from audit_support import (
    alice_reads,
    audited_service,
    bob_reads,
    meta,
    policy_folder,
    read_records,
    wait_until,
)

from pdp import metrics
from pdp.audit import AuditLog, AuditSettings
from pdp.service import DecisionService


def dropped(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("pdp_audit_dropped_total", {"reason": reason}) or 0.0


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Load:
    """Checks from a background thread until stopped: their ids, and any exception."""

    def __init__(self, service: DecisionService) -> None:
        self.ids: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(service,))

    def _run(self, service: DecisionService) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                request = alice_reads() if i % 2 else bob_reads()
                self.ids.append(service.check(request, meta()).decision_id)
            except BaseException as exc:
                self.errors.append(exc)
            i += 1
            if i % 20 == 0:
                time.sleep(0.001)  # a steady load the writer keeps up with, not a flood

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_the_writer_is_a_child_process_that_writes_file_and_stream(
    tmp_path: Path, redis_url: str
) -> None:
    policy_dir = policy_folder(tmp_path)
    log_file = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file), redis_url=redis_url))
    status = audit.status()
    assert status["writer"] == "process" and status["writer_pid"] not in (None, os.getpid())
    service = audited_service(policy_dir, audit)
    ids = [service.check(bob_reads(), meta()).decision_id for _ in range(20)]
    audit.close()
    assert not is_running(status["writer_pid"])
    assert [r["decision_id"] for r in read_records(log_file)] == ids
    stream = redis.Redis.from_url(redis_url).xrange("pdp:audit")
    assert [json.loads(fields[b"record"])["decision_id"] for _, fields in stream] == ids
    sinks = audit.status()["sinks"]
    assert sinks[f"file:{log_file}"]["written"] == sinks["redis"]["written"] == 20


def test_close_drains_everything_into_the_child(tmp_path: Path) -> None:
    policy_dir = policy_folder(tmp_path)
    log_file = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file), batch_size=100, flush_interval_s=30))
    service = audited_service(policy_dir, audit)
    ids = [service.check(alice_reads(), meta()).decision_id for _ in range(3000)]
    assert audit.status()["queue_depth"] > 0  # the writer thread has not woken yet
    audit.close()
    assert [r["decision_id"] for r in read_records(log_file)] == ids
    status = audit.status()
    assert status["dropped"] == 0 and status["queue_depth"] == 0 and status["in_writer"] == 0
    assert status["sinks"][f"file:{log_file}"]["written"] == 3000


def test_child_killed_under_load(tmp_path: Path) -> None:
    policy_dir = policy_folder(tmp_path)
    log_file = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file)))
    health: list[bool] = []
    audit.on_health = health.append
    service = audited_service(policy_dir, audit)
    died_before, full_before = dropped("writer_died"), dropped("queue_full")
    with Load(service) as load:
        wait_until(lambda: log_file.exists() and len(log_file.read_text()) > 10_000)
        first = audit.status()["writer_pid"]
        os.kill(first, signal.SIGSTOP)  # it stops reading: what is sent now is never handled
        wait_until(lambda: audit.status()["in_writer"] > 0)
        in_writer = audit.status()["in_writer"]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: False in health)  # pdp.audit NOT_SERVING
        wait_until(lambda: audit.status()["writer_pid"] != first and audit.healthy)
        assert health == [False, True]
        written = len(log_file.read_text().splitlines())
        wait_until(lambda: len(log_file.read_text().splitlines()) > written + 100)
    audit.close()

    assert load.errors == []  # no Check failed
    status = audit.status()
    died = dropped("writer_died") - died_before
    assert died >= in_writer > 0
    assert status["dropped"] == died + dropped("queue_full") - full_before
    records = read_records(log_file)  # whole lines only
    ids = [r["decision_id"] for r in records]
    assert len(set(ids)) == len(ids) and set(ids) <= set(load.ids)
    # A batch the child wrote just before its last report could count as dropped too.
    assert len(ids) + died >= len(load.ids)
    assert status["sinks"][f"file:{log_file}"]["healthy"] is True
