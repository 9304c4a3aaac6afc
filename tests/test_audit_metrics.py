"""Metrics scraped from the real /metrics endpoint."""

from __future__ import annotations

import multiprocessing
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_support import (
    GatedSink,
    alice_reads,
    audited_service,
    bob_reads,
    git_policy_dir,
    hammer,
    meta,
    wait_until,
)
from conftest import RedisServer
from prometheus_client.parser import text_string_to_metric_families

from pdp import metrics
from pdp.audit import AuditLog, AuditSettings
from pdp.identity import IdentityConfig, IdentityResolver
from pdp.model import Decision


@pytest.fixture(scope="module")
def server() -> Iterator[metrics.MetricsServer]:
    running = metrics.start_metrics_server("127.0.0.1", 0)
    yield running
    running.close()


def scrape(server: metrics.MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_helpers_show_up_on_the_endpoint(server: metrics.MetricsServer) -> None:
    before = scrape(server)
    metrics.observe_decision("allow", "grpc", 0.0002)
    metrics.observe_decision("deny", "envoy", 0.002)
    metrics.cache_lookup("l1", hit=True)
    metrics.cache_lookup("l2", hit=False)
    metrics.redis_fault("cache")
    metrics.reload(success=True)
    metrics.reload(success=False)
    metrics.jwt_failure("expired")
    metrics.policy_loaded("abc123", {"kind": "git", "commit": "deadbeef"})
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("pdp_decisions_total", effect="allow", frontend="grpc") == 1
    assert delta("pdp_decisions_total", effect="deny", frontend="envoy") == 1
    assert delta("pdp_decision_latency_seconds_count", frontend="grpc") == 1
    assert delta("pdp_decision_latency_seconds_bucket", frontend="envoy", le="0.0025") == 1
    assert delta("pdp_decision_latency_seconds_bucket", frontend="envoy", le="0.001") == 0
    assert delta("pdp_cache_lookups_total", level="l1", result="hit") == 1
    assert delta("pdp_cache_lookups_total", level="l2", result="miss") == 1
    assert delta("pdp_redis_faults_total", component="cache") == 1
    assert delta("pdp_policy_reloads_total", result="success") == 1
    assert delta("pdp_policy_reloads_total", result="failure") == 1
    assert delta("pdp_jwt_failures_total", reason="expired") == 1
    assert value(after, "pdp_policy_info", version="abc123", kind="git", commit="deadbeef") == 1


def test_audit_queue_depth_drops_and_sink_health(server: metrics.MetricsServer,
                                                 tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    sink = GatedSink()
    audit = AuditLog(AuditSettings(queue_size=20, batch_size=5, sample_allow=0), sinks=[sink])
    service = audited_service(folder, audit)
    before = scrape(server)
    service.check(bob_reads(), meta())
    assert sink.entered.wait(10)  # the writer now holds that record: the queue stays put
    assert hammer(service, threads=2, per_thread=50) == []  # half ALLOW, all sampled out
    during = scrape(server)
    depth = audit.status()["queue_depth"]
    assert value(during, "pdp_audit_queue_depth") == depth
    assert 20 <= depth <= 22  # two threads may each overshoot the bound by one
    dropped = value(during, "pdp_audit_dropped_total", reason="queue_full") - value(
        before, "pdp_audit_dropped_total", reason="queue_full")
    assert dropped == audit.status()["dropped"] == 50 - depth
    sampled = value(during, "pdp_audit_sampled_out_total", decision="ALLOW") - value(
        before, "pdp_audit_sampled_out_total", decision="ALLOW")
    assert sampled == 50
    assert value(during, "pdp_audit_sink_up", sink="gated") == 1
    sink.gate.set()
    audit.close()
    after = scrape(server)
    written = value(after, "pdp_audit_records_total", sink="gated", result="written") - value(
        before, "pdp_audit_records_total", sink="gated", result="written")
    assert written == len(sink.lines) == 1 + depth
    assert value(after, "pdp_audit_queue_depth") == 0


def test_decision_metrics_count_then_hand_on_to_the_audit_log(
    server: metrics.MetricsServer, tmp_path: Path
) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    log_file = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file)))
    service = audited_service(folder, audit)
    service.audit = metrics.DecisionMetrics(then=audit)
    before = scrape(server)
    service.check(alice_reads(), meta())
    service.check(bob_reads(), meta())
    service.check(bob_reads(), meta())
    after = scrape(server)
    audit.close()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("pdp_decisions_total", effect="allow", frontend="grpc") == 1
    assert delta("pdp_decisions_total", effect="deny", frontend="grpc") == 2
    assert delta("pdp_decision_latency_seconds_count", frontend="grpc") == 3
    assert len(log_file.read_text().splitlines()) == 3


