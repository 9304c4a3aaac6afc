"""End to end with the real Envoy binary: Envoy on loopback in front of a small
backend, its ext_authz filter asking `pdp serve --config` (a subprocess whose
[identity] issuer verifies the tokens) on its gRPC port (examples/envoy/envoy.yaml,
failure_mode_allow: false). Allowed requests reach the backend; the others get
the PDP's 403/401 from Envoy; decisions keep coming during policy reloads; a
PDP that is gone means 403."""

from __future__ import annotations

import json
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gateway_support import (
    AUDIENCE,
    BETH,
    ENVOY_EXAMPLE,
    GATEWAY_POLICIES,
    ISSUER,
    MORTY,
    RICK,
    SECRET,
    backend,
    envoy_config,
    free_port,
    http_call,
    running_envoy,
    token,
)
from grpc_support import PdpProcess

CONFIG = """\
[server]
listen = "127.0.0.1:0"

[policy]
dir = "{policies}"
watch = false

[envoy]
openapi_file = "{openapi}"

[[identity.issuers]]
issuer = "{issuer}"
audiences = ["{audience}"]
hs256_secret_file = "{secret}"
subject_type = "identity"
"""


@dataclass
class Stack:
    port: int  # Envoy's listener
    pdp: PdpProcess
    policies: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`pdp serve --config` (tokens verified by its [identity] issuer) behind the real Envoy."""
    workdir = tmp_path_factory.mktemp("envoy")
    policies = workdir / "policies"
    shutil.copytree(GATEWAY_POLICIES, policies)
    (workdir / "secret").write_bytes(SECRET)
    config = workdir / "pdp.toml"
    config.write_text(CONFIG.format(policies=policies, openapi=ENVOY_EXAMPLE / "openapi.json",
                                    issuer=ISSUER, audience=AUDIENCE, secret=workdir / "secret"))
    with PdpProcess(["--config", str(config)]) as pdp:
        pdp.msg("policy loaded")
        listen, admin = free_port(), free_port()
        with backend() as backend_port, running_envoy(
            workdir, envoy_config(listen, admin, backend_port, pdp.port), admin
        ):
            yield Stack(listen, pdp, policies)
        assert pdp.stop() == 0


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
    reloads = 0
    try:
        # At least 10 reloads (SIGHUP, each waited for), and until requests overlapped them.
        while reloads < 10 or (len(statuses) < 30 and reloads < 200):
            reloads += 1
            policy.write_text(variant if reloads % 2 else original)
            stack.pdp.send(signal.SIGHUP)
            stack.pdp.msg("policy loaded", count=1 + reloads)
    finally:
        stop.set()
        worker.join(30)
        policy.write_text(original)
    versions = {e["version"] for e in stack.pdp.logs if e.get("msg") == "policy loaded"}
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
