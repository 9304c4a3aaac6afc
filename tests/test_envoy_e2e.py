"""End to end with the real Envoy binary: Envoy on loopback in front of a small
backend, its ext_authz filter asking the PDP's gRPC port (examples/envoy/envoy.yaml,
failure_mode_allow: false). Allowed requests reach the backend; the others get
the PDP's 403/401 from Envoy; decisions keep coming during policy reloads; a
PDP that is gone means 403."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gateway_support import (
    BETH,
    ENVOY_EXAMPLE,
    GATEWAY_POLICIES,
    MORTY,
    RICK,
    backend,
    envoy_config,
    free_port,
    http_call,
    identity_resolver,
    running_envoy,
    token,
)
from grpc_support import make_config

from pdp.server import Server, build_server


@dataclass
class Stack:
    port: int  # Envoy's listener
    pdp: Server
    policies: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("envoy")
    policies = workdir / "policies"
    shutil.copytree(GATEWAY_POLICIES, policies)
    config = make_config(policies, envoy={"openapi_file": str(ENVOY_EXAMPLE / "openapi.json")})
    pdp = build_server(config, identity=identity_resolver())
    pdp.grpc_server.start()
    pdp.reloader.reload("test")
    listen, admin = free_port(), free_port()
    try:
        with backend() as backend_port, running_envoy(
            workdir, envoy_config(listen, admin, backend_port, pdp.port), admin
        ):
            yield Stack(listen, pdp, policies)
    finally:
        pdp.stop(1.0)


def call(
    stack: Stack, method: str, path: str, who: str | None = None, **kw: float
) -> tuple[int, dict[str, str], bytes]:
    headers = {"authorization": "Bearer " + token(who, **kw)} if who else {}
    return http_call(stack.port, method, path, headers=headers)


def test_a_valid_token_on_an_allowed_route_reaches_the_backend(stack: Stack) -> None:
    status, _headers, raw = call(stack, "GET", "/todos?page=2", RICK)
    assert status == 200, raw
    seen = json.loads(raw)
    assert seen["backend"] is True
    assert seen["path"] == "/todos?page=2"
    assert seen["headers"]["x-pdp-subject"] == f"identity:{RICK}"
    assert len(seen["headers"]["x-pdp-decision-id"]) == 32


def test_a_concrete_path_is_authorized_by_its_template(stack: Stack) -> None:
    status, _headers, raw = call(stack, "DELETE", "/todos/42", MORTY)
    assert status == 200, raw


def test_a_denied_route_is_403_with_the_pdps_body(stack: Stack) -> None:
    status, headers, raw = call(stack, "DELETE", "/todos/42", BETH)
    assert status == 403
    body = json.loads(raw)
    assert body["decision"] is False
    assert body["decision_id"] == headers["x-pdp-decision-id"]
    assert body["reasons"][0]["rule"] == "default-deny"
    assert "backend" not in body


def test_no_token_is_anonymous_and_denied(stack: Stack) -> None:
    status, _headers, raw = call(stack, "GET", "/todos")
    assert status == 403
    assert "anonymous:anonymous" in json.loads(raw)["reasons"][0]["text"]


def test_an_invalid_token_is_401_with_a_challenge(stack: Stack) -> None:
    status, headers, raw = call(stack, "GET", "/todos", RICK, lifetime=-120)
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="pdp", error="invalid_token"'
    assert json.loads(raw)["reasons"][0]["rule"] == "pdp.identity.expired"


def test_requests_get_decisions_during_policy_reloads(stack: Stack) -> None:
    """Two policy versions swapped back and forth while requests flow through Envoy."""
    policy = stack.policies / "gateway.policy"
    original = policy.read_text()
    variant = original + '\nallow GET on route:/status reason "status page" as status\n'
    statuses: list[tuple[int, int]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            statuses.append((call(stack, "GET", "/todos", BETH)[0],
                             call(stack, "POST", "/todos", BETH)[0]))

    worker = threading.Thread(target=traffic)
    worker.start()
    versions = set()
    try:
        i = 0
        # At least 20 swaps, and until requests have overlapped them (bounded).
        while i < 20 or (len(statuses) < 30 and i < 2000):
            i += 1
            policy.write_text(variant if i % 2 == 0 else original)
            result = stack.pdp.reloader.reload("test")
            assert result.ok
            versions.add(stack.pdp.service.holder.current.version)  # type: ignore[union-attr]
    finally:
        stop.set()
        worker.join(30)
        policy.write_text(original)
        stack.pdp.reloader.reload("test")
    assert len(versions) == 2
    assert statuses, "no request completed"
    assert set(statuses) == {(200, 403)}


def test_a_pdp_that_is_gone_means_deny(tmp_path: Path) -> None:
    """failure_mode_allow: false -- Envoy must not let a request through without a decision."""
    listen, admin, dead_pdp = free_port(), free_port(), free_port()
    with backend() as backend_port, running_envoy(
        tmp_path, envoy_config(listen, admin, backend_port, dead_pdp), admin
    ):
        status, _headers, _raw = http_call(listen, "GET", "/todos",
                                           headers={"authorization": "Bearer " + token(RICK)})
    assert status == 403