def test_rejected_tokens_are_counted_by_reason(server: metrics.MetricsServer) -> None:
    resolver = IdentityResolver(IdentityConfig())
    before = scrape(server)
    answer = resolver.resolve(bob_reads(), "not-a-token")
    after = scrape(server)
    assert isinstance(answer, Decision) and not answer.allowed
    reason = answer.reasons[0].rule.removeprefix("pdp.identity.")
    assert value(after, "pdp_jwt_failures_total", reason=reason) - value(
        before, "pdp_jwt_failures_total", reason=reason) == 1


def _worker_metrics(version: str) -> None:
    assert metrics.MULTIPROCESS  # the supervisor's directory was in the environment at spawn
    for _ in range(3):
        metrics.observe_decision("allow", "grpc", 0.0003)
    metrics.audit_queue_depth_now(5)
    metrics.policy_loaded("old", {"kind": "dir"})
    metrics.policy_loaded(version, {"kind": "git", "commit": "c0ffee"})


def test_workers_metrics_are_served_summed_by_the_supervisor() -> None:
    ctx = multiprocessing.get_context("spawn")
    with metrics.shared_metrics("127.0.0.1", 0) as shared:
        workers = [ctx.Process(target=_worker_metrics, args=("v2",)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0
        samples = scrape(shared)
        for worker in workers:  # as the supervisor does when a worker dies
            metrics.worker_exited(worker.pid)
        after_exit = scrape(shared)
    assert value(samples, "pdp_audit_queue_depth") == 10  # live gauges: summed over workers
    assert ("pdp_audit_queue_depth", ()) not in after_exit
    assert value(after_exit, "pdp_decisions_total", effect="allow", frontend="grpc") == 6
    assert value(samples, "pdp_decisions_total", effect="allow", frontend="grpc") == 6
    assert value(samples, "pdp_decision_latency_seconds_count", frontend="grpc") == 6
    policy = {"kind": "git", "path": "", "commit": "c0ffee", "dirty": "", "published_by": "",
              "published_at": ""}
    assert value(samples, "pdp_policy_info", version="v2", **policy) == 1
    assert value(samples, "pdp_policy_info", version="old", **{**policy, "kind": "dir",
                                                               "commit": ""}) == 0
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_the_writer_process_counts_reach_this_process_metrics(
    server: metrics.MetricsServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    log_file = tmp_path / "audit.jsonl"
    file_sink = f"file:{log_file}"
    redis_server.stop()  # the stream sink fails from the start
    audit = AuditLog(AuditSettings(file=str(log_file), redis_url=redis_server.url))
    assert audit.status()["writer"] == "process"
    service = audited_service(folder, audit)
    before = scrape(server)
    for _ in range(30):
        service.check(bob_reads(), meta())
    wait_until(lambda: audit.status()["sinks"][file_sink]["written"] == 30)  # before close
    during = scrape(server)
    audit.close()
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(during, "pdp_audit_records_total", sink=file_sink, result="written") == 30
    assert value(during, "pdp_audit_sink_up", sink=file_sink) == 1
    assert value(during, "pdp_audit_sink_up", sink="redis") == 0
    assert delta("pdp_audit_records_total", sink=file_sink, result="written") == 30
    assert delta("pdp_audit_records_total", sink="redis", result="failed") == 30
    status = audit.status()["sinks"]["redis"]
    assert status["lost"] == 30 and "ConnectionError" in status["last_error"]
    assert delta("pdp_redis_faults_total", component="audit") == status["failures"] >= 1
    assert not audit.healthy
