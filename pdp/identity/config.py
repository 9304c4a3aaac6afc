"""Configuration of token verification: trusted issuers, their keys and claim mapping.

`IdentityConfig.from_mapping` reads the `[identity]` section of the service's
TOML configuration; relative paths are taken from the configuration file's folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
ASYMMETRIC_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
})
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")


class IdentityConfigError(ValueError):
    """A configuration that would make token verification unsafe or impossible."""


class TrustRule(StrEnum):
    """Which wins when a request carries a verified token and asserted roles/properties.

    token_only: the subject's type, id, roles and properties come from the token
        alone; asserted roles and properties are dropped.
    merge: roles are the union of the token's and the asserted ones; properties are
        the asserted ones overlaid by the token's claims (the token wins a conflict).
    In both, an asserted subject type or id that differs from the token's is a DENY.
    """

    TOKEN_ONLY = "token_only"
    MERGE = "merge"


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    issuer: str
    audiences: tuple[str, ...]
    jwks_file: Path | None = None
    jwks_url: str | None = None
    public_key_file: Path | None = None
    hmac_secret: bytes | None = field(default=None, repr=False)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: float = 30.0
    subject_claim: str = "sub"
    subject_type: str | None = "user"  # fixed type, or the fallback when the claim is absent
    subject_type_claim: str | None = None
    roles_claim: str | None = "roles"  # dotted path; a string value is split on spaces
    properties: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    required_claims: tuple[str, ...] = ("exp",)
    reload_interval: float = 1.0  # seconds between checks of a key file's mtime
    jwks_lifespan: float = 300.0  # seconds between background refetches (the last good set serves meanwhile)
    jwks_refresh_cooldown: float = 30.0  # minimum seconds between unknown-kid refetches
    jwks_timeout: float = 5.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        where = f"issuer {self.issuer!r}"
        if not self.issuer:
            raise IdentityConfigError("an issuer needs a non-empty `issuer`")
        if not self.audiences:
            raise IdentityConfigError(f"{where}: `audiences` must name at least one audience")
        sources = [self.jwks_file, self.jwks_url, self.public_key_file, self.hmac_secret]
        if sum(s is not None for s in sources) != 1:
            raise IdentityConfigError(
                f"{where}: configure exactly one of jwks_file, jwks_url, public_key_file, "
                "hs256_secret_file/hs256_secret_env"
            )
        if self.jwks_url is not None and urlsplit(self.jwks_url).scheme not in ("http", "https"):
            raise IdentityConfigError(f"{where}: jwks_url must be an http(s) URL")
        algs = set(self.algorithms)
        if not algs or not algs <= ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS:
            unknown = sorted(algs - ASYMMETRIC_ALGORITHMS - HMAC_ALGORITHMS) or ["(none)"]
            raise IdentityConfigError(f"{where}: algorithms not supported: {', '.join(unknown)}")
        if self.hmac_secret is None and algs & HMAC_ALGORITHMS:
            raise IdentityConfigError(f"{where}: HS* algorithms need an explicit secret")
        if self.hmac_secret is not None and not algs <= HMAC_ALGORITHMS:
            raise IdentityConfigError(f"{where}: a shared secret verifies HS* algorithms only")
        if self.hmac_secret is not None and len(self.hmac_secret) < 32:
            raise IdentityConfigError(f"{where}: an HS256 secret must be at least 32 bytes")
        if self.subject_type is None and self.subject_type_claim is None:
            raise IdentityConfigError(f"{where}: set subject_type or subject_type_claim")
        if self.subject_type is not None and not TYPE_NAME.match(self.subject_type):
            raise IdentityConfigError(f"{where}: {self.subject_type!r} is not a type name")
        if self.leeway < 0:
            raise IdentityConfigError(f"{where}: leeway must not be negative")
        for name in ("jwks_lifespan", "jwks_timeout"):
            if not getattr(self, name) > 0:
                raise IdentityConfigError(f"{where}: {name} must be positive")
        for name in ("reload_interval", "jwks_refresh_cooldown"):  # 0: look every time
            if not getattr(self, name) >= 0:
                raise IdentityConfigError(f"{where}: {name} must not be negative")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path) -> IssuerConfig:
        data = dict(data)
        secret = _secret(data.pop("hs256_secret_file", None), data.pop("hs256_secret_env", None),
                         base_dir)
        kwargs: dict[str, Any] = {"hmac_secret": secret}
        for name in ("jwks_file", "public_key_file"):
            if name in data:
                kwargs[name] = _path(data.pop(name), base_dir)
        for name in ("audiences", "algorithms", "required_claims"):
            if name in data:
                kwargs[name] = tuple(_strings(data.pop(name), name))
        if secret is not None and "algorithms" not in kwargs:
            kwargs["algorithms"] = ("HS256",)
        if "properties" in data:
            kwargs["properties"] = MappingProxyType(_properties(data.pop("properties")))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise IdentityConfigError(f"unknown issuer settings: {', '.join(unknown)}")
        return cls(**data, **kwargs)


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    issuers: tuple[IssuerConfig, ...] = ()
    trust: TrustRule = TrustRule.TOKEN_ONLY
    cache_size: int = 10_000  # verified tokens kept in process
    revocation_redis_url: str | None = None
    revocation_prefix: str = "pdp:revoked:"
    revocation_timeout: float = 0.25  # seconds; Redis must never stall a Check for long
    revocation_fail_open: bool = False  # Redis down: accept tokens (True) or DENY (False)
    admin_callers: frozenset[str] = frozenset()  # caller identities allowed to use admin RPCs
    subject_from_certificate: bool = False  # no subject and no token: service:<caller id>

    def __post_init__(self) -> None:
        names = [i.issuer for i in self.issuers]
        if len(names) != len(set(names)):
            raise IdentityConfigError("an issuer is configured twice")
        if self.cache_size < 0:
            raise IdentityConfigError("cache_size must not be negative")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path) -> IdentityConfig:
        data = dict(data)
        issuers = tuple(
            IssuerConfig.from_mapping(i, base_dir) for i in data.pop("issuers", ())
        )
        kwargs: dict[str, Any] = {"issuers": issuers}
        if "trust" in data:
            try:
                kwargs["trust"] = TrustRule(data.pop("trust"))
            except ValueError:
                raise IdentityConfigError("trust must be token_only or merge") from None
        if "admin_callers" in data:
            callers = _strings(data.pop("admin_callers"), "admin_callers")
            kwargs["admin_callers"] = frozenset(callers)
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise IdentityConfigError(f"unknown identity settings: {', '.join(unknown)}")
        return cls(**data, **kwargs)


def _path(value: Any, base_dir: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise IdentityConfigError(f"expected a file path, got {value!r}")
    return base_dir / value


def _strings(value: Any, name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise IdentityConfigError(f"{name} must be a list of strings")
    return list(value)


def _properties(value: Any) -> dict[str, str]:
    """A list of claim names, or a table of property name -> claim path."""
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise IdentityConfigError("properties must map names to claim paths")
        return dict(value)
    return {name: name for name in _strings(value, "properties")}


def _secret(file: Any, env: Any, base_dir: Path) -> bytes | None:
    """The HS256 secret comes from a file or the environment, never inline in config."""
    if file is not None and env is not None:
        raise IdentityConfigError("set hs256_secret_file or hs256_secret_env, not both")
    if file is not None:
        return _path(file, base_dir).read_bytes().strip()
    if env is not None:
        value = os.environ.get(str(env))
        if not value:
            raise IdentityConfigError(f"environment variable {env} is not set")
        return value.encode()
    return None
