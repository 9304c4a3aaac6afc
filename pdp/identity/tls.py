"""gRPC server credentials: TLS, or mTLS with client certificates signed by a
configured CA, re-read from their files when they change (rotation without restart).

`TlsWatch` keeps the files' last good content and re-reads them when their
stat changes, taking the new content only when the new certificate matches the
new key, so a rotation written in two steps (cert, then key) never serves a
broken pair. gRPC calls the fetcher at each new handshake; it looks at the
files at most once per `check_interval`. The HTTPS server polls its own watch
(pdp.http_server).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
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
class TlsMaterial:
    """The files' content, checked: the certificate matches the key, the CA bundle parses."""

    cert: bytes
    key: bytes = field(repr=False)  # never in a log line
    client_ca: bytes | None = None


def _read(files: TlsFiles) -> TlsMaterial:
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
    return TlsMaterial(cert, key, ca)


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


def _grpc_config(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert)], root_certificates=material.client_ca
    )


_Stamps = tuple[tuple[int, int, int], ...]


class TlsWatch:
    """The last valid content of the TLS files (`material`), re-read when they change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._stamps = self._stat()  # before reading: a write in between is seen next time
        self._warned: _Stamps | None = None
        self.material = _read(files)

    def _stat(self) -> _Stamps:
        stamps = []
        for path in self.files.paths():
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def changed(self) -> TlsMaterial | None:
        """The new material when the files changed since the last look and are valid, else None.

        Files that changed but do not make a valid pair (a rotation half written)
        leave `material` as it was; that is warned once per state of the files.
        """
        stamps = self._stat()
        if stamps == self._stamps:
            return None
        try:
            material = _read(self.files)
        except TlsConfigError as exc:
            if stamps != self._warned:
                self._warned = stamps
                log.warning("TLS files not reloaded: %s", exc)
            return None
        self._stamps, self._warned, self.material = stamps, None, material
        return material


class CertificateFetcher:
    """The certificate-config fetcher gRPC calls per handshake; None means unchanged."""

    def __init__(self, files: TlsFiles, check_interval: float = 1.0) -> None:
        self.files = files
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._watch = TlsWatch(files)
        self.initial = _grpc_config(self._watch.material)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            now = time.monotonic()
            if now < self._next_check:
                return None
            self._next_check = now + self.check_interval
            material = self._watch.changed()
            if material is None:
                return None
            log.info("TLS certificate reloaded from %s", self.files.cert)
            return _grpc_config(material)


def server_credentials(files: TlsFiles, check_interval: float = 1.0) -> grpc.ServerCredentials:
    """TLS (mTLS when `files.client_ca` is set) that follows the files as they rotate."""
    fetcher = CertificateFetcher(files, check_interval)
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial, fetcher, require_client_authentication=files.mtls
    )
