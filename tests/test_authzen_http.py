"""The AuthZEN HTTP API (pdp/authzen_http.py) served for real by uvicorn beside
the gRPC server: payload errors, batch semantics, metadata, search 501,
X-Request-ID, bearer-token and mTLS protection, TLS files followed as they rotate,
the shared audit path."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from gateway_support import (
    BETH,
    GATEWAY_POLICIES,
    RICK,
    TODO_POLICIES,
    free_port,
    http_call,
    identity_resolver,
    post_json,
    token,
)
from grpc_support import PdpProcess, make_config, running_server
from identity_certs import CertificateAuthority, Issued

from pdp.config import Config
from pdp.http_server import HttpServer
from pdp.model import Request
from pdp.service import CallMeta, Outcome

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"


def subject(who: str = RICK) -> dict[str, Any]:
    return {"type": "user", "id": who}


def todo(owner: str = "rick@the-citadel.com", todo_id: str = "1") -> dict[str, Any]:
    return {"type": "todo", "id": todo_id, "properties": {"ownerID": owner}}


def body(action: str = "can_read_todos", who: str = RICK) -> dict[str, Any]:
    return {"subject": subject(who), "action": {"name": action}, "resource": todo()}


class Recorder:
    """An AuditRecorder that keeps the records, to see that HTTP goes the shared way."""

    def __init__(self) -> None:
        self.records: list[tuple[Request, Outcome, CallMeta]] = []

    def record(self, request: Request, outcome: Outcome, meta: CallMeta) -> None:
        self.records.append((request, outcome, meta))


@contextmanager
def serving(config: Config, with_identity: bool = False) -> Iterator[tuple[HttpServer, Recorder]]:
    identity = identity_resolver() if with_identity else None
    with running_server(config) as server:
        recorder = Recorder()
        server.service.audit = recorder
        http = HttpServer(config, server.service, identity)
        http.start()
        try:
            yield http, recorder
        finally:
            http.stop()


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[int, Recorder]]:
    config = make_config(TODO_POLICIES, http={"listen": "127.0.0.1:0"}, limits={"max_batch": 5},
                         server={"max_message_bytes": 4096})
    with serving(config) as (http, recorder):
        yield http.port, recorder


def test_an_evaluation_answers_decision_and_context(api: tuple[int, Recorder]) -> None:
    port, recorder = api
    status, headers, answer = post_json(port, EVALUATION, body(), **{"X-Request-ID": "req-42"})
    assert status == 200
    assert headers["x-request-id"] == "req-42"
    assert answer["decision"] is True
    context = answer["context"]
    assert context["reasons"][0]["rule"] == "todo-read-todos"
    assert len(context["policy_version"]) == 64
    request, outcome, meta = recorder.records[-1]
    assert (meta.frontend, meta.request_id) == ("authzen", "req-42")
    assert outcome.decision_id == context["decision_id"]
    assert (request.subject_id, request.action) == (RICK, "can_read_todos")


def test_a_deny_carries_its_reason(api: tuple[int, Recorder]) -> None:
    status, _h, answer = post_json(api[0], EVALUATION, body("can_delete_todo", BETH))
    assert status == 200
    assert answer["decision"] is False
    assert answer["context"]["reasons"][0]["effect"] == "deny"


@pytest.mark.parametrize(("payload", "message"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"action": {"name": "x"}, "resource": todo()}).encode(), "subject"),
    (json.dumps({"subject": {"type": "user"}, "action": {"name": "x"}, "resource": todo()}).encode(),
     "subject.id"),
    (json.dumps({**body(), "context": "nope"}).encode(), "context"),
])
def test_malformed_payloads_are_400_with_a_json_error(
    api: tuple[int, Recorder], payload: bytes, message: str
) -> None:
    status, headers, raw = http_call(api[0], "POST", EVALUATION, payload,
                                     {"X-Request-ID": "bad-1", "content-type": "application/json"})
    assert status == 400
    assert headers["x-request-id"] == "bad-1"
    assert message in json.loads(raw)["error"]


def test_a_body_over_the_limit_is_413(api: tuple[int, Recorder]) -> None:
    big = {**body(), "context": {"pad": "x" * 5000}}
    status, _h, answer = post_json(api[0], EVALUATION, big)
    assert status == 413
    assert "larger" in answer["error"]


def test_batch_entries_override_the_defaults_in_order(api: tuple[int, Recorder]) -> None:
    batch = {
        "subject": subject(BETH),
        "action": {"name": "can_read_todos"},
        "resource": todo(),
        "evaluations": [
            {},
            {"action": {"name": "can_delete_todo"}},
            {"subject": subject(RICK), "action": {"name": "can_delete_todo"}},
            {"resource": {"type": "todo"}},
        ],
    }
    status, _h, answer = post_json(api[0], EVALUATIONS, batch)
    assert status == 200
    results = answer["evaluations"]
    assert [r["decision"] for r in results] == [True, False, True, False]
    assert "evaluations[3]: resource.id" in results[3]["context"]["error"]
    assert all("decision_id" in r["context"] for r in results[:3])


@pytest.mark.parametrize(("semantic", "expected"), [
    ("execute_all", [True, False, True, False]),
    ("deny_on_first_deny", [True, False]),
    ("permit_on_first_permit", [True]),
])
def test_evaluations_semantics(api: tuple[int, Recorder], semantic: str, expected: list[bool]) -> None:
    actions = ["can_read_todos", "can_delete_todo", "can_read_todos", "can_create_todo"]
    batch = {
        "subject": subject(BETH),
        "resource": todo(),
        "options": {"evaluations_semantic": semantic},
        "evaluations": [{"action": {"name": a}} for a in actions],
    }
    status, _h, answer = post_json(api[0], EVALUATIONS, batch)
    assert status == 200
    assert [r["decision"] for r in answer["evaluations"]] == expected


def test_deny_on_first_deny_returns_the_deny_first(api: tuple[int, Recorder]) -> None:
    batch = {"subject": subject(BETH), "resource": todo(),
             "options": {"evaluations_semantic": "deny_on_first_deny"},
             "evaluations": [{"action": {"name": "can_delete_todo"}}, {"action": {"name": "can_read_todos"}}]}
    assert [r["decision"] for r in post_json(api[0], EVALUATIONS, batch)[2]["evaluations"]] == [False]


@pytest.mark.parametrize(("batch", "message"), [
    ({"evaluations": "x"}, "array"),
    ({"evaluations": [{}], "options": {"evaluations_semantic": "first_wins"}}, "evaluations_semantic"),
    ({"evaluations": [{}] * 6}, "maximum of 5"),
])
def test_bad_batches_are_400(api: tuple[int, Recorder], batch: dict[str, Any], message: str) -> None:
    status, _h, answer = post_json(api[0], EVALUATIONS, batch)
    assert status == 400
    assert message in answer["error"]


def test_evaluations_without_entries_is_one_evaluation(api: tuple[int, Recorder]) -> None:
    status, _h, answer = post_json(api[0], EVALUATIONS, body())
    assert status == 200
    assert answer["decision"] is True


def test_metadata(api: tuple[int, Recorder]) -> None:
    port = api[0]
    status, _h, raw = http_call(port, "GET", "/.well-known/authzen-configuration")
    assert status == 200
    meta = json.loads(raw)
    base = f"http://127.0.0.1:{port}"
    assert meta == {
        "policy_decision_point": base,
        "access_evaluation_endpoint": base + EVALUATION,
        "access_evaluations_endpoint": base + EVALUATIONS,
    }


@pytest.mark.parametrize("kind", ["subject", "resource", "action"])
def test_search_apis_answer_501(api: tuple[int, Recorder], kind: str) -> None:
    status, _h, answer = post_json(api[0], f"/access/v1/search/{kind}", {})
    assert status == 501
    assert "not implemented" in answer["error"]


def test_unknown_paths_and_methods_answer_json(api: tuple[int, Recorder]) -> None:
    status, _h, raw = http_call(api[0], "GET", "/nope")
    assert (status, json.loads(raw)) == (404, {"error": "Not Found"})
    status, _h, raw = http_call(api[0], "GET", EVALUATION)
    assert status == 405
    assert json.loads(raw)["error"]


def test_require_token(tmp_path: Path) -> None:
    config = make_config(TODO_POLICIES, http={"listen": "127.0.0.1:0", "require_token": "true"})
    with serving(config, with_identity=True) as (http, recorder):
        status, headers, answer = post_json(http.port, EVALUATION, body())
        assert status == 401
        assert headers["www-authenticate"] == 'Bearer realm="pdp"'
        status, headers, answer = post_json(http.port, EVALUATION, body(),
                                            Authorization="Bearer " + token("pep", lifetime=-100))
        assert status == 401
        assert 'error="invalid_token"' in headers["www-authenticate"]
        assert "expired" in answer["error"]
        status, _h, answer = post_json(http.port, EVALUATION, body(),
                                       Authorization="Bearer " + token("gateway-1"))
        assert (status, answer["decision"]) == (200, True)
        assert recorder.records[-1][2].caller == "identity:gateway-1"


def test_https_with_client_certificates(tmp_path: Path) -> None:
    ca, other = CertificateAuthority("pdp-ca"), CertificateAuthority("other-ca")
    cert, key = ca.issue("pdp", server=True).write(tmp_path, "server")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    client_cert, client_key = ca.issue("gateway", spiffe_id="spiffe://mesh.test/gateway").write(
        tmp_path, "client")
    stranger_cert, stranger_key = other.issue("stranger").write(tmp_path, "stranger")
    tls = {"cert_file": cert, "key_file": key, "client_ca_file": tmp_path / "ca.pem"}
    config = make_config(TODO_POLICIES, http={"listen": "127.0.0.1:0"}, **{"server.tls": tls})
    with serving(config) as (server, recorder):
        assert server.scheme == "https"
        good = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        good.load_cert_chain(client_cert, client_key)
        assert _https_post(server.port, good, body()) == 200
        assert recorder.records[-1][2].caller == "spiffe://mesh.test/gateway"
        no_cert = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https_post(server.port, no_cert, body())
        wrong = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        wrong.load_cert_chain(stranger_cert, stranger_key)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https_post(server.port, wrong, body())


def _https_post(port: int, context: ssl.SSLContext, payload: Any) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("POST", EVALUATION, json.dumps(payload), {"content-type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _served_serial(port: int) -> int:
    """The serial of the certificate a new TLS connection is served."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only reading the certificate
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _wait_for_serial(port: int, serial: int) -> None:
    deadline = time.monotonic() + 10
    while _served_serial(port) != serial:
        assert time.monotonic() < deadline, "the rotated certificate was never served"
        time.sleep(0.1)


