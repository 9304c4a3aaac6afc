"""Identity in the running server, over real gRPC on 127.0.0.1 with mTLS: bearer tokens
in Check, refused client certificates, the caller's identity, who may administer,
key and certificate rotation with the server running."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_support import POLICY, running_server, write_policies
from identity_certs import CertificateAuthority, Issued
from identity_keys import AUDIENCE, ISSUER, SigningKey, claims, ec_key, rsa_key, write_jwks

from pdp import config as settings
from pdp.client import PdpClient, TlsOptions, make_request
from pdp.identity import IdentityConfigError
from pdp.server import Server, build_server
from pdp.v1 import decision_pb2

ADMIN_ID = "spiffe://prod.example/ns/ops/sa/admin"
APP_ID = "spiffe://prod.example/ns/orders/sa/api"
SERVICE_POLICY = f'allow read on report:** when subject.type == "service" as service-reads\n' \
    f'grant writer to service:{APP_ID}\n'


@dataclass
class Setup:
    folder: Path
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    jwks: Path
    key: SigningKey
    server: Server

    def client(self, who: Issued | None, ca: CertificateAuthority | None = None) -> PdpClient:
        files = {}
        if who is not None:
            cert, key = who.write(self.folder, f"client-{id(who)}")
            files = {"cert_file": str(cert), "key_file": str(key)}
        ca_file = self.folder / f"ca-{id(ca or self.ca)}.pem"
        ca_file.write_bytes((ca or self.ca).pem)
        tls = TlsOptions(ca_file=str(ca_file), server_name="localhost", **files)
        return PdpClient(f"127.0.0.1:{self.server.port}", tls=tls, attempts=1, timeout=10)


@pytest.fixture(scope="module")
def pki() -> dict[str, object]:
    ca, other = CertificateAuthority("test CA"), CertificateAuthority("other CA")
    return {
        "ca": ca, "other": other, "server": ca.issue("pdp", server=True),
        "admin": ca.issue("ops-admin", spiffe_id=ADMIN_ID),
        "app": ca.issue("orders", spiffe_id=APP_ID),
        "expired": ca.issue("orders", spiffe_id=ADMIN_ID, expired=True),
        "stranger": other.issue("orders", spiffe_id=ADMIN_ID),
    }


def write_config(folder: Path, pki: dict[str, object], jwks: Path, extra: str = "") -> Path:
    server = pki["server"]
    assert isinstance(server, Issued)
    cert, key = server.write(folder, "server")
    ca = pki["ca"]
    assert isinstance(ca, CertificateAuthority)
    (folder / "clients-ca.pem").write_bytes(ca.pem)
    path = folder / "pdp.toml"
    path.write_text(f"""
[server]
listen = "127.0.0.1:0"
grace_seconds = 1

[server.tls]
cert_file = "{cert}"
key_file = "{key}"
client_ca_file = "{folder / 'clients-ca.pem'}"

[policy]
dir = "{folder / 'policies'}"
watch = false

[identity]
admin_callers = ["{ADMIN_ID}"]
{extra}

