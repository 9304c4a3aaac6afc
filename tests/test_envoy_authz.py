"""Envoy ext_authz Check on the PDP's gRPC port, called as Envoy calls it (real
gRPC, generated xds-protos stubs): subject from token / principal / anonymous,
OpenAPI route templates, ALLOW headers, 403 and 401 answers, failing closed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc
from gateway_support import BETH, ENVOY_EXAMPLE, GATEWAY_POLICIES, MORTY, RICK, ROOT, identity_resolver, token
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_support import make_config, running_server, write_policies

from pdp import config as settings
from pdp.config import EnvoyConfig
from pdp.envoy import SERVICE_NAME, EnvoyMapping, HttpAttributes
from pdp.openapi import OpenApiError, RouteTemplates
from pdp.server import build_server

OPENAPI = str(ENVOY_EXAMPLE / "openapi.json")
ANONYMOUS_POLICY = """\
allow GET on route:/public/** reason "anyone may read public pages" as public
allow GET on route:/health when subject.type == "anonymous" reason "probes" as probes
allow GET on route:/internal/** when subject.type == "service" reason "services" as internal
"""


def check_request(
    method: str = "GET", path: str = "/todos", headers: dict[str, str] | None = None,
    principal: str = "", address: str = "127.0.0.9",
) -> pb.CheckRequest:
    msg = pb.CheckRequest()
    http = msg.attributes.request.http
    http.method, http.path, http.host = method, path, "todo.example"
    http.headers.update({"user-agent": "curl/8", "x-request-id": "r-1", "cookie": "secret",
                         **(headers or {})})
    msg.attributes.source.principal = principal
    msg.attributes.source.address.socket_address.address = address
    return msg


def bearer(subject: str, **kw: Any) -> dict[str, str]:
    return {"authorization": "Bearer " + token(subject, **kw)}


class Authz:
    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub: Any = external_auth_pb2_grpc.AuthorizationStub(self.channel)

    def check(self, msg: pb.CheckRequest) -> pb.CheckResponse:
        return self.stub.Check(msg, timeout=10)


def headers_of(options: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


@pytest.fixture(scope="module")
def authz() -> Iterator[Authz]:
    config = make_config(GATEWAY_POLICIES, envoy={"openapi_file": OPENAPI})
    server = build_server(config, identity=identity_resolver())
    server.grpc_server.start()
    server.reloader.reload("test")
    client = Authz(server.port)
    yield client
    client.channel.close()
    server.stop(1.0)


def test_a_verified_token_on_an_allowed_route_is_ok(authz: Authz) -> None:
    answer = authz.check(check_request("DELETE", "/todos/42?force=1", bearer(MORTY)))
    assert answer.status.code == grpc.StatusCode.OK.value[0]
    assert answer.HasField("ok_response")
    upstream = headers_of(answer.ok_response.headers)
    assert upstream["x-pdp-subject"] == f"identity:{MORTY}"
    assert len(upstream["x-pdp-decision-id"]) == 32


def test_a_denied_route_is_403_with_a_json_body(authz: Authz) -> None:
    answer = authz.check(check_request("DELETE", "/todos/42", bearer(BETH)))
    denied = answer.denied_response
    assert answer.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert denied.status.code == 403
    body = json.loads(denied.body)
    headers = headers_of(denied.headers)
    assert body["decision"] is False
    assert body["decision_id"] == headers["x-pdp-decision-id"]
    assert body["reasons"][0]["rule"] == "default-deny"
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("bad", [
    "Bearer " + "garbage", "Bearer ", "bearer x.y.z",
])
def test_an_invalid_token_is_401_with_a_challenge(authz: Authz, bad: str) -> None:
    answer = authz.check(check_request(headers={"authorization": bad}))
    denied = answer.denied_response
    assert denied.status.code == 401
    assert answer.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    challenge = headers_of(denied.headers)["www-authenticate"]
    assert challenge == 'Bearer realm="pdp", error="invalid_token"'
    assert json.loads(denied.body)["error"] == "invalid_token"


def test_an_expired_token_says_so(authz: Authz) -> None:
    answer = authz.check(check_request(headers=bearer(RICK, lifetime=-120)))
    body = json.loads(answer.denied_response.body)
    assert answer.denied_response.status.code == 401
    assert body["reasons"][0]["rule"] == "pdp.identity.expired"


def test_a_token_for_another_audience_is_refused(authz: Authz) -> None:
    answer = authz.check(check_request(headers=bearer(RICK, aud="someone-else")))
    assert answer.denied_response.status.code == 401


def test_no_token_is_the_anonymous_subject(authz: Authz) -> None:
    answer = authz.check(check_request())
    assert answer.denied_response.status.code == 403
    assert "anonymous:anonymous" in json.loads(answer.denied_response.body)["reasons"][0]["text"]


def test_a_client_cannot_spoof_the_upstream_headers(authz: Authz) -> None:
    answer = authz.check(check_request(headers={**bearer(RICK), "x-pdp-subject": "identity:root"}))
    options = answer.ok_response.headers
    subject = next(o for o in options if o.header.key == "x-pdp-subject")
    assert subject.header.value == f"identity:{RICK}"
    assert subject.append_action == subject.OVERWRITE_IF_EXISTS_OR_ADD


def test_without_a_policy_the_answer_is_deny(tmp_path: Path) -> None:
    config = make_config(tmp_path / "missing")
    with running_server(config) as server:
        client = Authz(server.port)
        answer = client.check(check_request())
        client.channel.close()
    assert answer.denied_response.status.code == 403
    assert "no policy" in json.loads(answer.denied_response.body)["reasons"][0]["text"]


def test_principal_anonymous_require_token_and_hidden_reasons(tmp_path: Path) -> None:
    policies = write_policies(tmp_path / "p", {"main.policy": ANONYMOUS_POLICY})
    config = make_config(policies)
    with running_server(config) as server:
        client = Authz(server.port)
        assert client.check(check_request("GET", "/health")).HasField("ok_response")
        internal = check_request("GET", "/internal/x", principal="spiffe://mesh/ns/a/sa/orders")
        ok = client.check(internal)
        assert headers_of(ok.ok_response.headers)["x-pdp-subject"] == "service:spiffe://mesh/ns/a/sa/orders"
        assert client.check(check_request("GET", "/internal/x")).denied_response.status.code == 403
        # No identity configured: a token cannot be verified, so it is refused.
        refused = client.check(check_request("GET", "/public/a", bearer(RICK)))
        assert refused.denied_response.status.code == 401
        client.channel.close()
    strict = make_config(policies, envoy={"require_token": "true", "show_reasons": "false",
                                          "decision_id_header": "x-decision"})
    with running_server(strict) as server:
        client = Authz(server.port)
        answer = client.check(check_request("GET", "/public/a"))
        denied = answer.denied_response
        assert denied.status.code == 401
        assert headers_of(denied.headers)["www-authenticate"] == 'Bearer realm="pdp"'
        assert set(json.loads(denied.body)) == {"decision", "decision_id"}
        assert "x-decision" in headers_of(denied.headers)
        client.channel.close()


def test_the_mapping() -> None:
    mapping = EnvoyMapping.from_config(EnvoyConfig(openapi_file=OPENAPI))
    msg = check_request("PUT", "/todos/42?tag=a&tag=b&x=1", {"x-forwarded-for": "10.0.0.1"})
    http = HttpAttributes.of(msg)
    request = mapping.request(http, "identity", RICK)
    assert (request.action, request.resource_type, request.resource_id) == ("PUT", "route", "/todos/{todoId}")
    assert dict(request.resource_properties) == {"path": "/todos/42", "params": {"todoId": "42"}}
    assert request.context["query"] == {"tag": ["a", "b"], "x": "1"}
    assert request.context["host"] == "todo.example"
    assert request.context["source_address"] == "127.0.0.9"
    # Only the selected headers: never the cookie (nor the authorization header).
    assert request.context["headers"] == {"user-agent": "curl/8", "x-request-id": "r-1",
                                          "x-forwarded-for": "10.0.0.1"}
    plain = EnvoyMapping.from_config(EnvoyConfig()).request(http, "identity", RICK)
    assert plain.resource_id == "/todos/42"


def test_route_templates() -> None:
    routes = RouteTemplates(
        ["/todos", "/todos/{todoId}", "/todos/mine", "/users/{userId}/todos/{todoId}", "/"]
    )
    assert routes.match("/todos/mine").template == "/todos/mine"  # type: ignore[union-attr]
    assert routes.match("/todos/7").template == "/todos/{todoId}"  # type: ignore[union-attr]
    found = routes.match("/users/u1/todos/t2")
    assert found is not None and dict(found.params) == {"userId": "u1", "todoId": "t2"}
    assert routes.match("/todos/7/").template == "/todos/{todoId}"  # type: ignore[union-attr]
    assert routes.match("/").template == "/"  # type: ignore[union-attr]
    assert routes.match("/todos/7/extra") is None
    assert routes.match("/users//todos/1") is None


def test_bad_openapi_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "nopaths.json").write_text("{}")
    for name, message in (("bad.json", "not JSON"), ("nopaths.json", "paths"), ("gone.json", "cannot read")):
        with pytest.raises(OpenApiError, match=message):
            RouteTemplates.from_file(tmp_path / name)


def test_the_example_config_loads() -> None:
    config = settings.load(ENVOY_EXAMPLE / "pdp.toml")
    assert config.server.listen == "127.0.0.1:50051"
    assert config.http.listen == "127.0.0.1:8181"
    assert config.envoy.openapi_file is not None
    routes = RouteTemplates.from_file(ROOT / config.envoy.openapi_file)
    assert routes.match("/users/rick").template == "/users/{userId}"  # type: ignore[union-attr]


def test_the_token_never_enters_the_context() -> None:
    mapping = EnvoyMapping(EnvoyConfig(context_headers=("Authorization", "user-agent")), None)
    http = HttpAttributes.of(check_request(headers=bearer(RICK)))
    assert mapping.request(http, "identity", RICK).context["headers"] == {"user-agent": "curl/8"}


def test_health_and_reflection_name_the_envoy_service(authz: Authz) -> None:
    health = health_pb2_grpc.HealthStub(authz.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(authz.channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert SERVICE_NAME in names


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[Any, Any, Any]] = []

    def record(self, request: Any, outcome: Any, meta: Any) -> None:
        self.records.append((request, outcome, meta))


def test_every_answer_is_audited_with_its_decision_id() -> None:
    config = make_config(GATEWAY_POLICIES, envoy={"openapi_file": OPENAPI})
    recorder = Recorder()
    server = build_server(config, identity=identity_resolver())
    server.service.audit = recorder
    server.grpc_server.start()
    server.reloader.reload("test")
    client = Authz(server.port)
    try:
        ok = client.check(check_request("GET", "/todos", bearer(RICK)))
        refused = client.check(check_request("GET", "/todos", bearer(RICK, lifetime=-120)))
    finally:
        client.channel.close()
        server.stop(1.0)
    (request, outcome, meta), (_bad_request, bad_outcome, bad_meta) = recorder.records
    assert (meta.frontend, meta.request_id) == ("envoy", "r-1")
    assert outcome.decision_id == headers_of(ok.ok_response.headers)["x-pdp-decision-id"]
    assert (request.subject_type, request.subject_id, request.resource_id) == ("identity", RICK, "/todos")
    assert bad_meta.frontend == "envoy"
    assert bad_outcome.decision.reasons[0].rule == "pdp.identity.expired"
    assert bad_outcome.decision_id == json.loads(refused.denied_response.body)["decision_id"]