def _replace(path: Path, content: bytes) -> None:
    """Write as rotations do (Kubernetes, cert-manager): a new file renamed over the old."""
    path.with_suffix(".tmp").write_bytes(content)
    os.replace(path.with_suffix(".tmp"), path)


@contextmanager
def _https_with(tmp_path: Path, ca: CertificateAuthority, first: Issued) -> Iterator[HttpServer]:
    cert, key = first.write(tmp_path, "server")
    config = make_config(TODO_POLICIES, http={"listen": "127.0.0.1:0"},
                         **{"server.tls": {"cert_file": cert, "key_file": key}})
    with serving(config) as (server, _):
        yield server


def test_https_follows_certificate_rotation(tmp_path: Path) -> None:
    ca = CertificateAuthority("pdp-ca")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    first, rotated = ca.issue("pdp", server=True), ca.issue("pdp", server=True)
    with _https_with(tmp_path, ca, first) as server:
        assert _served_serial(server.port) == first.cert.serial_number
        trusting = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        open_conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=trusting,
                                                timeout=10)
        open_conn.request("GET", "/.well-known/authzen-configuration")
        open_conn.getresponse().read()
        rotated.write(tmp_path, "server")
        _wait_for_serial(server.port, rotated.cert.serial_number)
        assert _https_post(server.port, trusting, body()) == 200
        # A connection opened before the rotation keeps its certificate and still works.
        open_conn.request("GET", "/.well-known/authzen-configuration")
        assert open_conn.getresponse().status == 200
        assert open_conn.sock is not None
        der = open_conn.sock.getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(der).serial_number == first.cert.serial_number
        open_conn.close()


