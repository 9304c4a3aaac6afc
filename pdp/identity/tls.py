"""gRPC server credentials: TLS, or mTLS with client certificates signed by a
configured CA, re-read from their files when they change (rotation without restart).

gRPC calls the fetcher at each new handshake; it looks at the files at most
once per `check_interval` and hands gRPC a new configuration only when they
changed and the new certificate matches the new key, so a rotation written in
two steps (cert, then key) never serves a broken pair.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)


class TlsConfigError(ValueError):
    """Certificate files that cannot serve TLS."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path  # PEM certificate chain, leaf first
    key: Path  # PEM private key of the leaf
    client_ca: Path | None = None  # PEM CA bundle: when set, clients must present a cert (mTLS)

    @property
    def mtls(self) -> bool:
        return self.client_ca is not None

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


@dataclass(frozen=True, slots=True)
class _Material:
    cert: bytes
    key: bytes
    client_ca: bytes | None


def _read(files: TlsFiles) -> _Material:
    try:
        cert, key = files.cert.read_bytes(), files.key.read_bytes()
        ca = files.client_ca.read_bytes() if files.client_ca else None
    except OSError as exc:
        raise TlsConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    _check_pair(cert, key)
    if ca is not None:
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise TlsConfigError(f"{files.client_ca}: no PEM certificate") from None
    return _Material(cert, key, ca)


def _check_pair(cert_pem: bytes, key_pem: bytes) -> None:
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsConfigError(f"unreadable certificate or key: {exc}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise TlsConfigError("the certificate does not match the private key")


def _grpc_config(material: _Material) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert)], root_certificates=material.client_ca
    )


class CertificateFetcher:
    """The certificate-config fetcher gRPC calls per handshake; None means unchanged."""

    def __init__(self, files: TlsFiles, check_interval: float = 1.0) -> None:
        self.files = files
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._stamps = self._stat()
        self.initial = _grpc_config(_read(files))

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self.files.paths():
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            now = time.monotonic()
            if now < self._next_check:
                return None
            self._next_check = now + self.check_interval
            stamps = self._stat()
            if stamps == self._stamps:
                return None
            try:
                material = _read(self.files)
            except TlsConfigError as exc:  # mid-rotation: keep serving the old pair
                log.warning("TLS files not reloaded: %s", exc)
                return None
            self._stamps = stamps
            log.info("TLS certificate reloaded from %s", self.files.cert)
            return _grpc_config(material)


def server_credentials(files: TlsFiles, check_interval: float = 1.0) -> grpc.ServerCredentials:
    """TLS (mTLS when `files.client_ca` is set) that follows the files as they rotate."""
    fetcher = CertificateFetcher(files, check_interval)
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial, fetcher, require_client_authentication=files.mtls
    )
