"""TLS and mTLS credentials over real gRPC on 127.0.0.1: who may connect, the caller's
identity from its certificate, certificate rotation without restart, the admin guard."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from identity_certs import CertificateAuthority, Issued

from pdp.identity.callers import AdminAccess, AdminGuard, caller_identity, is_loopback_peer
from pdp.identity.tls import TlsConfigError, TlsFiles, server_credentials

ADMIN_ID = "spiffe://prod.example/ns/ops/sa/admin"
APP_ID = "spiffe://prod.example/ns/orders/sa/api"
WHO = "/test.Who/Ask"
RELOAD = "/test.Admin/Reload"


@dataclass
class Pki:
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    server: Issued
    admin: Issued
    app: Issued
    cn_only: Issued
    expired: Issued
    stranger: Issued


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca, other = CertificateAuthority("test CA"), CertificateAuthority("other CA")
    return Pki(
        ca, other, ca.issue("pdp", server=True),
        ca.issue("ops-admin", spiffe_id=ADMIN_ID), ca.issue("orders", spiffe_id=APP_ID),
        ca.issue("backup-cron"), ca.issue("old", spiffe_id=ADMIN_ID, expired=True),
        other.issue("mallory", spiffe_id=ADMIN_ID),
    )


def _who(request: bytes, context: grpc.ServicerContext) -> bytes:
    return (caller_identity(context) or "-").encode()


def _reload(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"reloaded"


def start_server(credentials: grpc.ServerCredentials | None, access: AdminAccess) -> tuple[
    grpc.Server, int
]:
    handlers = grpc.method_handlers_generic_handler("test.Who", {
        "Ask": grpc.unary_unary_rpc_method_handler(_who),
    }), grpc.method_handlers_generic_handler("test.Admin", {
        "Reload": grpc.unary_unary_rpc_method_handler(_reload),
    })
    server = grpc.server(
        futures.ThreadPoolExecutor(4), handlers=handlers,
        interceptors=[AdminGuard(access, {RELOAD})],
    )
    address = "127.0.0.1:0"
    port = (server.add_secure_port(address, credentials) if credentials
            else server.add_insecure_port(address))
    server.start()
    return server, port


@pytest.fixture
def tls_files(tmp_path: Path, pki: Pki) -> TlsFiles:
    cert, key = pki.server.write(tmp_path, "server")
    ca = tmp_path / "clients-ca.pem"
    ca.write_bytes(pki.ca.pem)
    return TlsFiles(cert, key, ca)


@pytest.fixture
def mtls_port(tls_files: TlsFiles) -> Iterator[int]:
    access = AdminAccess(frozenset({ADMIN_ID}), mtls=True)
    server, port = start_server(server_credentials(tls_files, check_interval=0), access)
    yield port
    server.stop(None)


def call(port: int, method: str, ca: CertificateAuthority, client: Issued | None) -> bytes:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        return bytes(channel.unary_unary(method)(b"", timeout=10))


def refused(port: int, ca: CertificateAuthority, client: Issued | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call(port, WHO, ca, client)
    code: grpc.StatusCode = err.value.code()
    return code


def test_caller_identity_is_the_spiffe_id(mtls_port: int, pki: Pki) -> None:
    assert call(mtls_port, WHO, pki.ca, pki.app).decode() == APP_ID


def test_caller_identity_falls_back_to_the_cn(mtls_port: int, pki: Pki) -> None:
    assert call(mtls_port, WHO, pki.ca, pki.cn_only).decode() == "backup-cron"


def test_a_client_without_a_certificate_is_refused(mtls_port: int, pki: Pki) -> None:
    assert refused(mtls_port, pki.ca, None) == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(mtls_port: int, pki: Pki) -> None:
    assert refused(mtls_port, pki.ca, pki.stranger) == grpc.StatusCode.UNAVAILABLE


def test_an_expired_certificate_is_refused(mtls_port: int, pki: Pki) -> None:
    assert refused(mtls_port, pki.ca, pki.expired) == grpc.StatusCode.UNAVAILABLE


def test_only_listed_callers_may_call_admin_rpcs(mtls_port: int, pki: Pki) -> None:
    assert call(mtls_port, RELOAD, pki.ca, pki.admin) == b"reloaded"
    with pytest.raises(grpc.RpcError) as err:
        call(mtls_port, RELOAD, pki.ca, pki.app)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert call(mtls_port, WHO, pki.ca, pki.app).decode() == APP_ID  # other RPCs unaffected


def test_without_tls_admin_rpcs_are_for_loopback_only(pki: Pki) -> None:
    server, port = start_server(None, AdminAccess(frozenset({ADMIN_ID}), mtls=False))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert channel.unary_unary(RELOAD)(b"", timeout=10) == b"reloaded"
            assert channel.unary_unary(WHO)(b"", timeout=10) == b"-"
    finally:
        server.stop(None)


@pytest.mark.parametrize(("peer", "local"), [
    ("ipv4:127.0.0.1:5000", True), ("ipv4:127.8.9.10:1", True), ("ipv6:[::1]:5000", True),
    ("unix:/run/pdp.sock", True), ("ipv4:10.0.0.7:5000", False), ("ipv6:[2001:db8::1]:1", False),
    ("ipv6:[::ffff:10.0.0.7]:1", False), ("", False), ("garbage", False),
])
def test_loopback_peers(peer: str, local: bool) -> None:
    assert is_loopback_peer(peer) is local


def test_server_certificate_rotation_without_restart(
    mtls_port: int, tls_files: TlsFiles, pki: Pki, tmp_path: Path
) -> None:
    assert call(mtls_port, WHO, pki.ca, pki.app).decode() == APP_ID
    new_ca = CertificateAuthority("rotated CA")
    rotated = new_ca.issue("pdp", server=True)
    # Write the key first: the fetcher must not serve the new key with the old cert.
    tls_files.key.write_bytes(rotated.key_pem)
    tls_files.cert.write_bytes(rotated.cert_pem)
    deadline = time.monotonic() + 20
    while True:
        try:
            assert call(mtls_port, WHO, new_ca, pki.app).decode() == APP_ID
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the rotated server certificate was never served"
            time.sleep(0.2)
    assert refused(mtls_port, pki.ca, pki.app) == grpc.StatusCode.UNAVAILABLE  # old trust gone


def test_a_mismatched_pair_is_refused_at_start(tmp_path: Path, pki: Pki) -> None:
    cert, _ = pki.server.write(tmp_path, "server")
    _, other_key = pki.app.write(tmp_path, "app")
    with pytest.raises(TlsConfigError, match="does not match"):
        server_credentials(TlsFiles(cert, other_key))
