"""The audit queue under pressure, draining on shutdown, and file rotation."""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from audit_support import GatedSink, audited_service, bob_reads, git_policy_dir, hammer, meta

from pdp.audit import AuditLog, AuditSettings
from pdp.audit.sinks import RotatingFileSink, StdoutSink


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    return folder


def test_full_queue_drops_and_counts_by_default(policy_dir: Path) -> None:
    sink = GatedSink()
    audit = AuditLog(AuditSettings(queue_size=50, batch_size=10), sinks=[sink])
    service = audited_service(policy_dir, audit)

    assert hammer(service, threads=4, per_thread=500) == []  # the writer is stuck: no check fails
    status = audit.status()
    assert status["when_full"] == "drop"
    assert status["dropped"] >= 2000 - 50 - 10 - 4  # queue + the batch in hand + racing threads
    assert status["queue_depth"] <= 50 + 4

    sink.gate.set()
    audit.close()
    assert len(sink.lines) + audit.status()["dropped"] == 2000  # every decision accounted for


def test_full_queue_blocks_briefly_then_drops(policy_dir: Path) -> None:
    sink = GatedSink()
    audit = AuditLog(AuditSettings(queue_size=20, batch_size=5, when_full="block",
                                   block_s=0.001), sinks=[sink])
    service = audited_service(policy_dir, audit)
    assert hammer(service, threads=2, per_thread=100) == []
    assert audit.status()["dropped"] > 0
    sink.gate.set()
    audit.close()
    assert len(sink.lines) + audit.status()["dropped"] == 200


def test_block_waits_for_room_when_the_writer_keeps_up(policy_dir: Path) -> None:
    sink = GatedSink()
    sink.gate.set()
    audit = AuditLog(AuditSettings(queue_size=5, batch_size=5, flush_interval_s=0.001,
                                   when_full="block", block_s=5.0), sinks=[sink])
    service = audited_service(policy_dir, audit)
    assert hammer(service, threads=2, per_thread=200) == []
    audit.close()
    assert audit.status()["dropped"] == 0
    assert len(sink.lines) == 400


def test_a_full_batch_is_written_without_waiting_for_the_interval(policy_dir: Path) -> None:
    sink = GatedSink()
    audit = AuditLog(AuditSettings(batch_size=10, flush_interval_s=3600), sinks=[sink])
    service = audited_service(policy_dir, audit)
    for _ in range(9):
        service.check(bob_reads(), meta())
    assert not sink.entered.wait(0.5)  # less than a batch: it waits for the interval
    service.check(bob_reads(), meta())
    assert sink.entered.wait(10)  # the tenth record makes a batch: written now
    sink.gate.set()
    audit.close()
    assert len(sink.lines) == 10


def test_close_drains_everything_queued(policy_dir: Path) -> None:
    sink = GatedSink()
    audit = AuditLog(AuditSettings(queue_size=10_000, batch_size=100), sinks=[sink])
    service = audited_service(policy_dir, audit)
    ids = [service.check(bob_reads(), meta()).decision_id for _ in range(3000)]
    assert audit.status()["queue_depth"] > 0  # still waiting when shutdown starts
    threading.Timer(0.2, sink.gate.set).start()
    audit.close()
    assert [json.loads(line)["decision_id"] for line in sink.lines] == ids
    assert audit.status()["queue_depth"] == 0
    service.check(bob_reads(), meta())  # after close: dropped and counted, never an error
    assert audit.status()["dropped"] == 1


class BrokenSink:
    name = "broken"

    def write(self, lines: Sequence[bytes]) -> None:
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        raise OSError(28, "No space left on device")


def test_failing_sink_is_contained_and_reported(policy_dir: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    audit = AuditLog(AuditSettings(), sinks=[RotatingFileSink(good, 10**8, 1), BrokenSink()])
    service = audited_service(policy_dir, audit)
    assert hammer(service, threads=2, per_thread=100) == []
    audit.close()
    status = audit.status()
    assert status["healthy"] is False
    assert status["sinks"]["broken"]["lost"] == 200
    assert "No space left" in status["sinks"]["broken"]["last_error"]
    assert len(good.read_text().splitlines()) == 200


def test_rotation_keeps_a_bounded_number_of_files(policy_dir: Path, tmp_path: Path) -> None:
    log_file = tmp_path / "audit" / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file), file_max_bytes=20_000, file_backups=3,
                                   batch_size=64))
    service = audited_service(policy_dir, audit)
    for _ in range(1000):  # about 600 bytes each: far more than four files hold
        service.check(bob_reads(), meta())
    audit.close()

    files = sorted(p.name for p in log_file.parent.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3",
                     "audit.jsonl.lock"]
    files.remove("audit.jsonl.lock")
    kept = []
    for name in reversed(files[1:]):  # oldest first
        path = log_file.parent / name
        assert path.stat().st_size <= 20_000
        kept += path.read_text().splitlines()
    kept += log_file.read_text().splitlines()
    records = [json.loads(line) for line in kept]  # whole lines only, never split
    assert 60 < len(records) < 1000
    times = [r["time"] for r in records]
    assert times == sorted(times)  # the newest records are the ones kept


def test_rotation_with_no_backups_starts_over(tmp_path: Path) -> None:
    sink = RotatingFileSink(tmp_path / "a.jsonl", max_bytes=100, backups=0)
    for i in range(10):
        sink.write([json.dumps({"n": i, "pad": "x" * 30}).encode()])
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.jsonl.lock"]
    assert (tmp_path / "a.jsonl").stat().st_size <= 100


def test_stdout_sink(policy_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog(AuditSettings(stdout=True))  # the writer process inherits stdout
    audited_service(policy_dir, audit).check(bob_reads(), meta())
    audit.close()
    (line,) = capfd.readouterr().out.splitlines()
    assert json.loads(line)["subject"] == {"type": "user", "id": "bob", "roles": []}
    assert list(audit.status()["sinks"]) == [StdoutSink.name]


def _write_from_process(path: str, writer: int) -> None:
    sink = RotatingFileSink(path, max_bytes=50_000, backups=20)
    for start in range(0, 2000, 50):
        sink.write([json.dumps({"writer": writer, "n": n, "pad": "x" * 60}).encode()
                    for n in range(start, start + 50)])
    sink.close()


def test_worker_processes_share_one_rotating_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_from_process, args=(str(path), w)) for w in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    lines = [line for p in tmp_path.glob("audit.jsonl*") if not p.name.endswith(".lock")
             for line in p.read_text().splitlines()]
    records = [json.loads(line) for line in lines]  # no torn or interleaved line
    assert sorted((r["writer"], r["n"]) for r in records) == [
        (w, n) for w in range(3) for n in range(2000)
    ]
    assert all(p.stat().st_size <= 50_000 for p in tmp_path.glob("audit.jsonl*"))
