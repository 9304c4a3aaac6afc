"""Audit and metrics wired into the real gRPC server: records from Check and BatchCheck,
admin info and health following the sinks, /metrics, and pdp serve's options."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from audit_support import EMAIL, TOKEN, read_records, wait_until
from conftest import RedisServer, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_support import PdpProcess, make_config, request, running_server, stub, write_policies

from pdp.client import make_request
from pdp.identity import IdentityConfig, IdentityResolver
from pdp.v1 import admin_pb2, admin_pb2_grpc, decision_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def committed_policies(folder: Path) -> str:
    write_policies(folder)
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "policies"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def audit_health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="pdp.audit"))
        return int(reply.status)


def policy_info(port: int) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return admin_pb2_grpc.AdminServiceStub(channel).PolicyInfo(
            admin_pb2.PolicyInfoRequest())


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_checks_are_audited_and_counted(tmp_path: Path, redis_server: RedisServer) -> None:
    commit = committed_policies(tmp_path / "p")
    log_file = tmp_path / "audit.jsonl"
    config = make_config(
        tmp_path / "p",
        audit={"file": log_file, "redis_url": redis_server.url, "attributes": "true",
               "sensitive": "subject.email"},
        metrics={"listen": "127.0.0.1:0"},
    )
    identity = IdentityResolver(IdentityConfig())  # no issuer: every token is refused
    with running_server(config, identity=identity) as server:
        observed = server.observability
        assert observed is not None and observed.metrics_server is not None
        assert observed.audit is not None and observed.audit.status()["writer"] == "process"
        before = scrape(observed.metrics_server.port)
        channel, decisions = stub(server.port)
        allowed = decisions.Check(
            request("user:alice", "read", "document:a", subject_properties={"email": EMAIL}),
            metadata=[("x-request-id", "req-42")])
        batch = decisions.BatchCheck(decision_pb2.BatchCheckRequest(requests=[
            request("user:bob", "delete", "document:locked/1"),
            make_request("user:eve", "read", "document:a", token=TOKEN),
        ]))
        refused = decisions.Check(make_request("user:eve", "read", "document:a", token=TOKEN))
        channel.close()
        assert audit_health(server.port) == SERVING
        info = policy_info(server.port)
        assert info.audit.enabled and info.audit.healthy
        assert {s.name for s in info.audit.sinks} == {f"file:{log_file}", "redis"}
        after = scrape(observed.metrics_server.port)
    ids = [allowed.decision_id, *(r.decision_id for r in batch.responses), refused.decision_id]

    records = read_records(log_file)  # the server stopped: the queue was drained
    assert [r["decision_id"] for r in records] == ids
    first = records[0]
    assert first["frontend"] == "grpc" and first["request_id"] == "req-42"
    assert first["decision"] == "ALLOW" and first["subject"]["id"] == "alice"
    assert first["policy"]["source"]["commit"] == commit
    assert "email" not in first["subject"]["attributes"]
    assert [r["decision"] for r in records[1:]] == ["DENY", "DENY", "DENY"]
    assert records[1]["reasons"][0]["rule"] == "locked"
    for refusal in (records[2], records[3]):
        assert refusal["reasons"][0]["rule"].startswith("pdp.identity.")
    stream = redis.Redis.from_url(redis_server.url).xrange("pdp:audit")
    assert [json.loads(f[b"record"])["decision_id"] for _, f in stream] == ids
    everything = log_file.read_text() + repr(stream)
    assert TOKEN not in everything and EMAIL not in everything

    decisions_total = 'pdp_decisions_total{effect="%s",frontend="grpc"}'
    assert sample(after, decisions_total % "allow") - sample(before, decisions_total % "allow") == 1
    assert sample(after, decisions_total % "deny") - sample(before, decisions_total % "deny") == 3
    assert sample(after, 'pdp_policy_reloads_total{result="success"}') >= 1
    assert f'commit="{commit}"' in after and "pdp_policy_info{" in after


def sample(text: str, series: str) -> float:
    """The value of one series in a scrape (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_health_and_admin_info_follow_a_failing_sink(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = make_config(write_policies(tmp_path / "p"), audit={"redis_url": redis_server.url})
    with running_server(config) as server:
        channel, decisions = stub(server.port)
        assert decisions.Check(request()).allowed
        redis_server.stop()
        wait_until(lambda: decisions.Check(request()).allowed
                   and audit_health(server.port) == NOT_SERVING)
        sink = policy_info(server.port).audit.sinks[0]
        assert not sink.healthy and sink.lost > 0 and "Connection" in sink.last_error
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING  # still deciding

        redis_server.start()
        wait_until(lambda: decisions.Check(request()).allowed
                   and audit_health(server.port) == SERVING)
        assert policy_info(server.port).audit.healthy
        channel.close()


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_pdp_serve_options_and_drain_on_sigterm(tmp_path: Path, writer: str) -> None:
    folder = write_policies(tmp_path / "p")
    log_file = tmp_path / "audit.jsonl"
    metrics_port = free_port()
    with PdpProcess(["--policies", str(folder), "--listen", "127.0.0.1:0",
                     "--audit-file", str(log_file), "--audit-flush-interval-s", "5",
                     "--audit-writer", writer,
                     "--metrics", f"127.0.0.1:{metrics_port}"]) as pdp:
        port = pdp.port
        pdp.msg("policy loaded")
        channel, decisions = stub(port)
        ids = [decisions.Check(request()).decision_id for _ in range(50)]
        channel.close()
        series = 'pdp_decisions_total{effect="allow",frontend="grpc"}'
        assert sample(scrape(metrics_port), series) == 50  # a process of its own
        assert pdp.stop(signal.SIGTERM) == 0  # before the writer's next tick: close drains
    assert [r["decision_id"] for r in read_records(log_file)] == ids


def test_pdp_serve_refuses_unusable_audit_settings(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    for flags, message in (
        (["--audit-when-full", "wait"], "audit.when_full"),
        (["--audit-writer", "fork"], "audit.writer"),
        (["--audit-sensitive", "email"], "audit.sensitive"),
        (["--metrics", "9464"], "metrics.listen"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "pdp", "serve", "--policies", str(folder), *flags],
            capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2 and message in done.stderr, done.stderr



def test_workers_share_the_audit_file_and_the_supervisor_serves_their_metrics(
    tmp_path: Path,
) -> None:
    folder = write_policies(tmp_path / "p")
    log_file = tmp_path / "audit.jsonl"
    port, metrics_port = free_port(), free_port()
    args = ["--policies", str(folder), "--listen", f"127.0.0.1:{port}", "--workers", "2",
            "--policy-watch", "false", "--audit-file", str(log_file),
            "--metrics", f"127.0.0.1:{metrics_port}"]
    with PdpProcess(args) as pdp:
        pdp.msg("policy loaded", count=2)
        ids = []
        for _ in range(20):  # a new connection each time: the kernel spreads them
            channel, decisions = stub(port)
            ids.append(decisions.Check(request()).decision_id)
            channel.close()
        series = 'pdp_decisions_total{effect="allow",frontend="grpc"}'
        assert sample(scrape(metrics_port), series) == 20  # summed over both workers
        assert pdp.stop(signal.SIGTERM) == 0
    records = read_records(log_file)
    assert sorted(r["decision_id"] for r in records) == sorted(ids)