def test_https_trusts_a_client_ca_added_to_the_bundle(tmp_path: Path) -> None:
    ca, new_ca = CertificateAuthority("pdp-ca"), CertificateAuthority("new-clients-ca")
    cert, key = ca.issue("pdp", server=True).write(tmp_path, "server")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    client_cert, client_key = new_ca.issue("gateway").write(tmp_path, "client")
    tls = {"cert_file": cert, "key_file": key, "client_ca_file": tmp_path / "ca.pem"}
    config = make_config(TODO_POLICIES, http={"listen": "127.0.0.1:0"}, **{"server.tls": tls})
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    client.load_cert_chain(client_cert, client_key)
    with serving(config) as (server, recorder):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https_post(server.port, client, body())
        _replace(tmp_path / "ca.pem", ca.pem + new_ca.pem)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert _https_post(server.port, client, body()) == 200
                break
            except (ssl.SSLError, ConnectionError):
                assert time.monotonic() < deadline, "the added client CA was never trusted"
                time.sleep(0.1)
        assert recorder.records[-1][2].caller == "gateway"


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_https_keeps_the_old_pair_while_a_rotation_is_half_written(tmp_path: Path) -> None:
    ca = CertificateAuthority("pdp-ca")
    first, rotated = ca.issue("pdp", server=True), ca.issue("pdp", server=True)
    warnings = _Warnings()
    tls_log = logging.getLogger("pdp.identity.tls")
    tls_log.addHandler(warnings)
    try:
        with _https_with(tmp_path, ca, first) as server:
            _replace(tmp_path / "server.crt", rotated.cert_pem)  # the key not yet
            deadline = time.monotonic() + 10
            while not warnings.messages:
                assert time.monotonic() < deadline, "the half-written rotation was never seen"
                time.sleep(0.1)
            assert "does not match" in warnings.messages[0]
            assert _served_serial(server.port) == first.cert.serial_number
            _replace(tmp_path / "server.key", rotated.key_pem)
            _wait_for_serial(server.port, rotated.cert.serial_number)
    finally:
        tls_log.removeHandler(warnings)
    assert len(warnings.messages) == 1  # warned once, however many looks it took
    assert "PRIVATE KEY" not in warnings.messages[0]


