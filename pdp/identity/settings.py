"""The `[identity]` section of the service configuration (pdp.config reads it like
any other section: file, `PDP_IDENTITY_*` environment, `--identity-*` flags).

Issuers are TOML tables (`[[identity.issuers]]`); their keys are those of
`IssuerConfig` (see the README's Identity section).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _setting(default: Any, help: str) -> Any:
    # pdp.config.setting, without importing pdp.config (which imports this module).
    return field(default=default, metadata={"help": help, "flag": None})


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    issuers: tuple[dict[str, Any], ...] = _setting(
        (), "trusted token issuers: [[identity.issuers]] tables in the config file"
    )
    trust: str = _setting(
        "token_only",
        "a request with a verified token and asserted roles/properties: token_only or merge",
    )
    admin_callers: tuple[str, ...] = _setting(
        (), "caller identities (SPIFFE ID or CN) allowed to call admin RPCs under mTLS"
    )
    subject_from_certificate: bool = _setting(
        False, "a Check with neither subject nor token asks about service:<caller identity>"
    )
    revocation_redis_url: str | None = _setting(
        None, "Redis holding the jti revocation list written by `pdp revoke-token`"
    )
    revocation_timeout: float = _setting(
        0.25, "seconds to wait for the revocation list before giving up on it"
    )
    revocation_fail_open: bool = _setting(
        False, "accept tokens while the revocation list cannot be read (default: DENY)"
    )
    token_cache_size: int = _setting(10_000, "verified tokens kept in process until their exp")
