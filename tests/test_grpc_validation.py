"""Bad input: INVALID_ARGUMENT naming the field, RESOURCE_EXHAUSTED over the message limit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_support import make_config, request, running_server, stub, write_policies

from pdp.v1 import decision_pb2 as pb

LIMITS = {
    "max_type_length": 8, "max_id_length": 16, "max_action_length": 8,
    "max_token_length": 32, "max_properties_bytes": 64,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[grpc.Channel, Any]]:
    folder = write_policies(tmp_path_factory.mktemp("policies"))
    config = make_config(folder, limits=LIMITS, server={"max_message_bytes": 4096})
    with running_server(config) as server:
        channel, decisions = stub(server.port)
        yield channel, decisions
        channel.close()


@pytest.fixture(scope="module")
def decisions(served: tuple[grpc.Channel, Any]) -> Any:
    return served[1]


def clear(field: str) -> Callable[[pb.CheckRequest], None]:
    return lambda r: r.ClearField(field)


def set_(path: str, value: Any) -> Callable[[pb.CheckRequest], None]:
    def apply(r: pb.CheckRequest) -> None:
        owner, _, name = path.rpartition(".")
        setattr(getattr(r, owner), name, value)
    return apply


def props(path: str, values: dict[str, Any]) -> Callable[[pb.CheckRequest], None]:
    def apply(r: pb.CheckRequest) -> None:
        target = r.context if path == "context" else getattr(r, path.split(".")[0]).properties
        target.update(values)
    return apply


CASES = [
    (clear("subject"), "subject: is required"),
    (clear("action"), "action: is required"),
    (clear("resource"), "resource: is required"),
    (set_("subject.type", ""), "subject.type: must not be empty"),
    (set_("subject.id", ""), "subject.id: must not be empty"),
    (set_("action.name", ""), "action.name: must not be empty"),
    (set_("resource.type", ""), "resource.type: must not be empty"),
    (set_("resource.id", ""), "resource.id: must not be empty"),
    (set_("subject.type", "x" * 9), "subject.type: longer than 8 characters"),
    (set_("subject.id", "x" * 17), "subject.id: longer than 16 characters"),
    (set_("action.name", "x" * 9), "action.name: longer than 8 characters"),
    (set_("resource.type", "x" * 9), "resource.type: longer than 8 characters"),
    (set_("resource.id", "x" * 17), "resource.id: longer than 16 characters"),
    (set_("subject.token", "x" * 33), "subject.token: longer than 32 characters"),
    (props("subject.properties", {"a": "x" * 80}), "subject.properties: larger than 64 bytes"),
    (props("resource.properties", {"a": "x" * 80}), "resource.properties: larger than 64 bytes"),
    (props("action.properties", {"a": "x" * 80}), "action.properties: larger than 64 bytes"),
    (props("context", {"a": "x" * 80}), "context: larger than 64 bytes"),
    (props("subject.properties", {"roles": "admin"}),
     "subject.properties.roles: must be a list of strings"),
    (props("subject.properties", {"roles": ["a", 1]}),
     "subject.properties.roles: must be a list of strings"),
]


@pytest.mark.parametrize(("mutate", "message"), CASES, ids=[m for _, m in CASES])
def test_bad_field_is_invalid_argument_naming_it(
    decisions: Any, mutate: Callable[[pb.CheckRequest], None], message: str
) -> None:
    bad = request("user:al", "read", "doc:a")
    mutate(bad)
    with pytest.raises(grpc.RpcError) as err:
        decisions.Check(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == message


@pytest.mark.parametrize(("mutate", "message"), CASES[:3], ids=[m for _, m in CASES[:3]])
def test_bad_batch_entry_names_its_index(
    decisions: Any, mutate: Callable[[pb.CheckRequest], None], message: str
) -> None:
    bad = request("user:al", "read", "doc:a")
    mutate(bad)
    reply = decisions.BatchCheck(pb.BatchCheckRequest(requests=[request("user:al"), bad]))
    assert reply.responses[1].error.message == f"requests[1].{message}"
    assert reply.responses[1].decision == pb.DECISION_DENY


def test_message_over_the_maximum_is_resource_exhausted(decisions: Any) -> None:
    huge = request("user:al", "read", "doc:a")
    huge.subject.token = "x" * 5000
    with pytest.raises(grpc.RpcError) as err:
        decisions.Check(huge)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_server_keeps_serving_after_bad_input(decisions: Any) -> None:
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            decisions.Check(pb.CheckRequest())
    assert decisions.Check(request("user:al", "read", "document:a")).allowed


def test_bytes_that_are_not_a_check_request_are_invalid_argument(
    served: tuple[grpc.Channel, Any],
) -> None:
    check_bytes = served[0].unary_unary("/pdp.v1.DecisionService/Check")
    with pytest.raises(grpc.RpcError) as err:
        check_bytes(b"\x0a\xff\xff")  # a field whose length runs past the end
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("request: not a pdp.v1.CheckRequest")
