"""Admin info and reload, gRPC health (SERVING once a policy is loaded) and reflection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_support import BROKEN_POLICY, POLICY, make_config, request, running_server, stub, write_policies

from pdp.client import PdpClient

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        return int(health.Check(health_pb2.HealthCheckRequest(service=service)).status)


def test_policy_info_describes_the_loaded_set(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    with running_server(make_config(folder)) as server, \
            PdpClient(f"127.0.0.1:{server.port}") as client:
        info = client.policy_info()
    assert len(info.version) == 64
    assert (info.files, info.roles, info.rules, info.grants) == (1, 3, 4, 1)
    assert info.source_dir.endswith("p")
    assert info.loaded_at.seconds > 0
    assert not info.HasField("last_error")


def test_reload_keeps_the_old_set_when_the_new_one_is_broken(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    with running_server(make_config(folder)) as server, \
            PdpClient(f"127.0.0.1:{server.port}") as client:
        before = client.policy_info().version
        (folder / "broken.policy").write_text(BROKEN_POLICY)
        failed = client.reload()
        assert not failed.ok and not failed.changed
        [issue] = failed.error.issues
        assert (issue.file, issue.line) == ("broken.policy", 2) and issue.column > 0
        assert failed.info.version == before
        assert failed.info.last_error.issues[0].file == "broken.policy"
        assert client.check("user:alice", "read", "document:a").policy_version == before

        (folder / "broken.policy").write_text("allow list on folder:**\n")
        fixed = client.reload()
        assert fixed.ok and fixed.changed
        assert fixed.info.version != before
        assert not fixed.info.HasField("last_error")
        assert client.check("user:bob", "list", "folder:x").allowed


def test_reload_of_the_same_files_is_unchanged(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    with running_server(make_config(folder)) as server, \
            PdpClient(f"127.0.0.1:{server.port}") as client:
        reply = client.reload()
    assert reply.ok and not reply.changed


def test_health_is_serving_only_once_a_policy_is_loaded(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p", {"main.policy": BROKEN_POLICY})
    with running_server(make_config(folder)) as server:
        assert health_of(server.port) == NOT_SERVING
        assert health_of(server.port, "pdp.v1.DecisionService") == NOT_SERVING
        (folder / "main.policy").write_text(POLICY)
        assert server.reloader.reload("test").ok
        assert health_of(server.port) == SERVING
        assert health_of(server.port, "pdp.v1.DecisionService") == SERVING
        channel, decisions = stub(server.port)
        assert decisions.Check(request()).allowed
        channel.close()


def test_reflection_lists_and_describes_the_services(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    with running_server(make_config(folder)) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"pdp.v1.DecisionService", "pdp.v1.AdminService", "grpc.health.v1.Health"} <= services
        described = db.FindFileContainingSymbol("pdp.v1.DecisionService")
        assert described.package == "pdp.v1"
        assert {m.name for m in described.message_type} >= {"CheckRequest", "CheckResponse"}


def test_grpcurl_calls_check_through_reflection(tmp_path: Path) -> None:
    grpcurl = Path(sys.executable).parent / "grpcurl"  # from the dev extra
    folder = write_policies(tmp_path / "p")
    body = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
            "resource": {"type": "document", "id": "a"}}
    with running_server(make_config(folder)) as server:
        done = subprocess.run(
            [str(grpcurl), "-plaintext", "-d", json.dumps(body), f"127.0.0.1:{server.port}",
             "pdp.v1.DecisionService/Check"],
            capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["decision"] == "DECISION_ALLOW"
    assert reply["reasons"][0]["rule"] == "reader-read"


def test_policy_health_follows_a_failed_reload(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    with running_server(make_config(folder)) as server:
        assert health_of(server.port, "pdp.policy") == SERVING
        (folder / "broken.policy").write_text(BROKEN_POLICY)
        assert not server.reloader.reload("test").ok
        assert health_of(server.port, "pdp.policy") == NOT_SERVING
        assert health_of(server.port) == SERVING  # the previous version still decides
        (folder / "broken.policy").unlink()
        assert server.reloader.reload("test").ok
        assert health_of(server.port, "pdp.policy") == SERVING
