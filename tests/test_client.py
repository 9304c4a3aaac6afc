"""pdp.client against the real server: sync and asyncio, deadlines, retries, TLS and mTLS."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_support import make_config, running_server, write_policies

from pdp.client import AsyncPdpClient, PdpClient, TlsOptions, _service_config, make_request
from pdp.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = write_policies(tmp_path_factory.mktemp("policies"))
    with running_server(make_config(folder)) as running:
        yield running


def test_sync_check_and_batch(server: Server) -> None:
    with PdpClient(f"127.0.0.1:{server.port}") as client:
        allowed = client.check("user:alice", "write", "document:drafts/1", roles=["writer"],
                               resource_properties={"owner": "alice"})
        assert allowed.allowed and allowed.reasons[0].rule == "writer-own-drafts"
        replies = client.batch_check([
            make_request("user:alice", "read", "document:a"),
            make_request("user:alice", "delete", "document:locked/a"),
        ])
        assert [r.allowed for r in replies] == [True, False]
        assert client.policy_info().rules == 4


def test_async_check_and_batch(server: Server) -> None:
    async def main() -> tuple[bool, list[bool], int]:
        async with AsyncPdpClient(f"127.0.0.1:{server.port}") as client:
            one = await client.check("user:alice", "read", "document:a")
            many = await asyncio.gather(*(
                client.check("user:alice", "list", f"document:{i}") for i in range(10)))
            batch = await client.batch_check([make_request("user:a", "write", "document:a")])
            info = await client.policy_info()
            return one.allowed, [r.allowed for r in [*many, *batch]], info.rules

    allowed, others, rules = asyncio.run(main())
    assert allowed and others == [True] * 10 + [False] and rules == 4


def test_deadline_exceeded_when_the_server_does_not_answer() -> None:
    with socket.socket() as silent:  # accepts connections, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        with PdpClient(target, timeout=0.3) as client, pytest.raises(grpc.RpcError) as err:
            client.check("user:alice", "read", "document:a")
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_no_server_is_unavailable_after_retries() -> None:
    with PdpClient(f"127.0.0.1:{free_port()}", timeout=5, attempts=3) as client, \
            pytest.raises(grpc.RpcError) as err:
        client.check("user:alice", "read", "document:a")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_only_idempotent_calls_retry_and_only_on_unavailable() -> None:
    [method] = json.loads(_service_config(3))["methodConfig"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert {"service": "pdp.v1.AdminService", "method": "Reload"} not in method["name"]
    assert {"service": "pdp.v1.DecisionService"} in method["name"]
    assert "retryPolicy" not in json.loads(_service_config(1))["methodConfig"][0]


def test_make_request_needs_type_and_id() -> None:
    with pytest.raises(ValueError, match="subject must be TYPE:ID"):
        make_request("alice", "read", "document:a")


# ---- TLS ----

def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


Issuer = tuple[x509.Name, ec.EllipticCurvePrivateKey]


def _cert(name: str, key: ec.EllipticCurvePrivateKey, issuer: Issuer | None,
          san: x509.GeneralName | None = None, ca: bool = False) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(path.with_suffix(".crt")), str(path.with_suffix(".key"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("test-ca", ca_key, None, ca=True)
    server_key, client_key = _key(), _key()
    server_cert = _cert("pdp", server_key, (ca.subject, ca_key), x509.DNSName("pdp.test"))
    client_cert = _cert("billing", client_key, (ca.subject, ca_key),
                        x509.UniformResourceIdentifier("spiffe://test/ns/billing"))
    return {
        "ca": _write(folder / "ca", ca, ca_key),
        "server": _write(folder / "server", server_cert, server_key),
        "client": _write(folder / "client", client_cert, client_key),
    }


def test_tls_and_mtls(tmp_path: Path, pki: dict[str, tuple[str, str]]) -> None:
    folder = write_policies(tmp_path / "p")
    cert, key = pki["server"]
    tls = {"cert_file": cert, "key_file": key, "client_ca_file": pki["ca"][0]}
    with running_server(make_config(folder, **{"server.tls": tls})) as server:
        target = f"127.0.0.1:{server.port}"
        client_cert, client_key = pki["client"]
        mtls = TlsOptions(ca_file=pki["ca"][0], cert_file=client_cert, key_file=client_key,
                          server_name="pdp.test")
        with PdpClient(target, tls=mtls) as client:
            assert client.check("user:alice", "read", "document:a").allowed
        no_client_cert = TlsOptions(ca_file=pki["ca"][0], server_name="pdp.test")
        with PdpClient(target, tls=no_client_cert, attempts=1) as client, \
                pytest.raises(grpc.RpcError) as err:
            client.check("user:alice", "read", "document:a")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with PdpClient(target, attempts=1) as plaintext, pytest.raises(grpc.RpcError):
            plaintext.check("user:alice", "read", "document:a")