def test_every_worker_serves_http_on_the_same_port() -> None:
    grpc_port, http_port = free_port(), free_port()
    args = ["--workers", "2", "--policies", str(TODO_POLICIES), "--listen", f"127.0.0.1:{grpc_port}",
            "--http", f"127.0.0.1:{http_port}", "--policy-watch", "false"]
    with PdpProcess(args) as proc:
        proc.msg("http listening", count=2)
        proc.msg("policy loaded", count=2)
        for _ in range(6):
            status, _h, answer = post_json(http_port, EVALUATION, body())
            assert (status, answer["decision"]) == (200, True)
        assert proc.stop() == 0


def test_an_http_port_in_use_stops_the_server() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--policies", str(TODO_POLICIES), "--listen", "127.0.0.1:0",
                "--http", f"127.0.0.1:{port}"]
        with PdpProcess(args) as proc:
            assert proc.proc.wait(30) == 1
            assert proc.msg("cannot listen")[0]["http"] == f"127.0.0.1:{port}"


def route(method: str, path: str, subject_: dict[str, Any]) -> dict[str, Any]:
    return {"subject": subject_, "action": {"name": method}, "resource": {"type": "route", "id": path}}


def test_a_subject_token_names_the_subject() -> None:
    config = make_config(GATEWAY_POLICIES, http={"listen": "127.0.0.1:0"})
    todos = {"type": "route", "id": "/todos"}
    with serving(config, with_identity=True) as (server, recorder):
        status, _h, answer = post_json(server.port, EVALUATION,
                                       route("POST", "/todos", {"token": token(RICK)}))
        assert (status, answer["decision"]) == (200, True)
        audited = recorder.records[-1][0]
        assert (audited.subject_type, audited.subject_id) == ("identity", RICK)
        expired = {"type": "identity", "id": RICK, "token": token(RICK, lifetime=-100)}
        status, _h, answer = post_json(server.port, EVALUATION, route("GET", "/todos", expired))
        assert (status, answer["decision"]) == (200, False)
        assert answer["context"]["reasons"][0]["rule"] == "pdp.identity.expired"
        assert recorder.records[-1][1].decision_id == answer["context"]["decision_id"]
        someone_else = route("GET", "/todos", {"type": "identity", "id": BETH, "token": token(RICK)})
        answer = post_json(server.port, EVALUATION, someone_else)[2]
        assert answer["context"]["reasons"][0]["rule"] == "pdp.identity.subject_mismatch"
        batch = {"subject": {"token": token(BETH)}, "action": {"name": "GET"},
                 "evaluations": [{"resource": todos},
                                 {"action": {"name": "POST"}, "resource": todos},
                                 {"subject": {"token": "garbage"}, "resource": todos}]}
        results = post_json(server.port, EVALUATIONS, batch)[2]["evaluations"]
        assert [r["decision"] for r in results] == [True, False, False]
        assert results[2]["context"]["reasons"][0]["rule"] == "pdp.identity.malformed"
        status, _h, answer = post_json(server.port, EVALUATION, route("GET", "/todos", {"token": 7}))
        assert (status, "subject.token" in answer["error"]) == (400, True)


def test_a_subject_token_without_identity_is_a_deny(api: tuple[int, Recorder]) -> None:
    status, _h, answer = post_json(api[0], EVALUATION, route("GET", "/todos", {"token": token(RICK)}))
    assert (status, answer["decision"]) == (200, False)
    assert answer["context"]["reasons"][0]["rule"] == "pdp.identity.unconfigured"