[[identity.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_file = "{jwks}"
roles_claim = "realm_access.roles"
properties = ["email"]
""")
    return path


@pytest.fixture
def setup(tmp_path: Path, pki: dict[str, object]) -> Iterator[Setup]:
    write_policies(tmp_path / "policies", {"main.policy": POLICY, "svc.policy": SERVICE_POLICY})
    key = rsa_key("k1")
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, key)
    config = settings.load(write_config(tmp_path, pki, jwks, "subject_from_certificate = true"))
    ca, other = pki["ca"], pki["other"]
    assert isinstance(ca, CertificateAuthority) and isinstance(other, CertificateAuthority)
    with running_server(config) as server:
        yield Setup(tmp_path, ca, other, jwks, key, server)


def app(pki: dict[str, object], name: str = "app") -> Issued:
    issued = pki[name]
    assert isinstance(issued, Issued)
    return issued


def token_request(token: str, action: str = "read", resource: str = "document:a",
                  **kw: object) -> decision_pb2.CheckRequest:
    req = make_request(":", action, resource, **kw)  # no asserted subject: the token's
    req.subject.token = token
    return req


def test_a_token_is_the_subject(setup: Setup, pki: dict[str, object]) -> None:
    token = setup.key.sign(claims(sub="alice", realm_access={"roles": ["writer"]}))
    with setup.client(app(pki)) as client:
        read = client.check_request(token_request(token))
        own = client.check_request(token_request(
            token, "write", "document:drafts/1", resource_properties={"owner": "alice"}))
        asserted = client.check("user:alice", "approve", "invoice:1", token=token,
                                roles=["approver"], resource_properties={"amount": 5})
    assert read.allowed and [r.rule for r in read.reasons] == ["reader-read"]
    assert own.allowed and "writer" in own.roles
    assert not asserted.allowed  # token_only: roles asserted beside the token are ignored


def test_a_refused_token_is_a_deny_with_the_reason(setup: Setup, pki: dict[str, object]) -> None:
    now = int(time.time())
    expired = setup.key.sign(claims(iat=now - 7200, exp=now - 3600))
    with setup.client(app(pki)) as client:
        answers = {
            "expired": client.check_request(token_request(expired)),
            "unknown_key": client.check_request(token_request(rsa_key("k9").sign(claims()))),
            "malformed": client.check_request(token_request("not-a-token")),
            "subject_mismatch": client.check(
                "user:bob", "read", "document:a", token=setup.key.sign(claims(sub="alice"))),
        }
    for reason, answer in answers.items():
        assert answer.decision == decision_pb2.DECISION_DENY, reason
        assert [r.rule for r in answer.reasons] == [f"pdp.identity.{reason}"]
        assert answer.policy_version and answer.decision_id


def test_clients_without_a_good_certificate_are_refused(
    setup: Setup, pki: dict[str, object]
) -> None:
    token = setup.key.sign(claims())
    for who in (None, app(pki, "stranger"), app(pki, "expired")):
        with setup.client(who) as client, pytest.raises(grpc.RpcError) as err:
            client.check_request(token_request(token))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_only_admin_callers_may_administer(setup: Setup, pki: dict[str, object]) -> None:
    with setup.client(app(pki, "admin")) as admin:
        assert admin.reload().ok
        assert admin.policy_info().version
    with setup.client(app(pki)) as other:
        for call in (other.reload, other.policy_info):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert other.check_request(token_request(setup.key.sign(claims()))).allowed


def test_the_subject_from_the_client_certificate(setup: Setup, pki: dict[str, object]) -> None:
    req = make_request(":", "read", "report:q3")
    with setup.client(app(pki)) as client:
        answer = client.check_request(req)
    assert answer.allowed and [r.rule for r in answer.reasons] == ["service-reads"]
    assert "writer" in answer.roles  # granted to service:<its SPIFFE ID>


def test_jwks_rotation_with_the_server_running(setup: Setup, pki: dict[str, object]) -> None:
    new_key = ec_key("k2")
    old, new = setup.key.sign(claims()), new_key.sign(claims())
    with setup.client(app(pki)) as client:
        assert client.check_request(token_request(old)).allowed
        assert client.check_request(token_request(new)).reasons[0].rule == \
            "pdp.identity.unknown_key"
        write_jwks(setup.jwks, new_key)  # k2 published, k1 retired
        deadline = time.monotonic() + 15
        while not client.check_request(token_request(new)).allowed:
            assert time.monotonic() < deadline, "the rotated JWKS was never read"
            time.sleep(0.2)
        assert client.check_request(token_request(old)).reasons[0].rule == \
            "pdp.identity.unknown_key"


def test_server_certificate_rotation_with_the_server_running(
    setup: Setup, pki: dict[str, object]
) -> None:
    new_ca = CertificateAuthority("rotated CA")
    rotated = new_ca.issue("pdp", server=True)
    (setup.folder / "server.key").write_bytes(rotated.key_pem)
    (setup.folder / "server.crt").write_bytes(rotated.cert_pem)
    token = setup.key.sign(claims())
    deadline = time.monotonic() + 20
    while True:
        try:
            with setup.client(app(pki), ca=new_ca) as client:
                assert client.check_request(token_request(token)).allowed
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the rotated certificate was never served"
            time.sleep(0.2)


def test_without_tls_admin_rpcs_are_for_loopback_callers(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "policies")
    config = settings.load(cli={
        ("server", "listen"): "127.0.0.1:0", ("policy", "dir"): str(folder),
        ("policy", "watch"): "false", ("identity", "admin_callers"): ADMIN_ID,
    })
    with running_server(config) as server, PdpClient(f"127.0.0.1:{server.port}") as client:
        assert client.reload().ok  # a loopback peer; no certificate to check
        denied = client.check_request(token_request("a.b.c"))
        assert denied.reasons[0].rule.startswith("pdp.identity.")


def test_the_audit_names_the_caller_and_never_the_token(
    tmp_path: Path, pki: dict[str, object]
) -> None:
    write_policies(tmp_path / "policies")
    key = rsa_key("k1")
    write_jwks(tmp_path / "jwks.json", key)
    audit = tmp_path / "audit.jsonl"
    config_file = write_config(tmp_path, pki, tmp_path / "jwks.json")
    config_file.write_text(config_file.read_text() + f'\n[audit]\nfile = "{audit}"\n')
    good, expired = key.sign(claims(sub="alice")), key.sign(claims(exp=int(time.time()) - 3600))
    ca = pki["ca"]
    assert isinstance(ca, CertificateAuthority)
    with running_server(settings.load(config_file)) as server:
        setup = Setup(tmp_path, ca, ca, tmp_path / "jwks.json", key, server)
        with setup.client(app(pki)) as client:
            assert client.check_request(token_request(good)).allowed
            assert not client.check_request(token_request(expired)).allowed
    text = audit.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["caller"] for r in records] == [APP_ID, APP_ID]
    assert records[0]["subject"]["id"] == "alice"
    for token in (good, expired):
        for part in token.split(".")[1:]:
            assert part not in text


def test_an_unsafe_identity_configuration_stops_the_server(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "policies")
    config_file = tmp_path / "pdp.toml"
    config_file.write_text(f"""
[server]
listen = "127.0.0.1:0"
[policy]
dir = "{folder}"
[[identity.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_file = "{tmp_path / 'jwks.json'}"
algorithms = ["RS256", "HS256"]
""")
    with pytest.raises(IdentityConfigError, match="explicit secret"):
        build_server(settings.load(config_file))
