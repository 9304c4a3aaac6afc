"""Where an issuer's verification keys come from, with rotation without restart.

A JWKS file is re-read when its mtime changes (checked at most once per
`reload_interval`); a JWKS URL is fetched by pyjwt's PyJWKClient, cached for
`jwks_lifespan` and refetched on an unknown `kid` no more often than the
cooldown. Several keys by `kid` are valid at once; a key removed from the set
stops verifying at the next check. Symmetric (`oct`) keys in a JWKS are ignored:
a shared secret is only ever taken from explicit configuration.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Protocol, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWK, PyJWKClient, PyJWKSet
from jwt.exceptions import PyJWKClientError, PyJWTError

from pdp.identity.config import IdentityConfigError, IssuerConfig

log = logging.getLogger(__name__)

PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
Key: TypeAlias = PyJWK | PublicKey | bytes


class KeySource(Protocol):
    def find(self, kid: str | None) -> Key | None:
        """The key for `kid` now (may re-read or refetch the set), or None."""

    def knows(self, kid: str) -> bool:
        """Whether `kid` is in the set already loaded (never fetches)."""


class _WatchedFile:
    """Tells when a file changed, looking at it at most once per interval."""

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self._next_check = 0.0
        self._stamp: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True


def _signing_keys(data: str) -> dict[str | None, PyJWK]:
    keys: dict[str | None, PyJWK] = {}
    for key in PyJWKSet.from_json(data).keys:
        if key.key_type != "oct" and key.public_key_use in ("sig", None):
            keys[key.key_id] = key
    return keys


class JwksFileSource:
    def __init__(self, path: Path, reload_interval: float) -> None:
        self._file = _WatchedFile(path, reload_interval)
        self._lock = threading.Lock()
        self._keys: dict[str | None, PyJWK] = {}
        if not self._reload():
            raise IdentityConfigError(f"cannot read a JWKS from {path}")

    def _reload(self) -> bool:
        with self._lock:
            if not self._file.changed():
                return False
            try:
                self._keys = _signing_keys(self._file.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, PyJWTError) as exc:
                # A half-written file must not wipe the keys: keep serving the old set.
                log.warning("JWKS file %s not reloaded: %s", self._file.path, exc)
                return False
            log.info("JWKS file %s loaded: %d keys", self._file.path, len(self._keys))
            return True

    def find(self, kid: str | None) -> Key | None:
        self._reload()
        keys = self._keys
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def knows(self, kid: str) -> bool:
        return kid in self._keys


class JwksUrlSource:
    def __init__(self, url: str, lifespan: float, cooldown: float, timeout: float) -> None:
        try:
            self._client = PyJWKClient(
                url, cache_keys=False, lifespan=lifespan, timeout=timeout,
                cooldown_duration=cooldown,
            )
        except PyJWKClientError as exc:
            raise IdentityConfigError(str(exc)) from None
        self._url = url

    def find(self, kid: str | None) -> Key | None:
        if kid is None:
            return None
        try:
            key = self._client.get_signing_key(kid)
        except (PyJWTError, ValueError, OSError) as exc:  # ValueError: a body that is not JSON
            log.warning("JWKS %s has no key for this kid: %s", self._url, type(exc).__name__)
            return None
        return None if key.key_type == "oct" else key

    def knows(self, kid: str) -> bool:
        cache = self._client.jwk_set_cache
        cached = cache.get() if cache is not None else None
        return isinstance(cached, PyJWKSet) and any(k.key_id == kid for k in cached.keys)


# Which raw key type serves which algorithm family (PyJWK keys carry their own).
KEY_TYPES: dict[str, tuple[type, ...]] = {
    "RS": (rsa.RSAPublicKey,),
    "PS": (rsa.RSAPublicKey,),
    "ES": (ec.EllipticCurvePublicKey,),
    "Ed": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
    "HS": (bytes,),
}


def fits(key: Key, alg: str) -> bool:
    """Whether `key` can verify `alg` at all: an RSA key never checks an HS256 MAC."""
    if isinstance(key, PyJWK):
        return key.algorithm_name == alg
    return isinstance(key, KEY_TYPES.get(alg[:2], ()))


def _load_public_key(data: bytes) -> PublicKey:
    key: object = (
        x509.load_pem_x509_certificate(data).public_key()
        if b"BEGIN CERTIFICATE" in data
        else serialization.load_pem_public_key(data)
    )
    if not isinstance(key, PublicKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


class PemKeySource:
    """One public key (or certificate) in a PEM file; any `kid` selects it."""

    def __init__(self, path: Path, reload_interval: float) -> None:
        self._file = _WatchedFile(path, reload_interval)
        self._lock = threading.Lock()
        self._file.changed()
        try:
            self._key = _load_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise IdentityConfigError(f"cannot read a public key from {path}: {exc}") from None

    def find(self, kid: str | None) -> Key | None:
        with self._lock:
            if self._file.changed():
                try:
                    self._key = _load_public_key(self._file.path.read_bytes())
                except (OSError, ValueError) as exc:
                    log.warning("public key %s not reloaded: %s", self._file.path, exc)
        return self._key

    def knows(self, kid: str) -> bool:
        return False


class SecretSource:
    """An explicitly configured HS* shared secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def find(self, kid: str | None) -> Key | None:
        return self._secret

    def knows(self, kid: str) -> bool:
        return False


def key_source(issuer: IssuerConfig) -> KeySource:
    if issuer.jwks_file is not None:
        return JwksFileSource(issuer.jwks_file, issuer.reload_interval)
    if issuer.jwks_url is not None:
        return JwksUrlSource(
            issuer.jwks_url, issuer.jwks_lifespan, issuer.jwks_refresh_cooldown,
            issuer.jwks_timeout,
        )
    if issuer.public_key_file is not None:
        return PemKeySource(issuer.public_key_file, issuer.reload_interval)
    assert issuer.hmac_secret is not None  # IssuerConfig.validate guarantees one source
    return SecretSource(issuer.hmac_secret)
