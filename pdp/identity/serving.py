"""Identity for the gRPC server: the token resolver, TLS credentials and the admin guard,
built from the service configuration."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from pdp.identity.callers import AdminAccess, AdminGuard
from pdp.identity.config import IdentityConfig
from pdp.identity.resolver import IdentityResolver
from pdp.identity.settings import IdentitySettings
from pdp.identity.tls import TlsFiles, server_credentials

__all__ = ["admin_guard", "build_resolver", "identity_config", "server_credentials", "tls_files"]


def identity_config(settings: IdentitySettings, base_dir: Path | None = None) -> IdentityConfig:
    """Relative key paths are taken from `base_dir` (the working directory by default)."""
    return IdentityConfig.from_mapping(
        {
            "issuers": [dict(i) for i in settings.issuers],
            "trust": settings.trust,
            "admin_callers": list(settings.admin_callers),
            "subject_from_certificate": settings.subject_from_certificate,
            "revocation_redis_url": settings.revocation_redis_url,
            "revocation_timeout": settings.revocation_timeout,
            "revocation_fail_open": settings.revocation_fail_open,
            "cache_size": settings.token_cache_size,
        },
        base_dir or Path.cwd(),
    )


def build_resolver(settings: IdentitySettings) -> IdentityResolver | None:
    """None when nothing is configured: a request with a token is then refused."""
    if not settings.issuers and not settings.subject_from_certificate:
        return None
    return IdentityResolver(identity_config(settings))


def tls_files(tls: Any) -> TlsFiles | None:
    """From pdp.config's TlsConfig (cert_file, key_file, client_ca_file)."""
    if not (tls.cert_file and tls.key_file):
        return None
    ca = Path(tls.client_ca_file) if tls.client_ca_file else None
    return TlsFiles(Path(tls.cert_file), Path(tls.key_file), ca)


def admin_guard(
    settings: IdentitySettings, files: TlsFiles | None, methods: Collection[str]
) -> AdminGuard:
    mtls = files is not None and files.mtls
    return AdminGuard(AdminAccess(frozenset(settings.admin_callers), mtls), methods)
