"""AuthZEN interop conformance against a running `pdp serve --http`: every
evaluation and batch of the shared Todo and API-gateway files, sent over HTTP
(the AuthZEN API) and over gRPC (Check, BatchCheck), gives the expected decision."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from gateway_support import GATEWAY_FILE, GATEWAY_POLICIES, TODO_FILE, TODO_POLICIES, load_cases, post_json
from google.protobuf import json_format
from grpc_support import PdpProcess

from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc

TODO = load_cases(TODO_FILE)
GATEWAY = load_cases(GATEWAY_FILE)
BATCH_KEYS = ("subject", "action", "resource", "context")


class Running:
    """A `pdp serve` subprocess with the AuthZEN HTTP API on, and a gRPC stub to it."""

    def __init__(self, policies: Path) -> None:
        self.proc = PdpProcess(["--policies", str(policies), "--listen", "127.0.0.1:0",
                                "--http", "127.0.0.1:0", "--policy-watch", "false"])
        self.http_port = int(self.proc.msg("http listening")[0]["port"])
        self.grpc_port = self.proc.port
        self.proc.msg("policy loaded")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub: Any = decision_pb2_grpc.DecisionServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.proc.stop()


@pytest.fixture(scope="module")
def todo_server() -> Iterator[Running]:
    server = Running(TODO_POLICIES)
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway_server() -> Iterator[Running]:
    server = Running(GATEWAY_POLICIES)
    yield server
    server.close()


def to_check(body: Mapping[str, Any]) -> pb.CheckRequest:
    return json_format.ParseDict(dict(body), pb.CheckRequest())


def evaluate_http(server: Running, body: Mapping[str, Any]) -> bool:
    status, _headers, answer = post_json(server.http_port, "/access/v1/evaluation", body)
    assert status == 200, answer
    assert set(answer["context"]) >= {"reasons", "decision_id", "policy_version"}
    decision: bool = answer["decision"]
    return decision


def describe(case: Mapping[str, Any]) -> str:
    body = case["request"]
    return f"{body['subject']['id'][:8]}-{body['action']['name']}-{body['resource']['id']}"


def test_the_data_is_complete() -> None:
    assert (len(TODO["evaluation"]), len(TODO["evaluations"]), len(GATEWAY["evaluation"])) == (40, 3, 25)


@pytest.mark.parametrize("case", TODO["evaluation"], ids=describe)
def test_todo_evaluation_over_http(todo_server: Running, case: dict[str, Any]) -> None:
    assert evaluate_http(todo_server, case["request"]) is case["expected"]


@pytest.mark.parametrize("case", GATEWAY["evaluation"], ids=describe)
def test_gateway_evaluation_over_http(gateway_server: Running, case: dict[str, Any]) -> None:
    assert evaluate_http(gateway_server, case["request"]) is case["expected"]


@pytest.mark.parametrize("index", range(len(TODO["evaluations"])))
def test_todo_batch_over_http(todo_server: Running, index: int) -> None:
    case = TODO["evaluations"][index]
    status, _headers, answer = post_json(todo_server.http_port, "/access/v1/evaluations",
                                         case["request"])
    assert status == 200, answer
    assert [{"decision": e["decision"]} for e in answer["evaluations"]] == case["expected"]


def test_todo_evaluations_over_grpc_check(todo_server: Running) -> None:
    got = [todo_server.stub.Check(to_check(c["request"]), timeout=10).allowed
           for c in TODO["evaluation"]]
    assert got == [c["expected"] for c in TODO["evaluation"]]


def test_gateway_evaluations_over_grpc_check(gateway_server: Running) -> None:
    got = [gateway_server.stub.Check(to_check(c["request"]), timeout=10).allowed
           for c in GATEWAY["evaluation"]]
    assert got == [c["expected"] for c in GATEWAY["evaluation"]]


def test_todo_batches_over_grpc_batch_check(todo_server: Running) -> None:
    for case in TODO["evaluations"]:
        body = case["request"]
        defaults = {key: body[key] for key in BATCH_KEYS if key in body}
        requests = [to_check({**defaults, **entry}) for entry in body["evaluations"]]
        answer = todo_server.stub.BatchCheck(pb.BatchCheckRequest(requests=requests), timeout=10)
        assert [{"decision": r.allowed} for r in answer.responses] == case["expected"]


def test_every_single_evaluation_in_one_http_batch(gateway_server: Running) -> None:
    """The 25 gateway cases as one batch: results in request order."""
    body = {"evaluations": [c["request"] for c in GATEWAY["evaluation"]]}
    status, _headers, answer = post_json(gateway_server.http_port, "/access/v1/evaluations", body)
    assert status == 200
    assert [e["decision"] for e in answer["evaluations"]] == [c["expected"] for c in GATEWAY["evaluation"]]
