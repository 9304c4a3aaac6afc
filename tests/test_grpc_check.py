"""Check and BatchCheck over real gRPC: decisions, reasons, versions, ids, batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_support import make_config, request, running_server, stub, write_policies

from pdp.v1 import decision_pb2 as pb


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder = write_policies(tmp_path_factory.mktemp("policies"))
    with running_server(make_config(folder, limits={"max_batch": 5})) as server:
        channel, decisions = stub(server.port)
        yield decisions
        channel.close()


def test_allow_carries_the_rule_that_allowed(decisions: Any) -> None:
    reply = decisions.Check(request("user:alice", "read", "document:reports/q3"))
    assert reply.decision == pb.DECISION_ALLOW and reply.allowed
    [reason] = reply.reasons
    assert (reason.rule, reason.effect, reason.text) == (
        "reader-read", pb.EFFECT_ALLOW, "readers read documents")
    assert (reason.file, reason.line) == ("main.policy", 2)
    assert len(reply.policy_version) == 64
    assert "reader" in reply.roles
    assert not reply.cached and not reply.HasField("error")


def test_default_deny_says_why(decisions: Any) -> None:
    reply = decisions.Check(request("user:alice", "write", "document:drafts/7"))
    assert reply.decision == pb.DECISION_DENY and not reply.allowed
    assert "no rule allows write on document:drafts/7" in reply.reasons[0].text


def test_deny_overrides_and_names_the_deny_rule(decisions: Any) -> None:
    reply = decisions.Check(request("user:alice", "delete", "document:locked/1", roles=["writer"]))
    assert not reply.allowed
    assert [r.rule for r in reply.reasons] == ["locked"]
    assert reply.reasons[0].effect == pb.EFFECT_DENY


def test_roles_and_properties_brought_with_the_request(decisions: Any) -> None:
    mine = request("user:alice", "write", "document:drafts/7", roles=["writer"],
                   resource_properties={"owner": "alice"})
    theirs = request("user:alice", "write", "document:drafts/7", roles=["writer"],
                     resource_properties={"owner": "bob"})
    assert decisions.Check(mine).allowed
    assert not decisions.Check(theirs).allowed


def test_json_numbers_compare_as_policy_integers(decisions: Any) -> None:
    small = request("user:a", "approve", "invoice:9", roles=["approver"],
                    resource_properties={"amount": 1000})
    large = request("user:a", "approve", "invoice:9", roles=["approver"],
                    resource_properties={"amount": 1000.5})
    assert decisions.Check(small).allowed
    assert not decisions.Check(large).allowed


def test_decision_ids_are_unique(decisions: Any) -> None:
    ids = {decisions.Check(request()).decision_id for _ in range(20)}
    assert len(ids) == 20


def test_an_authzen_json_request_parses_into_check_request(decisions: Any) -> None:
    body = {
        "subject": {"type": "user", "id": "alice", "properties": {"roles": ["writer"]}},
        "action": {"name": "write"},
        "resource": {"type": "document", "id": "drafts/7", "properties": {"owner": "alice"}},
        "context": {"time": "2026-11-25T12:00:00Z"},
    }
    parsed = json_format.Parse(json.dumps(body), pb.CheckRequest())
    assert decisions.Check(parsed).allowed


def test_batch_answers_each_entry_in_order(decisions: Any) -> None:
    entries = [
        request("user:alice", "read", "document:a"),
        request("user:alice", "write", "document:a"),
        request("user:alice", "delete", "document:locked/x"),
    ]
    reply = decisions.BatchCheck(pb.BatchCheckRequest(requests=entries))
    assert [r.allowed for r in reply.responses] == [True, False, False]
    assert reply.responses[2].reasons[0].rule == "locked"
    assert len({r.decision_id for r in reply.responses}) == 3
    assert len({r.policy_version for r in reply.responses}) == 1


def test_a_bad_batch_entry_gets_its_own_error(decisions: Any) -> None:
    bad = request()
    bad.resource.id = ""
    entries = [request(), bad, request()]
    reply = decisions.BatchCheck(pb.BatchCheckRequest(requests=entries))
    assert [r.allowed for r in reply.responses] == [True, False, True]
    broken = reply.responses[1]
    assert broken.decision == pb.DECISION_DENY
    assert broken.error.code == "INVALID_ARGUMENT"
    assert broken.error.message == "requests[1].resource.id: must not be empty"
    assert broken.reasons[0].rule == "pdp.invalid-request"
    assert not reply.responses[0].HasField("error")


def test_empty_batch_is_empty(decisions: Any) -> None:
    assert list(decisions.BatchCheck(pb.BatchCheckRequest()).responses) == []


def test_batch_over_the_maximum_is_invalid_argument(decisions: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        decisions.BatchCheck(pb.BatchCheckRequest(requests=[request()] * 6))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "requests: 6 entries, more than the maximum of 5"


def test_no_policy_loaded_denies_with_the_reason(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p", {"bad.policy": "role x {\n allow\n}\n"})
    with running_server(make_config(folder)) as server:
        channel, decisions = stub(server.port)
        reply = decisions.Check(request())
        channel.close()
    assert not reply.allowed
    assert reply.reasons[0].text == "no policy is loaded"
